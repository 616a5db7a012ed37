"""cocotb bench: MLGRUUnit against golden.mlgru over sequences of tokens, the state carried
from token to token in the unit's memory, several layers sharing it (layer l at base l * n),
with random and corner-case operands, random gaps and random back-pressure.

The settings (n, base, gn_frac) go on the ``cfg`` stream, one beat per vector, driven
independently of ``i``: with the pattern's random gaps and, in the patterns with gaps,
now and then a long wait before a beat, so that some vectors' beats wait for their cfg beat.

Every o beat is compared; the state is checked through the o beats of later tokens (o
depends on the new h, which depends on the stored one). Parameters (MMF_PARAMS): pattern,
n, max_channels, layers (<= max_channels // n), max_tokens, transactions, seed, cfg_late
(the chance of a long wait before a cfg beat).

``timing`` asserts the docstring's latency and throughput at full rate: every o beat
``LATENCY`` (35) cycles after its i beat, one channel per cycle for n >= MIN_DISTANCE (8)
with the cfg beats costing no cycle, and one vector per n + MIN_DISTANCE - 1 cycles below
that (the input interlock).
"""

import random

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge
from tb import PATTERNS, StreamSink, StreamSource, idle, pack, params, report, start, to_signed

from mmfree_fpga import golden as G
from mmfree_fpga import numerics as N
from mmfree_hw.mlgru import MLGRUBeat, MLGRUUnit, mlgru_cfg_layout

X_ONE = 1 << N.X_FRAC
X_CORNERS = [0, 1, -1, N.X_MAX, N.X_MIN, N.X_MAX - 1, N.X_MIN + 1, X_ONE, -X_ONE,
             16 * X_ONE, -16 * X_ONE, 16 * X_ONE + 1, -16 * X_ONE - 1, 12 * X_ONE,
             -12 * X_ONE, 181 * X_ONE, -181 * X_ONE, (1 << 11) - 1, 1 << 11]
LB_CORNERS = [0, 1, N.GATE_ONE - 1, N.GATE_ONE, N.GATE_ONE - (1 << 10), N.GATE_ONE // 2]
GN_CORNERS = [32767, -32768, -32767, 0, 1, -1, 1 << 14, -(1 << 14)]
FRAC_CORNERS = [0, 1, 14, 15, 16, 24, 30, 31]


class Stimulus:
    """Random vectors with corner values mixed in; ``mode`` biases one vector as a whole
    (zf = +large: f -> 1, long memory; zf = -large: f -> lb; all zeros; all extremes)."""

    def __init__(self, rng: random.Random, n: int):
        self.rng, self.n = rng, n

    def x(self, mode: str = "mixed") -> np.ndarray:
        r = self.rng
        if mode == "zeros":
            return np.zeros(self.n, dtype=np.int64)
        if mode == "extremes":
            return np.array([r.choice([N.X_MAX, N.X_MIN]) for _ in range(self.n)],
                            dtype=np.int64)
        if mode in ("pos", "neg"):
            sign = 1 if mode == "pos" else -1
            return np.array([sign * r.choice([r.randrange(9 * X_ONE, 40 * X_ONE), N.X_MAX])
                             for _ in range(self.n)], dtype=np.int64)
        out = []
        for _ in range(self.n):
            k = r.random()
            if k < 0.5:
                out.append(r.randrange(-8 * X_ONE, 8 * X_ONE))        # the model's range
            elif k < 0.65:
                out.append(r.randrange(-(1 << 24), 1 << 24))          # +-256
            elif k < 0.8:
                out.append(r.randrange(N.X_MIN, N.X_MAX + 1))
            else:
                out.append(r.choice(X_CORNERS))
        return np.array(out, dtype=np.int64)

    def lb(self) -> np.ndarray:
        r = self.rng
        return np.array([r.randrange(N.GATE_ONE + 1) if r.random() < 0.6 else
                         r.choice(LB_CORNERS) for _ in range(self.n)], dtype=np.int64)

    def gn(self) -> np.ndarray:
        r = self.rng
        return np.array([r.randrange(-32768, 32768) if r.random() < 0.6 else
                         r.choice(GN_CORNERS) for _ in range(self.n)], dtype=np.int64)

    def frac(self) -> int:
        """Every corner once (in a shuffled order), then random."""
        if not hasattr(self, "fracs"):
            self.fracs = self.rng.sample(FRAC_CORNERS, len(FRAC_CORNERS))
        r = self.rng
        if self.fracs:
            return self.fracs.pop()
        return r.choice(FRAC_CORNERS) if r.random() < 0.5 else r.randrange(32)

    def token(self):
        """(zi, zf, zg) for one layer of one token; the run's second and then now and then
        one all zero."""
        r = self.rng
        self.tokens = getattr(self, "tokens", 0) + 1
        if self.tokens == 2 or r.random() < 0.05:
            return self.x("zeros"), self.x("zeros"), self.x("zeros")
        modes = ["mixed"] * 6 + ["pos", "neg", "zeros", "extremes"]
        return self.x(r.choice(modes)), self.x(r.choice(modes)), self.x(r.choice(modes))

    def sequence(self, layers: int, tokens: int):
        """Per layer (lb, gn, gn_frac); per token a list of per-layer (zi, zf, zg)."""
        consts = [(self.lb(), self.gn(), self.frac()) for _ in range(layers)]
        return consts, [[self.token() for _ in range(layers)] for _ in range(tokens)]


def coverage(cov: dict, zi, zf, zg, prev, lb, gn, frac, o, h):
    """Counts the corner cases a vector exercised (what the bench claims to test)."""
    omf = N.rshift_round((N.GATE_ONE - lb) * N.sigmoid(-zf), N.GATE_FRAC)
    gg = N.rshift_round(zg * gn, frac)
    hits = {
        "f = 1 (1 - f = 0)": (omf == 0) & (lb < N.GATE_ONE),
        "zf <= -16 (1 - f at 1 - lb)": zf <= -16 * X_ONE,
        "lb = 0": lb == 0, "lb = 1": lb == N.GATE_ONE, "lb = 1 - 2^-24": lb == N.GATE_ONE - 1,
        # h is a convex mix of h and silu(zi) <= X_MAX - 256: its saturation is unreachable.
        "h >= 2^30": h >= 1 << 30,
        "h kept >= 2^30": (h >= 1 << 30) & (prev >= 1 << 30),
        "gg saturated": (gg > N.X_MAX) | (gg < N.X_MIN),
        "o saturated": (o == N.X_MAX) | (o == N.X_MIN),
        "o = 0, zg != 0": (o == 0) & (zg != 0),
        "zi, zf, zg = +-max": (np.abs(zi) >= N.X_MAX) & (np.abs(zf) >= N.X_MAX)
        & (np.abs(zg) >= N.X_MAX),
        "all zero": (zi == 0) & (zf == 0) & (zg == 0),
        "gn = -32768": gn == -32768, "gn = 32767": gn == 32767,
        "gn_frac = 0": np.full(len(o), frac == 0), "gn_frac >= 15": np.full(len(o), frac >= 15),
    }
    for name, hit in hits.items():
        cov[name] = cov.get(name, 0) + int(np.count_nonzero(hit))


def expected(consts, steps, cov: dict | None = None) -> list[int]:
    """golden.mlgru token by token, layer by layer, from a zero state."""
    h = [None] * len(consts)
    out = []
    for token in steps:
        for layer, (zi, zf, zg) in enumerate(token):
            lb, gn, frac = consts[layer]
            prev = np.zeros_like(zi) if h[layer] is None else h[layer]
            o, h[layer] = G.mlgru(zi, zf, zg, prev, lb, gn, frac)
            out.extend(int(v) for v in o)
            if cov is not None:
                coverage(cov, zi, zf, zg, prev, lb, gn, frac, o, h[layer])
    return out


class CfgSource(StreamSource):
    """The ``cfg`` stream: StreamSource's random gaps, and before a beat, with probability
    ``late_prob``, a wait of up to ``max_wait`` cycles (the queue in the unit takes a beat
    a whole vector ahead, so only a wait longer than that makes a vector wait)."""

    def __init__(self, dut, valid_prob: float = 1.0, late_prob: float = 0.0,
                 max_wait: int = 0, seed: int = 0):
        super().__init__(dut, "cfg", valid_prob, seed)
        self.late_prob, self.max_wait = late_prob, max_wait

    async def send(self, words, drive=None):
        for word in words:
            if self.max_wait and self.rng.random() < self.late_prob:
                await idle(self.dut, self.rng.randrange(1, self.max_wait + 1))
            await super().send([word])


def vectors(sequences, n: int, max_channels: int):
    """The cfg words and the i beats of sequences of (consts, steps), in stream order."""
    layout = mlgru_cfg_layout(max_channels)
    cfgs, beats = [], []
    for consts, steps in sequences:
        for t, token in enumerate(steps):
            for layer, (zi, zf, zg) in enumerate(token):
                lb, gn, frac = consts[layer]
                cfgs.append(pack(layout, n=n, base=layer * n, gn_frac=frac))
                beats += [pack(MLGRUBeat, zi=int(zi[j]), zf=int(zf[j]), zg=int(zg[j]),
                               lb=int(lb[j]), gn=int(gn[j]), first=int(t == 0))
                          for j in range(n)]
    return cfgs, beats


async def drive(source: StreamSource, cfg: CfgSource, sequences, n: int, max_channels: int):
    """Streams the sequences (first tokens flagged): cfg and i beats through their own
    handshakes, at the same time; returns when all were taken."""
    cfgs, beats = vectors(sequences, n, max_channels)
    task = cocotb.start_soon(cfg.send(cfgs))
    await source.send(beats)
    await task


def late_cfgs(cfg: CfgSource, source: StreamSource, n: int, first: int = 0) -> int:
    """How many vectors (after the first, from vector ``first`` on) had their cfg beat taken
    only after the previous vector's last i beat: their beats waited for it if offered."""
    t_cfg, t_in = cfg.accepted[first:], source.accepted[first * n:]
    return sum(t_cfg[v] >= t_in[v * n - 1] for v in range(1, len(t_cfg)))


def compare(dut, beats, want, what: str):
    got = [to_signed(b, N.X_BITS) for b in beats]
    bad = [(k, g, w) for k, (g, w) in enumerate(zip(got, want, strict=True)) if g != w]
    assert not bad, f"{what}: {len(bad)} mismatches of {len(want)}, first: {bad[:5]}"


def sources(dut, rng: random.Random, p: dict, n: int):
    """The i and cfg sources of a run: the pattern's gaps on both, and in the patterns with
    gaps long waits before some cfg beats (``cfg_late``, default 0.3). A wait starts when
    the previous cfg beat was taken, up to two vectors before its own vector can start, so
    it must be longer than two vectors (with gaps and back-pressure) to make that vector
    wait: up to 8 n + 16 cycles."""
    valid_prob, _ = PATTERNS[p.get("pattern", "both")]
    late = p.get("cfg_late", 0.3 if valid_prob < 1 else 0.0)
    source = StreamSource(dut, "i", valid_prob, seed=rng.randrange(1 << 30))
    cfg = CfgSource(dut, valid_prob, late, 8 * n + 16, seed=rng.randrange(1 << 30))
    return source, cfg, late


@cocotb.test()
async def sequences(dut):
    """Random sequences (1 .. max_tokens tokens, 1 .. layers layers) until `transactions`
    channel-transactions, streamed back to back; each sequence clears the state with its
    first token."""
    p = params()
    n, max_channels = p["n"], p["max_channels"]
    layers = p.get("layers", max(1, min(6, max_channels // n)))
    _, ready_prob = PATTERNS[p.get("pattern", "both")]
    rng = random.Random(p.get("seed", 0))
    stim = Stimulus(rng, n)
    await start(dut)
    sink = StreamSink(dut, "o", ready_prob, seed=rng.randrange(1 << 30))
    source, cfg, late = sources(dut, rng, p, n)
    seqs, want, cov = [], [], {}
    while len(want) < p.get("transactions", 2500):
        used = layers if p.get("all_layers") else rng.randint(1, layers)
        consts, steps = stim.sequence(used, rng.randint(1, p.get("max_tokens", 4)))
        seqs.append((consts, steps))
        want += expected(consts, steps, cov)
    await drive(source, cfg, seqs, n, max_channels)
    await sink.expect_no_more(len(want), 2 * MLGRUUnit(max_channels).LATENCY)
    compare(dut, sink.beats, want, "sequences")
    if late:
        cov["cfg beat after the previous vector"] = late_cfgs(cfg, source, n)
    report(dut, "mlgru", len(want), f"o beats of {len(seqs)} sequences, bit-exact, n={n}, "
           f"{p.get('pattern', 'both')}")
    dut._log.info("mlgru: corner cases hit: %s", cov)
    if p.get("check_coverage"):
        missed = [name for name, hits in cov.items() if not hits]
        assert not missed, f"corner cases never exercised: {missed}"


@cocotb.test()
async def reset_mid_vector(dut):
    """A sequence stopped part-way through a vector with beats in flight and the next
    vector's cfg beat queued, then rst: the channel counter restarts at 0, the queued cfg
    beats are dropped (a stale one would give the new vectors the old gn_frac or n), and a
    new sequence (first token flagged) ignores the state the memory still holds."""
    p = params()
    n, max_channels = p["n"], p["max_channels"]
    _, ready_prob = PATTERNS[p.get("pattern", "both")]
    rng = random.Random(p.get("seed", 0) + 1)
    stim = Stimulus(rng, n)
    await start(dut)
    sink = StreamSink(dut, "o", ready_prob, seed=rng.randrange(1 << 30))
    source, cfg, _ = sources(dut, rng, p, n)
    await drive(source, cfg, [stim.sequence(1, 3)], n, max_channels)
    zi, zf, zg = stim.token()
    consts, _ = stim.sequence(1, 1)
    lb, gn, _ = consts[0]
    part = rng.randrange(1, n) if n > 1 else 0
    # the stopped vector's cfg beat and the next one's, which the unit queues behind it
    layout = mlgru_cfg_layout(max_channels)
    await cfg.send([pack(layout, n=n, base=0, gn_frac=f) for f in (3, 29)])
    await source.send([pack(MLGRUBeat, zi=int(zi[j]), zf=int(zf[j]), zg=int(zg[j]),
                            lb=int(lb[j]), gn=int(gn[j]), first=0) for j in range(part)])
    dut.rst.value = 1
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    mark = len(sink.beats)
    consts, steps = stim.sequence(1, 3)
    await drive(source, cfg, [(consts, steps)], n, max_channels)
    want = expected(consts, steps)
    await sink.expect_no_more(mark + len(want), 2 * MLGRUUnit(max_channels).LATENCY)
    compare(dut, sink.beats[mark:], want, "after reset")
    report(dut, "mlgru", len(want), "after a reset mid-vector")


DOC_LATENCY = 35            # the docstring: "35 with a 6-cycle Sigmoid and 4-cycle products"
DOC_MIN_DISTANCE = 8        # "one channel per cycle for n >= MIN_DISTANCE (8)"


@cocotb.test()
async def timing(dut):
    """No gaps, no back-pressure, every cfg beat offered as soon as the unit takes it.
    n = 16: three tokens back to back are taken one channel per cycle, the first beat at
    the edge after the first cfg beat's (the cfg beats cost no cycle), each o beat exactly
    LATENCY cycles after the edge that accepted its i beat. n = 3 (< MIN_DISTANCE): the
    interlock holds each vector's first beat, so vectors start n + MIN_DISTANCE - 1 cycles
    apart, and the latency stays LATENCY."""
    p = params()
    max_channels = p["max_channels"]
    unit = MLGRUUnit(max_channels)
    assert unit.LATENCY == DOC_LATENCY and unit.MIN_DISTANCE == DOC_MIN_DISTANCE, \
        (unit.LATENCY, unit.MIN_DISTANCE)
    rng = random.Random(11)
    await start(dut)
    sink = StreamSink(dut, "o")
    source, cfg = StreamSource(dut, "i"), CfgSource(dut)
    want, checked = [], 0
    for n, tokens in ((16, 3), (3, 5)):
        stim = Stimulus(rng, n)
        consts, steps = stim.sequence(1, tokens)
        first, first_cfg = len(source.accepted), len(cfg.accepted)
        await drive(source, cfg, [(consts, steps)], n, max_channels)
        want += expected(consts, steps)
        await sink.expect_no_more(len(want), 2 * unit.LATENCY)
        t_in, t_out = source.accepted[first:], sink.monitor.transfers[first:]
        latencies = sorted({b - a for a, b in zip(t_in, t_out, strict=True)})
        starts = [t_in[v * n] for v in range(tokens)]
        periods = sorted({b - a for a, b in zip(starts, starts[1:], strict=False)})
        dut._log.info("mlgru n=%d: latency %s cycles (LATENCY %d), a vector every %s cycles",
                      n, latencies, unit.LATENCY, periods)
        assert latencies == [unit.LATENCY]
        assert t_in[0] == cfg.accepted[first_cfg] + 1
        if n >= unit.MIN_DISTANCE:
            assert t_in == list(range(t_in[0], t_in[0] + n * tokens))
        assert periods == [n if n >= unit.MIN_DISTANCE else n + unit.MIN_DISTANCE - 1]
        checked += n * tokens
    compare(dut, sink.beats, want, "timing")
    report(dut, "mlgru", checked, "timing")
