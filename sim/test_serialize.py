"""cocotb bench: LaneSerializer, alone and behind the TernaryEngine.

The serializer turns each product's ceil(N / lanes) lanes-wide ``acc`` beats into N rows,
dropping the padding lanes of the last beat, with ``last`` on row N - 1.

Suites (MMF_PARAMS ``suite``):

- ``random`` (DUT: LaneSerializer): corner products (rows = 1, lanes - 1, lanes,
  lanes + 1, 2 lanes, rows = 0 which uses no beat, X_MIN / X_MAX values), then random
  products (rows 1 .. 3 lanes + 5: below lanes, multiples and not) with random padding,
  under one of ``tb.PATTERNS`` (gaps on ``cfg`` and ``acc``, back-pressure on ``o``).
- ``timing`` (LaneSerializer): row 0 LATENCY (2) cycles after its beat; one row per cycle
  across beats and products; beats offered every lanes cycles (an engine with K = lanes)
  taken the cycle they are offered; a beat offered while the buffer is busy taken n cycles
  after its predecessor.
- ``engine`` (DUT: TernaryEngine -> LaneSerializer, ``EngineSerializer``): random ternary
  products (N rows, not multiples of lanes; K from ``min_k``, default 6, to ``max_k``; the
  engine's own max_k is ``engine_max_k``, default ``max_k``), weight words from
  ``numerics.engine_word_ints``; every row against ``golden.ternary_matvec``. The engine's
  cfg beats (``engine_cfg``) come early, with the pattern's gaps, or (a share
  ``cfg_late``, default 0.3, none with ``no_stall``) 1..40 cycles after the vector's first
  ``act`` beat was offered, garbage while invalid; each must go with that first beat.
  With ``no_stall`` set (K >= lanes, no gaps, no back-pressure) the engine takes one
  weight word per cycle over the whole run: the serializer never stalled it.
"""

import random

import cocotb
import numpy as np
from tb import PATTERNS, StreamSink, StreamSource, cycle, idle, pack, params, report, start, unpack

from mmfree_fpga import golden as G
from mmfree_fpga import numerics as N
from mmfree_hw.engine import engine_cfg_layout
from mmfree_hw.serialize import AccRow, LaneSerializer, serializer_cfg_layout

MASK = (1 << N.ACC_BITS) - 1


def lanes_word(values) -> int:
    word = 0
    for lane, v in enumerate(values):
        word |= (int(v) & MASK) << (N.ACC_BITS * lane)
    return word


def beats_of(rows, lanes: int, rng: random.Random) -> list[int]:
    """A product's rows as acc beats, the padding lanes of the last one random."""
    groups = -(-len(rows) // lanes)
    padded = list(rows) + [rng.randrange(N.X_MIN, N.X_MAX + 1)
                           for _ in range(groups * lanes - len(rows))]
    return [lanes_word(padded[g * lanes:(g + 1) * lanes]) for g in range(groups)]


def corner_products(lanes: int, rng: np.random.Generator) -> list[list[int]]:
    out = []
    for rows in (1, lanes - 1, lanes, lanes + 1, 2 * lanes, 0, 0, 2 * lanes - 1, 1):
        out.append([int(v) for v in rng.integers(-1000, 1000, size=rows)])   # 0: no beat
    out.append([N.X_MIN, N.X_MAX] * lanes + [N.X_MIN])
    out.append([-1] * (lanes + 3))
    return out


def random_products(n: int, lanes: int, rng: np.random.Generator) -> list[list[int]]:
    out = []
    for _ in range(n):
        rows = int(rng.integers(1, 3 * lanes + 6))
        out.append([int(v) for v in rng.integers(N.X_MIN, N.X_MAX, size=rows,
                                                  endpoint=True)])
    return out


class SerializerTB:
    def __init__(self, dut, lanes, valid_prob=1.0, ready_prob=1.0, seed=0, rows_bits=16):
        rng = random.Random(seed)
        self.dut, self.lanes = dut, lanes
        self.pad = random.Random(rng.randrange(1 << 30))
        self.cfg_layout = serializer_cfg_layout(rows_bits)
        self.cfg = StreamSource(dut, "cfg", valid_prob, seed=rng.randrange(1 << 30))
        self.acc = StreamSource(dut, "acc", valid_prob, seed=rng.randrange(1 << 30))
        self.sink = StreamSink(dut, "o", ready_prob, seed=rng.randrange(1 << 30))
        self.checked = 0

    async def run(self, products, acc_gap: int = 0) -> int:
        first = len(self.sink.beats)
        beats = [b for p in products for b in beats_of(p, self.lanes, self.pad)]
        cocotb.start_soon(self.cfg.send([pack(self.cfg_layout, rows=len(p))
                                         for p in products]))
        cocotb.start_soon(self.send_acc(beats, acc_gap))
        want = [(v, int(i == len(p) - 1)) for p in products for i, v in enumerate(p)]
        await self.sink.expect_no_more(first + len(want), 2 * self.lanes + 20)
        got = [unpack(AccRow, b) for b in self.sink.beats[first:]]
        bad = [(i, (g["acc"], g["last"]), w) for i, (g, w) in enumerate(zip(got, want,
                                                                            strict=True))
               if (g["acc"], g["last"]) != w]
        assert not bad, f"{len(bad)} of {len(want)} rows wrong, first: {bad[:3]}"
        self.checked += len(want)
        return len(want)

    async def send_acc(self, beats, gap: int):
        if not gap:
            await self.acc.send(beats)
            return
        for beat in beats:                   # one beat offered every gap + 1 cycles
            await self.acc.send([beat])
            await idle(self.dut, gap)


async def suite_random(dut, p):
    lanes, pattern = p["lanes"], p.get("pattern", "both")
    valid_prob, ready_prob = PATTERNS[pattern]
    rng = np.random.default_rng(p.get("seed", 0))
    products = corner_products(lanes, rng) + random_products(p["products"], lanes, rng)
    tb = SerializerTB(dut, lanes, valid_prob, ready_prob, p.get("seed", 0))
    n = await tb.run(products)
    beats = sum(-(-len(x) // lanes) for x in products)
    report(dut, "serialize", n, f"rows of {len(products)} products ({beats} acc beats), "
           f"lanes={lanes}, {pattern}")


async def suite_timing(dut, p):
    lanes = p["lanes"]
    rng = np.random.default_rng(p.get("seed", 0))
    tb = SerializerTB(dut, lanes)

    # Back to back: beats wait for the buffer; rows leave one per cycle.
    products = [random_products(1, lanes, rng)[0] for _ in range(6)] + [[5], [6, 7]]
    c0, a0, o0 = len(tb.cfg.accepted), len(tb.acc.accepted), len(tb.sink.monitor.transfers)
    await tb.run(products)
    cfg, acc = tb.cfg.accepted[c0:], tb.acc.accepted[a0:]
    o = tb.sink.monitor.transfers[o0:]
    assert acc[0] - cfg[0] == 2, "acc.ready 2 cycles after the first cfg beat"
    assert o[0] - acc[0] == LaneSerializer.LATENCY
    assert o == list(range(o[0], o[0] + len(o))), "a bubble between rows"
    sizes = [min(lanes, len(x) - g * lanes) for x in products for g in range(-(-len(x) // lanes))]
    assert np.diff(acc).tolist() == sizes[:-1], "a beat not taken as its predecessor left"

    # Beats offered every lanes cycles (K = lanes): each is taken the cycle it is offered.
    products = [[int(v) for v in rng.integers(-50, 50, size=int(rng.integers(lanes, 3 * lanes)))]
                for _ in range(4)]
    a0 = len(tb.acc.accepted)
    await tb.run(products, acc_gap=lanes - 1)
    acc = tb.acc.accepted[a0:]
    assert set(np.diff(acc).tolist()) == {lanes}, sorted(set(np.diff(acc).tolist()))
    dut._log.info("serializer lanes=%d: latency %d, one row per cycle over %d rows, beats "
                  "%d cycles apart taken at once", lanes, LaneSerializer.LATENCY, len(o), lanes)
    report(dut, "serialize", tb.checked, f"timing, lanes={lanes}")


class EngineTB:
    """engine_cfg (K and row groups, early or late), act, weights, cfg (rows), and the row
    sink."""

    def __init__(self, dut, lanes, max_k, valid_prob=1.0, ready_prob=1.0, seed=0,
                 cfg_late=0.0):
        rng = random.Random(seed)
        self.dut, self.lanes, self.cfg_late = dut, lanes, cfg_late
        self.ecfg_layout = engine_cfg_layout(max_k, 1 << 16)   # EngineSerializer's engine
        assert len(dut.engine_cfg__payload) == self.ecfg_layout.size
        self.act = StreamSource(dut, "act", valid_prob, seed=rng.randrange(1 << 30))
        self.weights = StreamSource(dut, "weights", valid_prob, seed=rng.randrange(1 << 30))
        self.cfg = StreamSource(dut, "cfg", valid_prob, seed=rng.randrange(1 << 30))
        self.ecfg = StreamSource(dut, "engine_cfg", valid_prob, seed=rng.randrange(1 << 30))
        self.sink = StreamSink(dut, "o", ready_prob, seed=rng.randrange(1 << 30))
        self.garbage = random.Random(rng.randrange(1 << 30))
        self.late = random.Random(rng.randrange(1 << 30))
        self.offered: list[int] = []     # cycle each vector's first act beat was offered
        self.checked = 0

    def scramble(self, i):
        if i is None:
            self.dut.engine_cfg__payload.value = self.garbage.getrandbits(self.ecfg_layout.size)

    async def feed_act(self, products):
        for v, (q, _) in enumerate(products):
            def mark(i, v=v):
                if i == 0 and len(self.offered) == v:
                    self.offered.append(cycle())
            await self.act.send([int(x) & 0xFF for x in q], drive=mark)

    async def feed_ecfg(self, products):
        for v, (q, codes) in enumerate(products):
            word = pack(self.ecfg_layout, k=len(q), groups=-(-codes.shape[0] // self.lanes))
            if self.late.random() < self.cfg_late:
                delay = self.late.randint(1, 40)
                while len(self.offered) <= v or cycle() < self.offered[v] + delay:
                    self.scramble(None)
                    await idle(self.dut, 1)
            await self.ecfg.send([word], drive=self.scramble)

    async def run(self, products) -> int:
        first = len(self.sink.beats)
        assert not self.offered, "one run per bench (offered counts from 0)"
        cocotb.start_soon(self.feed_act(products))
        cocotb.start_soon(self.feed_ecfg(products))
        cocotb.start_soon(self.weights.send([w for _, c in products
                                             for w in N.engine_word_ints(c, self.lanes)]))
        cocotb.start_soon(self.cfg.send([pack(serializer_cfg_layout(), rows=c.shape[0])
                                         for _, c in products]))
        want = [(int(v), int(i == c.shape[0] - 1)) for q, c in products
                for i, v in enumerate(G.ternary_matvec(c, q))]
        await self.sink.expect_no_more(first + len(want), 2 * self.lanes + 30)
        got = [unpack(AccRow, b) for b in self.sink.beats[first:]]
        bad = [(i, (g["acc"], g["last"]), w) for i, (g, w) in enumerate(zip(got, want,
                                                                            strict=True))
               if (g["acc"], g["last"]) != w]
        assert not bad, f"{len(bad)} of {len(want)} rows wrong, first: {bad[:3]}"
        starts = np.cumsum([0] + [len(q) for q, _ in products[:-1]])
        assert self.ecfg.accepted == [self.act.accepted[int(i)] for i in starts], \
            "an engine cfg beat not taken with its vector's first act beat"
        self.checked += len(want)
        return len(want)


def ternary_products(n, lanes, max_k, rng, min_k=6):
    out = []
    for i in range(n):
        k = min_k if i == 0 else int(rng.integers(min_k, max_k + 1))   # K = min_k first
        rows = int(rng.integers(1, 3 * lanes + 1))
        q = rng.choice(np.array([-128, 127, 0, 1, -1]), size=k) if rng.random() < 0.2 \
            else rng.integers(-128, 128, size=k)
        p_zero = rng.choice([0.0, 1 / 3, 0.9])
        codes = np.where(rng.random((rows, k)) < p_zero, 0,
                         rng.choice(np.array([-1, 1]), size=(rows, k)))
        out.append((q, codes.astype(np.int64)))
    return out


async def suite_engine(dut, p):
    lanes, max_k, pattern = p["lanes"], p["max_k"], p.get("pattern", "both")
    valid_prob, ready_prob = PATTERNS[pattern]
    rng = np.random.default_rng(p.get("seed", 0))
    min_k = p.get("min_k", 6)
    products = ternary_products(p["products"], lanes, max_k, rng, min_k)
    cfg_late = p.get("cfg_late", 0.0 if p.get("no_stall") else 0.3)
    bench = EngineTB(dut, lanes, p.get("engine_max_k", max_k), valid_prob, ready_prob,
                     p.get("seed", 0), cfg_late)
    n = await bench.run(products)
    words = bench.weights.accepted
    if p.get("no_stall"):
        # K >= lanes at full rate: one weight word per cycle from the first to the last
        assert words == list(range(words[0], words[0] + len(words))), \
            "the engine waited: the serializer stalled it"
    ks = [len(q) for q, _ in products]
    report(dut, "serialize", n, f"engine -> serializer rows vs golden.ternary_matvec, "
           f"{len(products)} products, lanes={lanes}, K {min(ks)}..{max(ks)}, "
           f"{len(words)} weight words, {pattern}, {cfg_late:.0%} of engine cfg beats late")


@cocotb.test()
async def serialize(dut):
    p = params()
    await start(dut)
    suites = {"random": suite_random, "timing": suite_timing, "engine": suite_engine}
    await suites[p.get("suite", "random")](dut, p)
