"""cocotb bench: TernaryEngine against golden.ternary_matvec, one acc beat per row group.

Weight words come from ``numerics.engine_word_ints`` (the project's one packing of 2-bit
codes into engine words), and many products use the shipped model's exported codes
(``models/default.mmf``: slices of every projection of every layer; the full matrices in
the ``full`` suite). Each vector's ``cfg`` beat (K, row groups) goes through a real
handshake: early (offered as soon as the previous one went, with the pattern's gaps) or,
for a share ``cfg_late`` of the vectors, late (offered 1..40 cycles after the vector's
first ``act`` beat was); its payload is random garbage while ``cfg.valid`` is low. Every
run checks that each cfg beat transfers at the edge of its vector's first ``act`` beat.

Suites (MMF_PARAMS ``suite``):

- ``random``: corner products (all-zero codes, all +1 / all -1 against q = 127 and -128,
  a single non-zero, alternating signs, K = 1, K = max_k), then random products (K in
  1..15, below and around RESULT_TURNAROUND, or 16..64; 1..8 row groups per vector;
  uniform / sparse / dense / the model's codes) until ``groups`` row groups, back to back,
  under one of ``tb.PATTERNS`` (gaps on ``cfg``, ``act`` and ``weights``, back-pressure on
  ``acc``), ``cfg_late`` (default 0.3) of the cfg beats late.
- ``full``: the default model's matrices at full rate, cfg always available (as in all
  of ``timing``): i_proj (256 x 256) alone, four 256 x 256 projections back to back, and
  down_proj (256 x 768). Logs cycles against the
  ideal ``d * d / lanes`` and checks the steady state reaches 95 % of it (it is exact:
  one word per cycle, plus the pipeline latency once).

The ``timing`` test asserts the docstring's figures (see there).
"""

import random
from pathlib import Path

import cocotb
import numpy as np
import tb
from tb import PATTERNS, StreamSink, StreamSource, idle, pack, params, report, start, to_signed

from mmfree_fpga import golden as G
from mmfree_fpga import numerics as N
from mmfree_hw.engine import TernaryEngine, engine_cfg_layout

LATENCY = TernaryEngine.LATENCY
TURNAROUND = TernaryEngine.RESULT_TURNAROUND
DOC_LATENCY, DOC_TURNAROUND = 5, 6      # the docstring's numbers
WEIGHTS_AFTER_ACT = 1       # "a weight word is taken ... from the cycle after the act beat"
MAX_GROUPS = 1 << 16        # TernaryEngine's default, which tests/test_sim_engine.py builds
CFG_DELAY = (1, 40)         # a late cfg beat: cycles after its vector's first act beat
MODEL = Path(__file__).resolve().parents[1] / "sw" / "mmfree_fpga" / "models" / "default.mmf"
PROJECTIONS = ["i_proj", "f_proj", "g_proj", "o_proj", "gate_proj", "down_proj"]


def model_codes() -> list[np.ndarray]:
    """The shipped model's ternary codes, int8 [N, K], every projection of every layer."""
    if not hasattr(model_codes, "cache"):
        layout = G.GoldenModel(str(MODEL)).layout
        model_codes.cache = [getattr(layer, name).codes for layer in layout.layers
                             for name in PROJECTIONS]
    return model_codes.cache


def model_slice(rng: np.random.Generator, rows: int, k: int) -> np.ndarray:
    """``rows`` rows and ``k`` consecutive columns of one of the model's matrices."""
    codes = model_codes()[int(rng.integers(len(model_codes())))]
    r = rng.choice(codes.shape[0], size=rows, replace=rows > codes.shape[0])
    c = int(rng.integers(codes.shape[1] - k + 1))
    return codes[np.sort(r), c:c + k].astype(np.int64)


def lanes_of(beat: int, lanes: int) -> list[int]:
    mask = (1 << N.ACC_BITS) - 1
    return [to_signed((beat >> N.ACC_BITS * lane) & mask, N.ACC_BITS) for lane in range(lanes)]


def corner_products(lanes: int, max_k: int, rng: np.random.Generator):
    """(q, codes) pairs at the edges of the format."""
    out = []
    k = min(max_k, 16)
    for value in (127, -128):
        q = np.full(max_k, value)
        out.append((q, np.ones((lanes, max_k), dtype=np.int64)))     # K = max_k, extreme sums
        out.append((q, -np.ones((2 * lanes, max_k), dtype=np.int64)))
    out.append((rng.integers(-128, 128, size=k), np.zeros((lanes, k), dtype=np.int64)))
    single = np.zeros((lanes, k), dtype=np.int64)
    single[lanes // 2, k // 3] = -1
    out.append((np.full(k, -128), single))
    alternating = np.fromfunction(lambda r, c: 1 - 2 * ((r + c) % 2), (lanes, k), dtype=int)
    out.append((rng.integers(-128, 128, size=k), alternating.astype(np.int64)))
    for _ in range(3):                                          # K = 1, several groups
        out.append((rng.integers(-128, 128, size=1), rng.integers(-1, 2, size=(3 * lanes, 1))))
    out.append((np.array([-128]), -np.ones((lanes, 1), dtype=np.int64)))
    return out


def random_products(lanes: int, max_k: int, groups: int, rng: np.random.Generator):
    """Random products until ``groups`` row groups: a third with K < 16 (K = 2..5 take
    RESULT_TURNAROUND cycles per group), a third on the model's own codes."""
    out, total = [], 0
    while total < groups:
        if rng.random() < 1 / 3:
            k = int(rng.integers(1, min(15, max_k) + 1))
        else:
            k = int(rng.integers(min(16, max_k), min(64, max_k) + 1))
        g = int(min(rng.integers(1, 9), groups - total))
        kind = rng.choice(["uniform", "sparse", "dense", "extreme", "model", "model"])
        if kind == "extreme":
            q = rng.choice(np.array([-128, 127, -1, 0, 1]), size=k)
        else:
            q = rng.integers(-128, 128, size=k)
        if kind == "model":
            codes = model_slice(rng, g * lanes, k)
        else:
            p_zero = {"uniform": 1 / 3, "sparse": 0.9, "dense": 0.0, "extreme": 0.3}[kind]
            sign = rng.choice(np.array([-1, 1]), size=(g * lanes, k))
            codes = np.where(rng.random((g * lanes, k)) < p_zero, 0, sign)
        out.append((q, codes))
        total += g
    return out


class Monitor:
    """Cycle numbers of accepted beats on each stream (for the throughput figures)."""

    def __init__(self, engine):
        self.engine = engine

    @property
    def cfg(self):
        return self.engine.cfg.accepted

    @property
    def act(self):
        return self.engine.act.accepted

    @property
    def weights(self):
        return self.engine.weights.accepted

    @property
    def acc(self):
        return self.engine.sink.monitor.transfers


class Engine:
    """The engine's four streams, driven under one gap/back-pressure pattern; a share
    ``cfg_late`` of the cfg beats late (or ``cfg_at``, when set, for a fixed delay)."""

    def __init__(self, dut, lanes, max_k, valid_prob=1.0, ready_prob=1.0, seed=0,
                 cfg_late=0.0):
        rng = random.Random(seed)
        self.dut, self.lanes = dut, lanes
        self.cfg_layout = engine_cfg_layout(max_k, MAX_GROUPS)
        assert len(dut.cfg__payload) == self.cfg_layout.size
        self.garbage = random.Random(rng.randrange(1 << 30))
        self.late = random.Random(rng.randrange(1 << 30))
        self.cfg_late, self.cfg_at = cfg_late, None
        self.sink = StreamSink(dut, "acc", ready_prob, seed=rng.randrange(1 << 30))
        self.act = StreamSource(dut, "act", valid_prob, seed=rng.randrange(1 << 30))
        self.weights = StreamSource(dut, "weights", valid_prob, seed=rng.randrange(1 << 30))
        self.cfg = StreamSource(dut, "cfg", valid_prob, seed=rng.randrange(1 << 30))
        self.offered: list[int] = []     # cycle each vector's first act beat was offered
        self.checked = 0

    def scramble(self, i):
        """The ``drive`` hook of the cfg source: garbage payload while valid is low."""
        if i is None:
            self.dut.cfg__payload.value = self.garbage.getrandbits(self.cfg_layout.size)

    def mark(self, v: int):
        """The ``drive`` hook of the act source: note when vector v's first beat is offered."""
        def drive(i):
            if i == 0 and len(self.offered) == v:
                self.offered.append(tb.cycle())
        return drive

    async def feed_activations(self, products, first: int):
        for v, (q, _) in enumerate(products):
            await self.act.send([int(x) & 0xFF for x in q], drive=self.mark(first + v))

    async def feed_cfg(self, products, first: int):
        for i, (q, codes) in enumerate(products):
            word = pack(self.cfg_layout, k=len(q), groups=codes.shape[0] // self.lanes)
            delay, v = self.cfg_at, first + i
            if delay is None and self.late.random() < self.cfg_late:
                delay = self.late.randint(*CFG_DELAY)
            if delay is not None:        # d cycles after the first act beat was offered
                while len(self.offered) <= v or tb.cycle() < self.offered[v] + delay:
                    self.scramble(None)
                    await idle(self.dut, 1)
            await self.cfg.send([word], drive=self.scramble)

    async def feed_weights(self, products):
        await self.weights.send([w for _, codes in products
                                 for w in N.engine_word_ints(codes, self.lanes)])

    async def run(self, products, weights: bool = True) -> int:
        """Stream (q, codes) products through; check every acc beat against the golden,
        that no beat follows the last expected one, and that each cfg beat went with its
        vector's first act beat."""
        lanes = self.lanes
        first, a0, c0 = len(self.sink.beats), len(self.act.accepted), len(self.cfg.accepted)
        v0 = len(self.offered)
        cocotb.start_soon(self.feed_activations(products, v0))
        cocotb.start_soon(self.feed_cfg(products, v0))
        if weights:
            cocotb.start_soon(self.feed_weights(products))
        want = [list(G.ternary_matvec(codes, q)[g * lanes:(g + 1) * lanes])
                for q, codes in products for g in range(codes.shape[0] // lanes)]
        await self.sink.expect_no_more(first + len(want), 2 * LATENCY + TURNAROUND)
        beats = self.sink.beats[first:]
        mismatches = [(i, got, w) for i, (beat, w) in enumerate(zip(beats, want, strict=True))
                      if (got := lanes_of(beat, lanes)) != w]
        assert not mismatches, (f"{len(mismatches)} of {len(want)} wrong, "
                                f"first: {mismatches[:2]}")
        starts = np.cumsum([0] + [len(q) for q, _ in products[:-1]])
        firsts = [self.act.accepted[a0 + int(i)] for i in starts]
        assert self.cfg.accepted[c0:] == firsts, "a cfg beat not taken with its first act beat"
        self.checked += len(want)
        return len(want)


async def suite_random(dut, p):
    lanes, max_k, pattern = p["lanes"], p["max_k"], p.get("pattern", "both")
    valid_prob, ready_prob = PATTERNS[pattern]
    rng = np.random.default_rng(p.get("seed", 0))
    corners = corner_products(lanes, max_k, rng)
    products = corners + random_products(lanes, max_k, p["groups"], rng)
    cfg_late = p.get("cfg_late", 0.3)
    engine = Engine(dut, lanes, max_k, valid_prob, ready_prob, p.get("seed", 0), cfg_late)
    n = await engine.run(products)
    ks = sorted({len(q) for q, _ in products})
    words = sum(codes.size // lanes for _, codes in products)
    report(dut, "engine", n, f"acc beats (row groups) of {len(products)} products "
           f"({len(corners)} corner), lanes={lanes}, K in {ks[0]}..{ks[-1]} "
           f"({len(ks)} values), {words} weight words, bit-exact, {pattern}, "
           f"{cfg_late:.0%} of cfg beats late")


async def suite_full(dut, p):
    lanes, d, seed = p["lanes"], 256, p.get("seed", 0)
    rng = np.random.default_rng(seed)
    layer = G.GoldenModel(str(MODEL)).layout.layers[0]

    def product(codes):
        return rng.integers(-128, 128, size=codes.shape[1]), codes.astype(np.int64)

    ideal = d * d // lanes
    engine = Engine(dut, lanes, p["max_k"], seed=seed)  # full rate, no back-pressure
    mon = Monitor(engine)

    # One d x d product on its own: its K activations load, then d * d / lanes words.
    await engine.run([product(layer.i_proj.codes)])
    alone = mon.acc[-1] - mon.act[0] + 1
    compute = mon.acc[-1] - mon.weights[0] + 1
    dut._log.info("%dx%d lanes=%d alone: %d cycles first weight -> last acc beat, ideal %d: "
                  "%.1f %%; %d cycles counting its activation load (%d beats): %.1f %%",
                  d, d, lanes, compute, ideal, 100 * ideal / compute, alone, d,
                  100 * ideal / alone)
    assert compute == ideal + LATENCY

    # Back to back: each vector loads into the free bank while the previous one runs.
    square = [layer.i_proj.codes, layer.f_proj.codes, layer.g_proj.codes, layer.o_proj.codes]
    n = len(square)
    first_act, first_word = len(mon.act), len(mon.weights)
    await engine.run([product(c) for c in square])
    accepted = mon.weights[first_word:]
    steady = mon.acc[-1] - accepted[0] + 1
    total = mon.acc[-1] - mon.act[first_act] + 1
    dut._log.info("%d x %dx%d back to back, lanes=%d: %d cycles first weight -> last acc "
                  "(ideal %d): %.2f %%; %d cycles counting the first (unhidden) load: %.1f %%",
                  n, d, d, lanes, steady, n * ideal, 100 * n * ideal / steady, total,
                  100 * n * ideal / total)
    assert accepted == list(range(accepted[0], accepted[0] + n * ideal)), "a bubble"
    assert n * ideal / steady >= 0.95

    # down_proj: 256 outputs from the 768-long GLU vector.
    first_word = len(mon.weights)
    await engine.run([product(layer.down_proj.codes)])
    cycles = mon.acc[-1] - mon.weights[first_word] + 1
    dut._log.info("down_proj 256x768 lanes=%d: %d cycles first weight -> last acc beat "
                  "(ideal %d)", lanes, cycles, d * 768 // lanes)
    assert cycles == d * 768 // lanes + LATENCY
    report(dut, "engine", engine.checked, f"acc beats of the model's matrices, lanes={lanes}")


@cocotb.test()
async def engine(dut):
    p = params()
    await start(dut)
    await {"random": suite_random, "full": suite_full}[p.get("suite", "random")](dut, p)


@cocotb.test()
async def timing(dut):
    """The docstring's figures, no gaps and no back-pressure unless stated, cfg always
    available unless stated:

    - a cfg beat costs no cycle: a vector's first act beat is accepted the cycle it is
      offered, with its cfg beat; a cfg beat offered d cycles after that first act beat
      holds it d cycles, then both go at once and nothing else changes;
    - an isolated product of G groups, activations and weights offered together: its first
      word is accepted 1 cycle after its first act beat, and group 0 follows the act beats
      column by column; each acc beat is valid LATENCY (5) cycles after the edge that accepted its
      group's last word; groups finish max(K, RESULT_TURNAROUND (6)) cycles apart, so the
      product takes K + 5 + (G - 1) max(K, 6) cycles from its first word to its last acc
      beat: G K + 5 for K >= 6, 6 cycles per group for K = 1..5;
    - products back to back (K >= 6): one word per cycle, no bubble between vectors;
    - a blocked ``acc`` stops ``weights`` at the next group's last column (2K - 1 words);
    - ``act.ready`` is low while both banks hold a vector (2 vectors load, a third waits).
    """
    p = params()
    lanes = p["lanes"]
    rng = np.random.default_rng(p.get("seed", 3))
    assert (LATENCY, TURNAROUND) == (DOC_LATENCY, DOC_TURNAROUND)
    await start(dut)
    engine = Engine(dut, lanes, p["max_k"], seed=3)
    mon = Monitor(engine)

    def product(k, groups):
        return rng.integers(-128, 128, size=k), model_slice(rng, groups * lanes, k)

    figures = []
    for k in [*range(1, 17), 31, 64]:
        for groups in (1, 3):
            a0, w0, c0 = len(mon.act), len(mon.weights), len(mon.acc)
            await engine.run([product(k, groups)])
            act, words = mon.act[a0:], mon.weights[w0:]
            assert act[0] == engine.offered[-1], "the cfg beat cost a cycle"
            acc = engine.sink.monitor.presented[c0:]
            lasts = [words[(g + 1) * k - 1] for g in range(groups)]
            latency = sorted({b - a for a, b in zip(lasts, acc, strict=True)})
            spacing = sorted({b - a for a, b in zip(acc, acc[1:], strict=False)})
            behind = sorted({words[c] - act[c] for c in range(k)})
            figures.append((k, groups, behind, latency, spacing,
                            acc[-1] - words[0] + 1))
    dut._log.info("engine timing (K, G, act -> word of each column, latency, group spacing, total "
                  "cycles): %s", figures)
    for k, groups, load, latency, spacing, total in figures:
        per_group = max(k, TURNAROUND)
        assert load == [WEIGHTS_AFTER_ACT], (k, groups, load)
        assert latency == [LATENCY], (k, groups, latency)
        assert spacing == ([per_group] if groups > 1 else []), (k, groups, spacing)
        assert total == k + LATENCY + (groups - 1) * per_group, (k, groups, total)
        if k >= TURNAROUND:
            assert total == groups * k + LATENCY

    # A late cfg beat holds the first act beat exactly as long, and changes nothing else.
    late = []
    for delay in (1, 4, 30):
        k, groups = 16, 2
        engine.cfg_at = delay
        a0, w0, c0 = len(mon.act), len(mon.weights), len(mon.acc)
        await engine.run([product(k, groups)])
        act, words = mon.act[a0:], mon.weights[w0:]
        acc = engine.sink.monitor.presented[c0:]
        late.append((delay, act[0] - engine.offered[-1], act[-1] - act[0] + 1,
                     sorted({words[c] - act[c] for c in range(k)}), acc[-1] - words[0] + 1))
        assert late[-1] == (delay, delay, k, [WEIGHTS_AFTER_ACT], groups * k + LATENCY), late
    engine.cfg_at = None
    dut._log.info("engine: late cfg (delay, first act beat held, load cycles, act -> word, "
                  "total): %s", late)

    # Back to back, K >= 6: one word per cycle across vectors.
    w0 = len(mon.weights)
    products = [product(int(rng.integers(6, 40)), int(rng.integers(1, 4))) for _ in range(6)]
    await engine.run(products)
    words = mon.weights[w0:]
    assert words == list(range(words[0], words[0] + len(words))), "a bubble between vectors"
    assert len(words) == sum(codes.size // lanes for _, codes in products)

    # A blocked acc: group 0's K words and group 1's first K - 1, then weights stop.
    k = 8
    engine.sink.ready_prob = 0.0
    w0 = len(mon.weights)
    blocked = cocotb.start_soon(engine.run([product(k, 3)]))
    await idle(dut, 3 * k + 40)
    stopped = len(mon.weights) - w0
    engine.sink.ready_prob = 1.0
    await blocked
    # Two vectors fill both banks; a third waits (no weights yet), then all three run.
    a0 = len(mon.act)
    products = [product(k, 1) for _ in range(3)]
    held = cocotb.start_soon(engine.run(products, weights=False))
    await idle(dut, 3 * k + 40)
    loaded = len(mon.act) - a0
    cocotb.start_soon(engine.feed_weights(products))
    await held
    dut._log.info("engine: with acc blocked %d words accepted (K = %d); with no weights "
                  "%d act beats loaded (K = %d)", stopped, k, loaded, k)
    assert stopped == 2 * k - 1
    assert loaded == 2 * k
    report(dut, "engine", engine.checked, f"timing, lanes={lanes}")
