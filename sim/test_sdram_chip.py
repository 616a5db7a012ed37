"""cocotb bench: the Verilog SDR SDRAM chip model (hw/mmfree_hw/sdram/mt48lc16m16a2.v, the
ULX3S's MT48LC16M16A2) against a scripted controller.

The top is the model's ``mt48lc16m16a2_split`` (the chip as an Amaranth design sees it:
this bench drives ``dq_o`` / ``dq_oe`` and reads ``dq_i``) with a small ``ROWS``; the
model's state is read hierarchically (``dut.chip.rules`` ...). :class:`TB` plays the
controller: it sets the pins right after a rising edge, so the next edge registers the
command, and numbers edges as the model does (cycle 0 is the edge after the model's
power-cycle edge: :meth:`TB.boot`). :class:`Scoreboard` checks read data 4-state: a beat
passes only if it is resolvable (no X, Z) and equal, sampled in the ReadOnly phase just
before the edge it is due at (what a controller register clocked by that edge captures).

MMF_PARAMS: ``hdl`` (the Verilog parameters the runner built the top with: the bench
derives the cycle counts from them itself, as ceil(t / TCK_PS)), ``seed``, ``ops``.

Tests:

- ``legal_traffic``: random writes with random byte masks, random reads, row misses in all
  banks, refreshes every tREFI; BL 1, 2, 4 and 8 (sequential and interleaved), CL 2 and 3
  where the clock allows; no violation, every read beat checked, the model's counters
  (reads, writes, activates, refreshes, data_cycles, cycles) checked; a streaming read at
  full bus efficiency. ``bursts``: Micron's burst orders, single-location write bursts
  (M9), read bursts cut by BURST TERMINATE, a READ and a PRECHARGE, a write burst cut by a
  READ.
- ``rule_*``: one timing rule each, broken by one cycle (exactly its bit set, violations
  >= 1) and then met exactly (no violation), each on a freshly power-cycled model.
- ``init_orders``, ``init_violations``, ``powerup``, ``powerup_default``, ``banks``,
  ``modes``, ``refresh_starvation``, ``row_range``, ``x_input``, ``contention``,
  ``scoreboard``: see their docstrings.
- ``fatal_stops``: for a FATAL=1 build under Verilator; it fails by design (the model's
  $fatal ends the simulation), the pytest test checks how.

The model is power-cycled through its ``power_cycle`` test hook (:meth:`TB.boot`), and its
``rules`` / ``violations`` are zeroed between two edges after each check
(:meth:`TB.expect`), so that each check sees exactly what the commands since the last one
flagged.
"""

from __future__ import annotations

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge
from cocotb.types import LogicArray
from cocotb.utils import get_sim_time
from tb import params, report

# bit numbers of the model's ``rules`` register (the R_* localparams of the Verilog)
RULES = {"TRP": 0, "TRCD": 1, "TRAS": 2, "TRAS_MAX": 3, "TRC": 4, "TRRD": 5, "TRFC": 6,
         "TWR": 7, "TDAL": 8, "TMRD": 9, "POWERUP": 10, "INIT_ORDER": 11, "BANK_CLOSED": 12,
         "BANK_OPEN": 13, "MODE": 14, "TCK": 15, "REFRESH": 16, "BUS": 17, "CKE": 18,
         "X_INPUT": 19, "ROW_RANGE": 20}

# the Verilog parameters' defaults
DEFAULTS = {"TCK_PS": 20000, "ROWS": 8192, "FATAL": 0, "POWERUP_PS": 100_000_000,
            "TREFI_PS": 7_812_500, "TRP_PS": 20_000, "TRCD_PS": 20_000, "TRAS_PS": 44_000,
            "TRAS_MAX_PS": 120_000_000, "TRC_PS": 66_000, "TRRD_PS": 15_000,
            "TRFC_PS": 66_000, "TWR_PS": 15_000, "TWR_AP_PS": 7_500, "TMRD_CK": 2,
            "TCK_CL2_PS": 10_000, "TCK_CL3_PS": 7_500}

# (RAS#, CAS#, WE#)
CODES = {"NOP": (1, 1, 1), "ACTIVE": (0, 1, 1), "READ": (1, 0, 1), "WRITE": (1, 0, 0),
         "BST": (1, 1, 0), "PRECHARGE": (0, 1, 0), "REFRESH": (0, 0, 1), "MRS": (0, 0, 0)}
A10 = 1 << 10


def mask(*names: str) -> int:
    m = 0
    for n in names:
        m |= 1 << RULES[n]
    return m


def names(m: int) -> list[str]:
    return [n for n, b in RULES.items() if m >> b & 1]


def mode_word(cl: int, bl: int | str = 1, interleaved: bool = False,
              single_write: bool = False, op: int = 0) -> int:
    """A LOAD MODE REGISTER address word (Micron's mode register layout)."""
    return ({1: 0, 2: 1, 4: 2, 8: 3, "page": 7}[bl] | int(interleaved) << 3 | cl << 4
            | op << 7 | int(single_write) << 9)


def burst_columns(col: int, bl: int, interleaved: bool) -> list[int]:
    """Micron's burst order: within the ``bl``-aligned block, counting up with wrap
    (sequential) or XOR (interleaved)."""
    base, low = col & ~(bl - 1), col & (bl - 1)
    if interleaved:
        return [base | (low ^ i) for i in range(bl)]
    return [base | ((low + i) & (bl - 1)) for i in range(bl)]


def merge(old: int, new: int, dm: int) -> int:
    for lane in range(2):
        if not (dm >> lane) & 1:
            m = 0xFF << (8 * lane)
            old = (old & ~m) | (new & m)
    return old


class Cycles:
    """The model's cycle counts, computed here from the same parameters (ceil, >= 1)."""

    def __init__(self, hdl: dict):
        tck = hdl["TCK_PS"]

        def ck(ps: int) -> int:
            return max(1, -(-ps // tck))

        self.tck_ps = tck
        self.tRP, self.tRCD, self.tRAS = ck(hdl["TRP_PS"]), ck(hdl["TRCD_PS"]), ck(hdl["TRAS_PS"])
        self.tRAS_max = hdl["TRAS_MAX_PS"] // tck
        self.tRC, self.tRRD, self.tRFC = ck(hdl["TRC_PS"]), ck(hdl["TRRD_PS"]), ck(hdl["TRFC_PS"])
        self.tWR = ck(hdl["TWR_PS"])
        self.tWR_ap = 1 + ck(hdl["TWR_AP_PS"])
        self.tMRD = hdl["TMRD_CK"]
        self.powerup = ck(hdl["POWERUP_PS"])
        self.refi = hdl["TREFI_PS"] // tck
        self.refresh_gap = 9 * hdl["TREFI_PS"] // tck
        self.cls = [cl for cl in (2, 3)
                    if tck >= hdl["TCK_CL2_PS" if cl == 2 else "TCK_CL3_PS"]]


class Scoreboard:
    """4-state read checks: ``passed`` counts resolvable, equal beats; every other beat is a
    failure tagged ``x`` (unresolved, no Z), ``z`` (some bit Z) or ``mismatch``."""

    def __init__(self):
        self.passed = 0
        self.failures: list[tuple[str, str, str, int]] = []

    def check(self, what: str, got: LogicArray, want: int) -> bool:
        text = str(got)
        if not got.is_resolvable:
            kind = "z" if "Z" in text.upper() else "x"
        elif got.to_unsigned() != want:
            kind = "mismatch"
        else:
            self.passed += 1
            return True
        self.failures.append((what, kind, text, want))
        return False

    def kinds(self) -> list[str]:
        return [f[1] for f in self.failures]

    def take(self) -> list[tuple[str, str, str, int]]:
        f, self.failures = self.failures, []
        return f


class TB:
    """A minimal SDRAM controller on the split pins. Its coroutines are called right after
    a rising edge (as they return): :meth:`cmd` sets the pins and returns the number of the
    edge that registered the command (the model's cycle number); the pins go back to NOP."""

    def __init__(self, dut, **hdl_override):
        p = params()
        self.dut, self.chip = dut, dut.chip
        self.hdl = {**DEFAULTS, **p.get("hdl", {}), **hdl_override}
        self.ck = Cycles(self.hdl)
        self.period = self.hdl["TCK_PS"]            # ps
        self.rows = self.hdl["ROWS"]
        self.cl, self.bl, self.inter, self.single = 2, 1, False, False
        self.sb = Scoreboard()
        self.pending = 0
        self._t0: int | None = None
        dut.cke.value = 1
        dut.dq_o.value = 0
        dut.ba.value = 0
        dut.a.value = 0
        self._nop()
        cocotb.start_soon(Clock(dut.clk, self.period, unit="ps").start(start_high=False))

    # ------------------------------------------------------------ pins and edges
    def _nop(self):
        d = self.dut
        d.cs_n.value, d.ras_n.value, d.cas_n.value, d.we_n.value = 0, 1, 1, 1
        d.dq_oe.value = 0
        d.dm.value = 0

    def now(self) -> int:
        """The number of the last rising edge (the model's cycle number)."""
        return round((get_sim_time("ps") - self._t0) / self.period)

    async def boot(self):
        """Power-cycle the model: the next edge resets it, the one after is cycle 0. Returns
        just after the reset edge (now() == -1)."""
        self._nop()
        self.dut.cke.value = 1
        self.chip.power_cycle.value = 1
        await RisingEdge(self.dut.clk)
        self._t0 = get_sim_time("ps") + self.period
        self.cl, self.bl, self.inter, self.single = 2, 1, False, False
        assert self.now() == -1

    async def cmd(self, name: str, ba: int = 0, a: int = 0, data: int | None = None,
                  dm: int = 0) -> int:
        d = self.dut
        ras, cas, we = CODES[name]
        d.cs_n.value, d.ras_n.value, d.cas_n.value, d.we_n.value = 0, ras, cas, we
        d.ba.value, d.a.value = ba, a
        if data is not None:
            d.dq_o.value, d.dq_oe.value, d.dm.value = data, 1, dm
        await RisingEdge(d.clk)
        edge = self.now()
        self._nop()
        if name == "MRS":
            self._mode(a)
        return edge

    def _mode(self, a: int):
        if a & 7 <= 3 and (a >> 4) & 7 in (2, 3):
            self.bl, self.cl = 1 << (a & 7), (a >> 4) & 7
            self.inter, self.single = bool(a >> 3 & 1), bool(a >> 9 & 1)

    async def nop(self, n: int = 1):
        if n > 0:
            await ClockCycles(self.dut.clk, n)

    async def until(self, edge: int):
        """Return just after edge ``edge``."""
        assert edge >= self.now(), (edge, self.now())
        await self.nop(edge - self.now())

    async def at(self, edge: int, name: str, **kw) -> int:
        """Issue ``name`` so that edge ``edge`` registers it."""
        gap = edge - self.now()
        assert gap >= 1, (name, edge, self.now())
        await self.nop(gap - 1)
        got = await self.cmd(name, **kw)
        assert got == edge, (name, got, edge)
        return got

    async def after(self, gap: int, name: str, **kw) -> int:
        return await self.at(self.now() + gap, name, **kw)

    async def write_data(self, words: list[int], dms: list[int]):
        """The beats after a WRITE's first, one per edge (burst writes)."""
        d = self.dut
        for w, m in zip(words, dms, strict=True):
            d.dq_o.value, d.dq_oe.value, d.dm.value = w, 1, m
            await RisingEdge(d.clk)
        self._nop()

    async def write_burst(self, edge: int, ba: int, col: int, words: list[int],
                          dms: list[int] | None = None, ap: bool = False) -> int:
        dms = dms or [0] * len(words)
        e = await self.at(edge, "WRITE", ba=ba, a=col | (A10 if ap else 0), data=words[0],
                          dm=dms[0])
        await self.write_data(words[1:], dms[1:])
        return e

    # ------------------------------------------------------------ read data
    def expect_read(self, edge: int, want: int, what: str = "", cl: int | None = None):
        """Check the beat due ``cl`` edges after ``edge`` (the caller is just after ``edge``
        or earlier)."""
        self.pending += 1
        cocotb.start_soon(self._capture(edge + (cl or self.cl), want, what))

    async def _capture(self, due: int, want: int, what: str):
        assert due - 1 >= self.now(), (what, due, self.now())
        await self.nop(due - 1 - self.now())
        await ReadOnly()
        self.sb.check(f"{what} @{due}", self.dut.dq_i.value, want)
        self.pending -= 1

    async def drain(self):
        while self.pending:
            await RisingEdge(self.dut.clk)

    # ------------------------------------------------------------ the model's registers
    async def peek(self, *regs: str, clear: bool = False) -> list[int]:
        """The model's registers as of the last edge (read in its ReadOnly phase); returns
        just after the next edge (one edge on). ``clear``: zero the model's ``rules`` and
        ``violations`` between the two edges (at the falling edge), so that nothing the
        next edge flags is lost."""
        await ReadOnly()
        out = [getattr(self.chip, r).value for r in regs]
        if clear:
            await FallingEdge(self.dut.clk)
            self.chip.rules.value = 0
            self.chip.violations.value = 0
        await RisingEdge(self.dut.clk)
        vals = []
        for r, v in zip(regs, out, strict=True):
            if isinstance(v, int):          # a Verilog integer
                vals.append(v)
            else:
                assert v.is_resolvable, (r, str(v))
                vals.append(v.to_unsigned())
        return vals

    async def expect(self, *rules: str, clear: bool = True) -> int:
        """Exactly the rules ``rules`` flagged since the last check (one edge on; with
        ``clear``, the model's ``rules`` and ``violations`` are zeroed after, so the next
        check sees only what follows). Returns the violation count."""
        got, n = await self.peek("rules", "violations", clear=clear)
        assert got == mask(*rules), f"expected {list(rules)}, got {names(got)} (cycle {self.now()})"
        assert (n >= 1) if rules else (n == 0), (rules, n)
        return n


async def init(tb: TB, order: str = "refresh_first", cl: int | None = None, bl: int = 1,
               **mode) -> int:
    """Micron's init on a freshly booted model: PRECHARGE ALL at the end of the power-up
    wait, then 2 AUTO REFRESH and LOAD MODE in ``order`` (``refresh_first``, ``mode_first``
    or ``litedram``: LiteDRAM's PALL, LMR with M8 set, PALL, REF, REF, LMR), each at its
    earliest edge. Returns the first edge a command may follow (the caller is before it)."""
    ck = tb.ck
    cl = cl or (ck.cls[0] if ck.cls else 2)
    mr = mode_word(cl, bl, **mode)
    e = await tb.at(ck.powerup, "PRECHARGE", a=A10)
    if order == "refresh_first":
        e = await tb.at(e + ck.tRP, "REFRESH")
        e = await tb.at(e + ck.tRFC, "REFRESH")
        e = await tb.at(e + ck.tRFC, "MRS", a=mr)
        ready = e + ck.tMRD
    elif order == "mode_first":
        e = await tb.at(e + ck.tRP, "MRS", a=mr)
        e = await tb.at(e + ck.tMRD, "REFRESH")
        e = await tb.at(e + ck.tRFC, "REFRESH")
        ready = e + ck.tRFC
    else:
        e = await tb.at(e + ck.tRP, "MRS", a=mr | 1 << 8)
        e = await tb.at(e + ck.tMRD, "PRECHARGE", a=A10)
        e = await tb.at(e + ck.tRP, "REFRESH")
        e = await tb.at(e + ck.tRFC, "REFRESH")
        e = await tb.at(e + ck.tRFC, "MRS", a=mr)
        ready = e + ck.tMRD
    await tb.nop(ready - tb.now() - 1)
    return ready


# ------------------------------------------------------------------ a correct controller
class Scheduler:
    """Issues each command at the earliest edge the datasheet allows (plus random gaps),
    from its own record of what it issued; bursts are never cut."""

    def __init__(self, tb: TB, rng: random.Random, gap_prob: float = 0.2):
        self.tb, self.rng, self.gap_prob = tb, rng, gap_prob
        self.ck = tb.ck
        never = -10**9
        self.act, self.pre, self.wr = [never] * 4, [never] * 4, [never] * 4
        self.row: list[int | None] = [None] * 4
        self.next_cmd = tb.now() + 1     # bursts: no command until the burst is done
        self.last_act = never
        self.last_ref = tb.now()
        self.last_beat = never           # the last read beat's edge
        self.counts = {"reads": 0, "writes": 0, "activates": 0, "refreshes": 0, "beats": 0}

    async def issue(self, earliest: int, name: str, **kw) -> int:
        edge = max(earliest, self.next_cmd, self.tb.now() + 1, self.last_ref + self.ck.tRFC)
        if self.rng.random() < self.gap_prob:
            edge += self.rng.randint(1, 3)
        edge = await self.tb.at(edge, name, **kw)
        self.next_cmd = edge + 1
        return edge

    async def precharge(self, b: int):
        ck = self.ck
        e = await self.issue(max(self.act[b] + ck.tRAS, self.wr[b] + ck.tWR), "PRECHARGE", ba=b)
        self.pre[b], self.row[b] = e, None

    async def open(self, b: int, row: int):
        ck = self.ck
        if self.row[b] == row:
            return
        if self.row[b] is not None:
            await self.precharge(b)
        e = await self.issue(max(self.pre[b] + ck.tRP, self.act[b] + ck.tRC,
                                 self.last_act + ck.tRRD), "ACTIVE", ba=b, a=row)
        self.act[b], self.last_act, self.row[b] = e, e, row
        self.counts["activates"] += 1

    async def maybe_refresh(self, force: bool = False):
        if not force and self.tb.now() - self.last_ref < self.ck.refi - 8:
            return
        ck = self.ck
        opened = [b for b in range(4) if self.row[b] is not None]
        if opened:
            e = await self.issue(max(max(self.act[b] + ck.tRAS, self.wr[b] + ck.tWR)
                                     for b in opened), "PRECHARGE", a=A10)
            for b in opened:
                self.pre[b], self.row[b] = e, None
        e = await self.issue(max(p + ck.tRP for p in self.pre), "REFRESH")
        self.last_ref = e
        self.counts["refreshes"] += 1

    async def write(self, b: int, row: int, col: int, words: list[int], dms: list[int]) -> int:
        await self.maybe_refresh()
        await self.open(b, row)
        n = len(words)
        e = await self.issue(max(self.act[b] + self.ck.tRCD, self.last_beat + 1), "WRITE",
                             ba=b, a=col, data=words[0], dm=dms[0])
        await self.tb.write_data(words[1:], dms[1:])
        self.wr[b] = e + n - 1
        self.next_cmd = e + n
        self.counts["writes"] += 1
        self.counts["beats"] += n
        return e

    async def read(self, b: int, row: int, col: int, wants: list[int], what: str = "") -> int:
        await self.maybe_refresh()
        await self.open(b, row)
        e = await self.issue(self.act[b] + self.ck.tRCD, "READ", ba=b, a=col)
        for i, w in enumerate(wants):
            self.tb.expect_read(e + i, w, what)
        self.last_beat = e + self.tb.cl + len(wants) - 1
        self.next_cmd = e + len(wants)
        self.counts["reads"] += 1
        self.counts["beats"] += len(wants)
        return e

    # random data through the reference ``ref`` (the mode's BL and burst type)
    async def put(self, ref: dict, b: int, row: int, col: int, dms: list[int]):
        bl, inter = self.tb.bl, self.tb.inter
        words = [self.rng.getrandbits(16) for _ in range(bl)]
        for c, w, m in zip(burst_columns(col, bl, inter), words, dms, strict=True):
            ref[(b, row, c)] = merge(ref.get((b, row, c), 0), w, m)
        await self.write(b, row, col, words, dms)

    async def get(self, ref: dict, b: int, row: int, col: int):
        tb = self.tb
        wants = [ref[(b, row, c)] for c in burst_columns(col, tb.bl, tb.inter)]
        await self.read(b, row, col, wants, f"CL{tb.cl} BL{tb.bl} {(b, row, col)}")


TRAFFIC_MODES = [(1, False), (2, False), (4, False), (8, True), (4, True), (8, False)]


@cocotb.test()
async def legal_traffic(dut):
    """Random traffic with every CL the clock allows and BL 1 / 2 / 4 / 8 (sequential and
    interleaved): random words written in whole bursts, overwritten with random byte
    masks per beat, read back in random order, reads and writes interleaved, row misses in
    all banks, refreshes every tREFI; then a streaming read. No violation; every beat
    checked 4-state; the model's counters agree with what was issued."""
    p = params()
    tb = TB(dut)
    ck = tb.ck
    rng = random.Random(p.get("seed", 0))
    ops = p.get("ops", 300)
    checked = 0
    runs = [(cl, bl, inter) for cl in ck.cls for (bl, inter) in TRAFFIC_MODES]
    # all modes at CL 2 where it is legal, and a few at CL 3
    runs = [r for i, r in enumerate(runs) if r[0] == ck.cls[0] or i % 2 == 0]
    for cl, bl, inter in runs:
        await tb.boot()
        ready = await init(tb, cl=cl, bl=bl, interleaved=inter)
        await tb.until(ready - 1)
        sched = Scheduler(tb, rng)
        rows = {b: rng.sample(range(tb.rows - 4), 3) for b in range(4)}   # not the last 4
        blocks = set()
        while len(blocks) < 24:
            b = rng.randrange(4)
            blocks.add((b, rng.choice(rows[b]), rng.randrange(512 // bl) * bl))
        blocks = sorted(blocks)
        rng.shuffle(blocks)
        ref: dict[tuple[int, int, int], int] = {}
        assert (tb.cl, tb.bl, tb.inter) == (cl, bl, inter)
        for b, row, base in blocks:
            await sched.put(ref, b, row, base + rng.randrange(bl), [0] * bl)
        for _ in range(ops):
            b, row, base = rng.choice(blocks)
            col = base + rng.randrange(bl)
            if rng.random() < 0.4:
                await sched.put(ref, b, row, col, [rng.randrange(4) for _ in range(bl)])
            else:
                await sched.get(ref, b, row, col)
        # streaming: 32 back-to-back READs of one open row (BL beats each)
        b, row, base = blocks[0]
        await sched.maybe_refresh(force=True)
        await sched.open(b, row)
        sched.gap_prob = 0.0
        await tb.drain()
        _, dc0 = await tb.peek("cycles", "data_cycles")
        start = await sched.issue(sched.act[b] + ck.tRCD, "READ", ba=b, a=base)
        cols = burst_columns(base, bl, inter)
        for i, c in enumerate(cols):
            tb.expect_read(start + i, ref[(b, row, c)], "stream")
        for n in range(1, 32):
            e = await tb.at(start + n * bl, "READ", ba=b, a=base)
            for i, c in enumerate(cols):
                tb.expect_read(e + i, ref[(b, row, c)], "stream")
        sched.counts["reads"] += 32
        sched.counts["beats"] += 32 * bl
        await tb.until(start + cl + 32 * bl - 1)
        await tb.drain()
        cyc, dc1 = await tb.peek("cycles", "data_cycles")
        assert dc1 - dc0 == 32 * bl, (dc0, dc1)     # 100 % bus use over the stream
        # the model's counters
        await tb.nop(cl + bl)
        vals = await tb.peek("reads", "writes", "activates", "refreshes", "data_cycles",
                             "cycles", "violations", "rules", "warnings")
        got = dict(zip(["reads", "writes", "activates", "refreshes", "data_cycles",
                        "cycles", "violations", "rules", "warnings"], vals, strict=True))
        want = dict(sched.counts)
        want["refreshes"] += 2                    # init's
        assert got["rules"] == 0 and got["violations"] == 0, names(got["rules"])
        assert got["warnings"] == 0
        for key in ("reads", "writes", "activates", "refreshes"):
            assert got[key] == want[key], (key, got, want)
        assert got["data_cycles"] == want["beats"], (got, want)
        assert got["cycles"] == tb.now(), (got["cycles"], tb.now())
        failures = tb.sb.take()
        assert failures == [], failures[:5]
        checked += want["beats"] - want["writes"] * bl
        dut._log.info("CL %d BL %d%s: %s", cl, bl, "i" if inter else "s", got)
    report(dut, "sdram_chip", tb.sb.passed, f"legal traffic, tCK {tb.period} ps")
    assert tb.sb.passed == checked, (tb.sb.passed, checked)


@cocotb.test()
async def bursts(dut):
    """BL 2 / 4 / 8, sequential and interleaved: write bursts land in the columns of
    Micron's burst table, read bursts return them in that order (from another start
    column too); a single-location write burst (M9) writes one column; BURST TERMINATE,
    a second READ and a PRECHARGE cut a read burst (the beats cut are Z: not a pass); a
    READ cuts a write burst."""
    tb = TB(dut)
    ck = tb.ck
    cl = ck.cls[0]
    rng = random.Random(5)
    table = {(2, False, 1): [1, 0], (4, False, 5): [5, 6, 7, 4], (4, True, 5): [5, 4, 7, 6],
             (8, False, 3): [3, 4, 5, 6, 7, 0, 1, 2], (8, True, 3): [3, 2, 1, 0, 7, 6, 5, 4]}
    for (bl, inter, start), order in table.items():
        assert burst_columns(start, bl, inter) == order
    await tb.boot()
    ready = await init(tb, cl=cl)
    row = 7
    e = await tb.at(ready, "ACTIVE", ba=1, a=row)
    mem: dict[int, int] = {}
    for i, ((bl, inter, start), order) in enumerate(table.items()):
        base = 64 * i
        # reload the mode with bank 1 idle, reopen
        e = await tb.after(ck.tRAS + ck.tWR, "PRECHARGE", ba=1)
        e = await tb.after(ck.tRP, "MRS", a=mode_word(cl, bl, inter))
        e = await tb.after(max(ck.tMRD, ck.tRC), "ACTIVE", ba=1, a=row)
        # fill the block, then overwrite it masking the second beat's high byte
        fill = [rng.getrandbits(16) for _ in range(bl)]
        await tb.write_burst(e + ck.tRCD, 1, base + start, fill)
        for c, w in zip(order, fill, strict=True):
            mem[base + c] = w
        words = [rng.getrandbits(16) for _ in range(bl)]
        dms = [0] * bl
        dms[1] = 2
        await tb.write_burst(tb.now() + 1, 1, base + start, words, dms)
        for c, w, m in zip(order, words, dms, strict=True):
            mem[base + c] = merge(mem[base + c], w, m)
        s2 = order[2 % bl]
        e = await tb.after(1, "READ", ba=1, a=base + s2)
        for j, c in enumerate(burst_columns(s2, bl, inter)):
            tb.expect_read(e + j, mem[base + c], f"BL{bl}{'i' if inter else 's'}")
        await tb.nop(bl + cl)
    await tb.drain()
    assert tb.sb.take() == []
    # single-location write bursts (M9) with BL 4: one column written, reads still burst
    base = 400
    # fill 400..403 with a normal BL 4 write first (a mode reload needs an idle bank)
    e = await tb.after(ck.tRAS + ck.tWR, "PRECHARGE", ba=1)
    e = await tb.after(ck.tRP, "MRS", a=mode_word(cl, 4))
    e = await tb.after(max(ck.tMRD, ck.tRC), "ACTIVE", ba=1, a=row)
    fill = [0x1111, 0x2222, 0x3333, 0x4444]
    await tb.write_burst(e + ck.tRCD, 1, base, fill)
    e = await tb.after(ck.tRAS + ck.tWR, "PRECHARGE", ba=1)
    e = await tb.after(ck.tRP, "MRS", a=mode_word(cl, 4, single_write=True))
    e = await tb.after(max(ck.tMRD, ck.tRC), "ACTIVE", ba=1, a=row)
    await tb.write_burst(e + ck.tRCD, 1, base + 1, [0xBEEF, 0xDEAD, 0xDEAD])  # 1 taken
    want = [0x1111, 0xBEEF, 0x3333, 0x4444]
    e = await tb.after(1, "READ", ba=1, a=base)
    for i, w in enumerate(want):
        tb.expect_read(e + i, w, "single-write")
    await tb.nop(4 + cl)
    await tb.drain()
    assert tb.sb.take() == []
    # BURST TERMINATE one edge after the READ: one beat, then the bus is released
    e = await tb.after(1, "READ", ba=1, a=base)
    tb.expect_read(e, want[0], "bst")
    tb.expect_read(e + 1, want[1], "bst-cut")
    await tb.after(1, "BST")
    await tb.nop(cl + 4)
    # a READ two edges after another takes over: beats 0, 1 of the first, then the second
    e = await tb.after(1, "READ", ba=1, a=base)
    for i in range(2):
        tb.expect_read(e + i, want[i], "read-cut")
    e2 = await tb.after(2, "READ", ba=1, a=base + 2)
    for i, w in enumerate([want[2], want[3], want[0], want[1]]):
        tb.expect_read(e2 + i, w, "read-2")
    await tb.nop(cl + 4)
    await tb.drain()
    assert tb.sb.kinds() == ["z"], tb.sb.failures      # the beat BST cut
    tb.sb.take()
    # a PRECHARGE two edges after a READ: two beats, the rest cut
    e = await tb.after(ck.tRAS, "READ", ba=1, a=base)
    for i in range(3):
        tb.expect_read(e + i, want[i], "pre-cut")
    await tb.after(2, "PRECHARGE", ba=1)
    await tb.drain()
    assert tb.sb.kinds() == ["z"], tb.sb.failures
    tb.sb.take()
    # normal BL 4 mode; a READ two edges into a write burst cuts it
    e = await tb.after(ck.tRP, "MRS", a=mode_word(cl, 4))
    e = await tb.after(max(ck.tMRD, ck.tRC), "ACTIVE", ba=1, a=row)
    w = await tb.at(e + ck.tRCD, "WRITE", ba=1, a=base, data=0xA000)
    await tb.write_data([0xA001], [0])
    r = await tb.at(w + 2, "READ", ba=1, a=base)
    for i, x in enumerate([0xA000, 0xA001, 0x3333, 0x4444]):
        tb.expect_read(r + i, x, "write-cut")
    await tb.nop(cl + 5)
    await tb.drain()
    assert tb.sb.take() == []
    await tb.expect()
    report(dut, "sdram_chip", tb.sb.passed, "bursts")


# ------------------------------------------------------------------ one rule at a time
async def rule_case(tb: TB, rules, scenario, cl: int | None = None):
    """``scenario(tb, ready, slack)`` on a freshly booted model for slack -1 (exactly
    ``rules`` flagged) and 0 (clean)."""
    rules = (rules,) if isinstance(rules, str) else tuple(rules)
    for slack in (-1, 0):
        await tb.boot()
        ready = await init(tb, cl=cl)
        await scenario(tb, ready, slack)
        await tb.nop(tb.cl + 3)
        await tb.expect(*(rules if slack < 0 else ()))
    tb.dut._log.info("%s: flagged one cycle short, clean at the minimum", "+".join(rules))
    report(tb.dut, "sdram_chip", 2, f"rule {'+'.join(rules)}")


async def _trp(tb, ready, slack):
    ck = tb.ck
    e = await tb.at(ready, "ACTIVE", ba=0, a=5)
    e = await tb.at(e + ck.tRC, "PRECHARGE", ba=0)
    await tb.at(e + ck.tRP + slack, "ACTIVE", ba=0, a=6)


async def _trp_refresh(tb, ready, slack):
    ck = tb.ck
    e = await tb.at(ready, "ACTIVE", ba=2, a=5)
    e = await tb.at(e + ck.tRAS, "PRECHARGE", a=A10)
    await tb.at(e + ck.tRP + slack, "REFRESH")


async def _trp_read_ap(tb, ready, slack):
    """READ with auto precharge at tRAS: the internal precharge begins BL edges later."""
    ck = tb.ck
    e = await tb.at(ready, "ACTIVE", ba=3, a=5)
    r = await tb.at(e + ck.tRAS, "READ", ba=3, a=A10 | 7)
    await tb.at(r + 1 + ck.tRP + slack, "ACTIVE", ba=3, a=9)


async def _trcd(tb, ready, slack, name="READ"):
    e = await tb.at(ready, "ACTIVE", ba=1, a=10)
    kw = {"data": 0x1234} if name == "WRITE" else {}
    await tb.at(e + tb.ck.tRCD + slack, name, ba=1, a=3, **kw)


async def _trcd_write(tb, ready, slack):
    await _trcd(tb, ready, slack, "WRITE")


async def _tras(tb, ready, slack):
    e = await tb.at(ready, "ACTIVE", ba=1, a=10)
    await tb.at(e + tb.ck.tRAS + slack, "PRECHARGE", ba=1)


async def _tras_max(tb, ready, slack):
    """A row open tRAS max cycles (clean) or one more (flagged at that edge)."""
    e = await tb.at(ready, "ACTIVE", ba=2, a=3)
    await tb.at(e + tb.ck.tRAS_max - slack, "PRECHARGE", ba=2)


async def _trc(tb, ready, slack):
    ck = tb.ck
    e = await tb.at(ready, "ACTIVE", ba=2, a=1)
    await tb.at(e + ck.tRAS, "PRECHARGE", ba=2)
    await tb.at(e + ck.tRC + slack, "ACTIVE", ba=2, a=2)


async def _trrd(tb, ready, slack):
    e = await tb.at(ready, "ACTIVE", ba=0, a=1)
    await tb.at(e + tb.ck.tRRD + slack, "ACTIVE", ba=3, a=1)


async def _trfc(tb, ready, slack, then="ACTIVE"):
    e = await tb.at(ready, "REFRESH")
    await tb.at(e + tb.ck.tRFC + slack, then, ba=0, a=1)


async def _trfc_refresh(tb, ready, slack):
    await _trfc(tb, ready, slack, "REFRESH")


async def _twr(tb, ready, slack):
    ck = tb.ck
    e = await tb.at(ready, "ACTIVE", ba=1, a=1)
    w = await tb.at(e + ck.tRAS, "WRITE", ba=1, a=0, data=0xAAAA)
    await tb.at(w + ck.tWR + slack, "PRECHARGE", ba=1)


async def _tdal(tb, ready, slack):
    """WRITE with auto precharge, then ACTIVE: tWR(AP) + tRP after the data."""
    ck = tb.ck
    e = await tb.at(ready, "ACTIVE", ba=1, a=1)
    w = await tb.at(e + ck.tRAS, "WRITE", ba=1, a=A10, data=0x5555)
    await tb.at(w + ck.tWR_ap + ck.tRP + slack, "ACTIVE", ba=1, a=2)


async def _tmrd(tb, ready, slack):
    e = await tb.at(ready, "MRS", a=mode_word(tb.cl))
    await tb.at(e + tb.ck.tMRD + slack, "ACTIVE", ba=0, a=1)


async def _bus(tb, ready, slack):
    """A WRITE whose data meets the READ's beat on the bus (slack -1), or follows it."""
    e = await tb.at(ready, "ACTIVE", ba=0, a=1)
    r = await tb.at(e + tb.ck.tRCD, "READ", ba=0, a=0)
    await tb.at(r + tb.cl + 1 + slack, "WRITE", ba=0, a=1, data=0x0F0F)


def rule_test(name: str, rules, scenario, doc: str):
    """A cocotb test ``name``: ``scenario`` at every CL the clock allows."""
    async def test(dut):
        tb = TB(dut)
        for cl in tb.ck.cls:
            await rule_case(tb, rules, scenario, cl=cl)
    test.__name__ = test.__qualname__ = name
    test.__doc__ = doc
    return cocotb.test(test)


RULE_CASES = {
    "rule_tRP": ("TRP", _trp, "PRECHARGE then ACTIVE, same bank."),
    "rule_tRP_refresh": ("TRP", _trp_refresh, "PRECHARGE ALL then AUTO REFRESH."),
    "rule_tRP_read_ap": ("TRP", _trp_read_ap, "READ with auto precharge then ACTIVE."),
    "rule_tRCD": ("TRCD", _trcd, "ACTIVE then READ."),
    "rule_tRCD_write": ("TRCD", _trcd_write, "ACTIVE then WRITE."),
    "rule_tRAS": ("TRAS", _tras, "ACTIVE then PRECHARGE."),
    "rule_tRAS_max": ("TRAS_MAX", _tras_max, "A row open longer than tRAS max."),
    "rule_tRRD": ("TRRD", _trrd, "ACTIVE then ACTIVE to another bank."),
    "rule_tRFC": ("TRFC", _trfc, "AUTO REFRESH then ACTIVE."),
    "rule_tRFC_refresh": ("TRFC", _trfc_refresh, "AUTO REFRESH then AUTO REFRESH."),
    "rule_tWR": ("TWR", _twr, "Write data then PRECHARGE."),
    "rule_tDAL": ("TDAL", _tdal, "WRITE with auto precharge then ACTIVE."),
    "rule_tMRD": ("TMRD", _tmrd, "LOAD MODE then ACTIVE."),
    "rule_bus": ("BUS", _bus, "Read-to-write turnaround: write data on the edge of the "
                 "chip's read beat is contention."),
}
for _name, (_rules, _scenario, _doc) in RULE_CASES.items():
    globals()[_name] = rule_test(_name, _rules, _scenario, _doc)


@cocotb.test()
async def rule_tRC(dut):
    """ACTIVE, PRECHARGE, ACTIVE one cycle short of tRC. With the datasheet's numbers tRC
    <= tRAS + tRP in cycles at every legal clock, so that breaks tRP too (both bits); a
    build with a larger TRC_PS breaks tRC alone."""
    tb = TB(dut)
    ck = tb.ck
    alone = ck.tRC > ck.tRAS + ck.tRP
    await rule_case(tb, ("TRC",) if alone else ("TRP", "TRC"), _trc, cl=ck.cls[0])


@cocotb.test()
async def rule_tCK(dut):
    """tCK min is 10 ns at CL 2, 7.5 ns at CL 3: a LOAD MODE with a CL the clock is too fast
    for is flagged (TCK), else clean."""
    tb = TB(dut)
    for cl in (2, 3):
        await tb.boot()
        ready = await init(tb, cl=3 if tb.period >= 7500 else 2)
        e = await tb.at(ready, "MRS", a=mode_word(cl))
        await tb.nop(tb.ck.tMRD)
        too_fast = tb.period < (10_000 if cl == 2 else 7_500)
        init_too_fast = tb.period < 7_500
        await tb.expect(*(["TCK"] if too_fast or init_too_fast else []))
        assert e > 0
    report(dut, "sdram_chip", 2, f"rule TCK at {tb.period} ps")


# ------------------------------------------------------------------ protocol
@cocotb.test()
async def init_orders(dut):
    """Refresh-first, mode-first and LiteDRAM's sequence (PALL, LMR with M8 set, PALL, REF,
    REF, LMR) are clean, each command at its earliest edge; LiteDRAM's M8 is one warning.
    Then a write and a read work."""
    tb = TB(dut)
    ck = tb.ck
    for i, order in enumerate(("refresh_first", "mode_first", "litedram")):
        await tb.boot()
        ready = await init(tb, order=order)
        e = await tb.at(ready, "ACTIVE", ba=0, a=i)
        await tb.at(e + ck.tRCD, "WRITE", ba=0, a=5, data=0x4321 + i)
        r = await tb.after(1, "READ", ba=0, a=5)
        tb.expect_read(r, 0x4321 + i, order)
        await tb.drain()
        (warnings,) = await tb.peek("warnings")
        await tb.expect()
        assert warnings == (order == "litedram"), (order, warnings)
    assert tb.sb.take() == [] and tb.sb.passed == 3
    report(dut, "sdram_chip", 3, "init orders")


@cocotb.test()
async def init_violations(dut):
    """A first command other than PRECHARGE ALL (INIT_ORDER, ignored); ACTIVE and READ
    before 2 AUTO REFRESH and a LOAD MODE (INIT_ORDER, ignored); init completes after."""
    tb = TB(dut)
    ck = tb.ck
    await tb.boot()
    e = await tb.at(ck.powerup, "REFRESH")
    await tb.expect("INIT_ORDER")
    e = await tb.after(ck.tRFC, "PRECHARGE", a=A10)
    e = await tb.at(e + ck.tRP, "REFRESH")
    e = await tb.at(e + ck.tRFC, "MRS", a=mode_word(2))
    e = await tb.at(e + ck.tMRD, "ACTIVE", ba=0, a=0)        # only one refresh
    await tb.expect("INIT_ORDER")
    e = await tb.after(1, "READ", ba=0, a=0)
    await tb.expect("INIT_ORDER")
    e = await tb.after(1, "WRITE", ba=0, a=0, data=1)
    await tb.expect("INIT_ORDER")
    e = await tb.after(1, "REFRESH")
    e = await tb.at(e + ck.tRFC, "ACTIVE", ba=0, a=0)        # init done: clean
    await tb.at(e + ck.tRCD, "READ", ba=0, a=0)
    await tb.expect()
    (activates,) = await tb.peek("activates")
    assert activates == 1                                    # the early one was ignored
    report(dut, "sdram_chip", 5, "init violations")


@cocotb.test()
async def powerup(dut):
    """The power-up wait: PRECHARGE ALL one edge before it ends (POWERUP) and at its end
    (clean); an ACTIVE during it (POWERUP, ignored: a proper init follows cleanly); CKE low
    on the edge before the first PRECHARGE ALL (POWERUP); CKE low before init is fine; CKE
    low after init (CKE, once per low stretch)."""
    tb = TB(dut)
    ck = tb.ck
    d = dut
    await tb.boot()
    await tb.at(ck.powerup - 1, "PRECHARGE", a=A10)
    await tb.expect("POWERUP")
    await tb.boot()
    await tb.at(ck.powerup, "PRECHARGE", a=A10)
    await tb.expect()
    await tb.boot()
    await tb.at(3, "ACTIVE", ba=0, a=0)
    await tb.expect("POWERUP")
    await init(tb)
    await tb.expect()
    # CKE low for the first edges (fine), then low again on the edge before the PALL
    await tb.boot()
    d.cke.value = 0
    await tb.nop(5)
    d.cke.value = 1
    await tb.until(ck.powerup - 2)
    d.cke.value = 0
    await RisingEdge(d.clk)
    d.cke.value = 1
    await tb.cmd("PRECHARGE", a=A10)
    await tb.expect("POWERUP")
    # CKE low after init
    await tb.boot()
    ready = await init(tb)
    await tb.until(ready)
    d.cke.value = 0
    await tb.nop(3)
    d.cke.value = 1
    await tb.nop(2)
    n = await tb.expect("CKE")
    assert n == 1
    report(dut, "sdram_chip", 6, "power-up")


@cocotb.test()
async def powerup_default(dut):
    """The default 100 us power-up wait: PRECHARGE ALL one edge early is flagged, on time
    it is clean and init completes."""
    tb = TB(dut)
    assert tb.ck.powerup == -(-100_000_000 // tb.period)
    await tb.boot()
    await tb.at(tb.ck.powerup - 1, "PRECHARGE", a=A10)
    await tb.expect("POWERUP")
    await tb.boot()
    ready = await init(tb)
    e = await tb.at(ready, "ACTIVE", ba=0, a=0)
    await tb.at(e + tb.ck.tRCD, "READ", ba=0, a=0)
    await tb.nop(4)
    await tb.expect()
    report(dut, "sdram_chip", 2, "default power-up")


@cocotb.test()
async def banks(dut):
    """Commands to open and closed banks: ACTIVE to an open bank (BANK_OPEN), READ (drives
    X: not a pass) and WRITE (dropped) to an idle bank (BANK_CLOSED), PRECHARGE of an idle
    bank (a NOP), AUTO REFRESH and LOAD MODE with a bank open (BANK_OPEN), READ after a
    READ with auto precharge closed the bank (BANK_CLOSED)."""
    tb = TB(dut)
    ck = tb.ck
    await tb.boot()
    ready = await init(tb)
    e = await tb.at(ready, "ACTIVE", ba=0, a=10)
    e = await tb.at(e + ck.tRC, "ACTIVE", ba=0, a=11)           # timings met, bank open
    await tb.expect("BANK_OPEN")
    r = await tb.after(ck.tRCD, "READ", ba=1, a=0)              # bank 1 idle
    tb.expect_read(r, 0, "closed")
    await tb.drain()
    assert tb.sb.kinds() == ["x"], tb.sb.failures              # X driven, not a pass
    tb.sb.take()
    await tb.expect("BANK_CLOSED")
    await tb.after(1, "WRITE", ba=2, a=0, data=0x1234)
    await tb.expect("BANK_CLOSED")
    await tb.after(1, "PRECHARGE", ba=3)                        # idle bank: NOP
    await tb.expect()
    await tb.after(ck.tRAS, "REFRESH")                          # bank 0 open
    await tb.expect("BANK_OPEN")
    await tb.after(ck.tRFC, "MRS", a=mode_word(tb.cl))
    await tb.expect("BANK_OPEN")
    e = await tb.after(ck.tMRD, "PRECHARGE", a=A10)
    e = await tb.at(e + max(ck.tRP, ck.tRRD), "ACTIVE", ba=3, a=1)
    await tb.at(e + ck.tRAS, "READ", ba=3, a=A10 | 1)           # with auto precharge
    await tb.after(1, "READ", ba=3, a=2)
    await tb.nop(tb.cl + 2)
    await tb.expect("BANK_CLOSED")
    report(dut, "sdram_chip", 6, "bank states")


@cocotb.test()
async def modes(dut):
    """Mode register: full page and CL 1 are MODE violations (and READ / WRITE in that
    state); a reserved operating mode (M8) is a warning, then READ / WRITE are MODE
    violations; a LOAD MODE during a read burst is one; a valid mode again is clean."""
    tb = TB(dut)
    ck = tb.ck
    await tb.boot()
    ready = await init(tb)
    e = await tb.at(ready, "MRS", a=mode_word(2, "page"))
    await tb.expect("MODE")
    e = await tb.after(ck.tMRD, "MRS", a=mode_word(1))
    await tb.expect("MODE")
    e = await tb.after(ck.tMRD, "ACTIVE", ba=0, a=0)
    e = await tb.at(e + ck.tRCD, "WRITE", ba=0, a=0, data=1)
    await tb.expect("MODE")
    e = await tb.after(ck.tRAS, "PRECHARGE", a=A10)
    e = await tb.at(e + ck.tRP, "MRS", a=mode_word(2, op=1))
    (w0,) = await tb.peek("warnings")
    e = await tb.after(ck.tMRD, "ACTIVE", ba=0, a=0)
    e = await tb.at(e + ck.tRCD, "READ", ba=0, a=0)
    await tb.nop(4)
    await tb.expect("MODE")
    assert w0 == 1
    e = await tb.after(ck.tRAS, "PRECHARGE", a=A10)
    e = await tb.at(e + ck.tRP, "MRS", a=mode_word(2, 8, True))
    e = await tb.at(e + ck.tMRD, "ACTIVE", ba=0, a=0)
    r = await tb.at(e + ck.tRCD, "READ", ba=0, a=0)
    await tb.nop(2 + 9)
    await tb.expect()
    # LOAD MODE while READ A beats are still due (the auto precharge has not begun: tRP too)
    r = await tb.after(1, "READ", ba=0, a=A10)
    await tb.at(r + 2, "MRS", a=mode_word(2, 8))
    await tb.nop(10)
    await tb.expect("MODE", "TRP")
    report(dut, "sdram_chip", 6, "modes")


@cocotb.test()
async def refresh_starvation(dut):
    """Refreshes every tREFI are clean; a gap of exactly 9 x tREFI (in whole cycles) is
    clean; one cycle more is flagged at that edge, with no command; flagged once per gap."""
    tb = TB(dut)
    ck = tb.ck
    await tb.boot()
    ready = await init(tb)
    e = await tb.at(ready, "REFRESH")
    for _ in range(3):
        e = await tb.at(e + ck.refi, "REFRESH")
    e = await tb.at(e + ck.refresh_gap, "REFRESH")
    await tb.until(e + ck.refresh_gap)
    await tb.expect()                      # read after edge e + gap: clean
    await tb.expect("REFRESH")             # read after edge e + gap + 1: flagged
    await tb.nop(20)
    await tb.expect()                      # once per gap
    e = await tb.after(1, "REFRESH")
    await tb.nop(ck.refresh_gap - 2)
    await tb.expect()
    report(dut, "sdram_chip", 3, "refresh starvation")


@cocotb.test()
async def row_range(dut):
    """ACTIVE to row ROWS - 1 is clean; to row ROWS (out of the model's array) is
    ROW_RANGE, and a READ there drives X."""
    tb = TB(dut)
    ck = tb.ck
    await tb.boot()
    ready = await init(tb)
    e = await tb.at(ready, "ACTIVE", ba=1, a=tb.rows - 1)
    await tb.at(e + ck.tRCD, "WRITE", ba=1, a=0, data=0x7777)
    r = await tb.after(1, "READ", ba=1, a=0)
    tb.expect_read(r, 0x7777, "last row")
    await tb.nop(4)
    await tb.expect()
    e = await tb.after(ck.tRAS, "PRECHARGE", ba=1)
    e = await tb.at(e + max(ck.tRP, ck.tRC), "ACTIVE", ba=1, a=tb.rows)
    await tb.expect("ROW_RANGE")
    await tb.at(max(e + ck.tRCD, tb.now() + 1), "WRITE", ba=1, a=0, data=0x7777)
    r = await tb.after(1, "READ", ba=1, a=0)
    tb.expect_read(r, 0x7777, "out of model")
    await tb.drain()
    assert tb.sb.kinds() == ["x"], tb.sb.failures
    tb.sb.take()
    await tb.expect()
    report(dut, "sdram_chip", 2, "row range")


@cocotb.test()
async def x_input(dut):
    """X on a control pin with CKE high, and X on the column address of a READ: X_INPUT,
    the command ignored."""
    tb = TB(dut)
    ck = tb.ck
    d = dut
    await tb.boot()
    ready = await init(tb)
    await tb.until(ready)
    d.we_n.value = LogicArray("X")
    await RisingEdge(d.clk)
    tb._nop()
    await tb.expect("X_INPUT")
    e = await tb.after(1, "ACTIVE", ba=0, a=0)
    await tb.nop(ck.tRCD - 1)
    d.cs_n.value, d.ras_n.value, d.cas_n.value, d.we_n.value = 0, 1, 0, 1
    d.ba.value = 0
    d.a.value = LogicArray("0000X00000000")
    await RisingEdge(d.clk)
    tb._nop()
    await tb.expect("X_INPUT")
    (reads,) = await tb.peek("reads")
    assert reads == 0 and e > 0
    report(dut, "sdram_chip", 2, "X inputs")


@cocotb.test()
async def contention(dut):
    """BUS: the controller drives dq (even with the very data the chip drives) on an edge
    of a read beat; a WRITE while read beats are still due after it (they are dropped);
    with BL 4, a WRITE right after the last beat is clean."""
    tb = TB(dut)
    ck = tb.ck
    d = dut
    await tb.boot()
    ready = await init(tb)
    e = await tb.at(ready, "ACTIVE", ba=0, a=3)
    w = await tb.at(e + ck.tRCD, "WRITE", ba=0, a=1, data=0x5A5A)
    r = await tb.after(1, "READ", ba=0, a=1)
    await tb.until(r + tb.cl - 1)
    d.dq_o.value, d.dq_oe.value = 0x5A5A, 1                      # same data, still contention
    await RisingEdge(d.clk)
    tb._nop()
    await tb.expect("BUS")
    r = await tb.after(1, "READ", ba=0, a=1)
    await tb.at(r + 1, "WRITE", ba=0, a=2, data=0x1111)         # read beat still due
    await tb.nop(4)
    await tb.expect("BUS")
    # BL 4: WRITE at the edge after the last beat
    e = await tb.after(ck.tRAS, "PRECHARGE", a=A10)
    e = await tb.at(e + ck.tRP, "MRS", a=mode_word(tb.cl, 4))
    e = await tb.at(e + max(ck.tMRD, ck.tRC), "ACTIVE", ba=0, a=3)
    r = await tb.at(e + ck.tRCD, "READ", ba=0, a=0)
    await tb.write_burst(r + tb.cl + 4, 0, 4, [1, 2, 3, 4])
    await tb.nop(2)
    await tb.expect()
    r = await tb.after(1, "READ", ba=0, a=0)
    await tb.write_burst(r + tb.cl + 3, 0, 4, [1, 2, 3, 4])     # meets the last beat
    await tb.nop(2)
    await tb.expect("BUS")
    assert w > 0
    report(dut, "sdram_chip", 4, "contention")


@cocotb.test()
async def scoreboard(dut):
    """The 4-state scoreboard: a never-written word reads as X (not a pass); so is the
    masked byte of a half-written word; a beat sampled at the wrong latency sees Z; a
    correct beat passes."""
    tb = TB(dut)
    ck = tb.ck
    await tb.boot()
    ready = await init(tb)
    row = tb.rows - 3                       # written by no other test of this build
    e = await tb.at(ready, "ACTIVE", ba=2, a=row)
    await tb.at(e + ck.tRCD, "WRITE", ba=2, a=7, data=0xC0DE)
    await tb.after(1, "WRITE", ba=2, a=8, data=0xAB12, dm=0b01)    # low byte masked
    r = await tb.after(1, "READ", ba=2, a=9)                        # never written
    tb.expect_read(r, 0, "never-written")
    r = await tb.after(1, "READ", ba=2, a=8)
    tb.expect_read(r, 0xAB12, "half-written")
    r = await tb.after(1, "READ", ba=2, a=7)
    tb.expect_read(r, 0xC0DE, "good")
    tb.expect_read(r, 0xC0DE, "wrong-latency", cl=tb.cl + 1)
    await tb.drain()
    f = tb.sb.take()
    assert tb.sb.passed == 1, f
    assert sorted((x[0].split()[0], x[1]) for x in f) == [
        ("half-written", "x"), ("never-written", "x"), ("wrong-latency", "z")], f
    half = [x[2] for x in f if x[0].startswith("half")][0]
    assert half == "10101011XXXXXXXX", half
    await tb.expect()
    report(dut, "sdram_chip", 3, "scoreboard")


@cocotb.test()
async def fatal_stops(dut):
    """Run on a FATAL=1 build (Verilator, by tests/test_sim_sdram_chip.py): init, then a
    READ one cycle inside tRCD. The model's $fatal must end the simulation at that edge, so
    this test never gets to its end (the pytest test checks the message and exit code)."""
    tb = TB(dut)
    await tb.boot()
    ready = await init(tb)
    e = await tb.at(ready, "ACTIVE", ba=1, a=2)
    await tb.at(e + tb.ck.tRCD - 1, "READ", ba=1, a=0)
    await tb.nop(20)
    dut._log.error("the simulation is still running after the violation")
