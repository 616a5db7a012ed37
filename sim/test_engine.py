"""cocotb bench: TernaryEngine against golden.ternary_matvec, one acc beat per row group.

Suites (MMF_PARAMS ``suite``):

- ``random``: corner products (all-zero codes, all +1 / all -1 against q = 127 and -128,
  a single non-zero, alternating signs, K = 1, K = max_k), then random products (K in
  16..64, 1..8 row groups per vector, uniform / sparse / dense codes) until ``groups``
  row groups, under one of ``tb.PATTERNS`` (gaps on ``act`` and ``weights``, back-pressure
  on ``acc``).
- ``full``: the default model's shapes at full rate: a 256 x 256 product alone, four
  256 x 256 products back to back, and down_proj (256 x 768). Logs cycles against the
  ideal ``d * d / lanes`` and checks the steady state reaches 95 % of it (it is exact:
  one word per cycle, plus the pipeline latency once).
"""

import random

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge
from tb import PATTERNS, StreamSink, StreamSource, params, start, to_signed

from mmfree_fpga import golden as G
from mmfree_fpga import numerics as N
from mmfree_hw.engine import TernaryEngine

BITS = {0: 0b00, 1: 0b01, -1: 0b11}
LATENCY = TernaryEngine.LATENCY


def weight_words(codes: np.ndarray, lanes: int) -> list[int]:
    """codes [groups * lanes, K] -> words: group by group, column by column, lane l at 2l."""
    bits = np.where(codes == 1, BITS[1], np.where(codes == -1, BITS[-1], 0)).astype(object)
    shifts = np.array([1 << 2 * lane for lane in range(lanes)], dtype=object)
    out = []
    for g in range(codes.shape[0] // lanes):
        block = bits[g * lanes:(g + 1) * lanes]            # [lanes, K]
        out += list(shifts @ block)
    return [int(w) for w in out]


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
    out, total = [], 0
    while total < groups:
        k = int(rng.integers(min(16, max_k), min(64, max_k) + 1))
        g = int(min(rng.integers(1, 9), groups - total))
        kind = rng.choice(["uniform", "sparse", "dense", "extreme"])
        if kind == "extreme":
            q = rng.choice(np.array([-128, 127, -1, 0, 1]), size=k)
        else:
            q = rng.integers(-128, 128, size=k)
        p_zero = {"uniform": 1 / 3, "sparse": 0.9, "dense": 0.0, "extreme": 0.3}[kind]
        sign = rng.choice(np.array([-1, 1]), size=(g * lanes, k))
        codes = np.where(rng.random((g * lanes, k)) < p_zero, 0, sign)
        out.append((q, codes))
        total += g
    return out


class Monitor:
    """Cycle numbers of accepted beats on each stream (for the throughput figures)."""

    def __init__(self, dut):
        self.dut = dut
        self.cycle = 0
        self.act, self.weights, self.acc = [], [], []
        cocotb.start_soon(self._run())

    async def _run(self):
        d = self.dut
        while True:
            await ReadOnly()
            if d.act__valid.value and d.act__ready.value:
                self.act.append(self.cycle)
            if d.weights__valid.value and d.weights__ready.value:
                self.weights.append(self.cycle)
            if d.acc__valid.value and d.acc__ready.value:
                self.acc.append(self.cycle)
            await RisingEdge(d.clk)
            self.cycle += 1


class Engine:
    """The engine's three streams, driven under one gap/back-pressure pattern."""

    def __init__(self, dut, lanes, valid_prob=1.0, ready_prob=1.0, seed=0):
        rng = random.Random(seed)
        self.dut, self.lanes = dut, lanes
        self.sink = StreamSink(dut, "acc", ready_prob, seed=rng.randrange(1 << 30))
        self.act = StreamSource(dut, "act", valid_prob, seed=rng.randrange(1 << 30))
        self.weights = StreamSource(dut, "weights", valid_prob, seed=rng.randrange(1 << 30))

    async def run(self, products) -> int:
        """Stream (q, codes) products through; check every acc beat against the golden."""
        dut, lanes = self.dut, self.lanes

        async def feed_activations():
            for q, codes in products:
                # k and groups are sampled with a vector's first act beat.
                dut.k.value = len(q)
                dut.groups.value = codes.shape[0] // lanes
                await self.act.send([int(v) & 0xFF for v in q])

        first = len(self.sink.beats)
        cocotb.start_soon(feed_activations())
        cocotb.start_soon(self.weights.send([w for _, codes in products
                                             for w in weight_words(codes, lanes)]))
        want = [list(G.ternary_matvec(codes, q)[g * lanes:(g + 1) * lanes])
                for q, codes in products for g in range(codes.shape[0] // lanes)]
        beats = (await self.sink.wait_for(first + len(want)))[first:]
        for _ in range(2 * LATENCY):                  # nothing more may come out
            await RisingEdge(dut.clk)
        assert len(self.sink.beats) == first + len(want), "extra acc beats"
        mismatches = [(i, got, w) for i, (beat, w) in enumerate(zip(beats, want, strict=True))
                      if (got := lanes_of(beat, lanes)) != w]
        assert not mismatches, (f"{len(mismatches)} of {len(want)} wrong, "
                                f"first: {mismatches[:2]}")
        return len(want)


async def suite_random(dut, p):
    lanes, max_k, pattern = p["lanes"], p["max_k"], p.get("pattern", "both")
    valid_prob, ready_prob = PATTERNS[pattern]
    rng = np.random.default_rng(p.get("seed", 0))
    corners = corner_products(lanes, max_k, rng)
    products = corners + random_products(lanes, max_k, p["groups"], rng)
    engine = Engine(dut, lanes, valid_prob, ready_prob, p.get("seed", 0))
    n = await engine.run(products)
    words = sum(codes.size // lanes for _, codes in products)
    dut._log.info("engine lanes=%d: %d row groups (%d corner products), %d weight words, "
                  "bit-exact (%s)", lanes, n, len(corners), words, pattern)


async def suite_full(dut, p):
    lanes, d, seed = p["lanes"], 256, p.get("seed", 0)
    rng = np.random.default_rng(seed)

    def product(rows, k):
        return rng.integers(-128, 128, size=k), rng.integers(-1, 2, size=(rows, k))

    ideal = d * d // lanes
    engine = Engine(dut, lanes, seed=seed)          # full rate, no back-pressure
    mon = Monitor(dut)

    # One d x d product on its own: its K activations load, then d * d / lanes words.
    await engine.run([product(d, d)])
    alone = mon.acc[-1] - mon.act[0] + 1
    compute = mon.acc[-1] - mon.weights[0] + 1
    dut._log.info("%dx%d lanes=%d alone: %d cycles first weight -> last acc beat, ideal %d: "
                  "%.1f %%; %d cycles counting its activation load (%d beats): %.1f %%",
                  d, d, lanes, compute, ideal, 100 * ideal / compute, alone, d,
                  100 * ideal / alone)
    assert compute == ideal + LATENCY

    # Back to back: each vector loads into the free bank while the previous one runs.
    n = 4
    first_act, first_word = len(mon.act), len(mon.weights)
    await engine.run([product(d, d) for _ in range(n)])
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
    await engine.run([product(d, 768)])
    cycles = mon.acc[-1] - mon.weights[first_word] + 1
    dut._log.info("down_proj 256x768 lanes=%d: %d cycles first weight -> last acc beat "
                  "(ideal %d)", lanes, cycles, d * 768 // lanes)
    assert cycles == d * 768 // lanes + LATENCY


@cocotb.test()
async def engine(dut):
    p = params()
    await start(dut)
    await {"random": suite_random, "full": suite_full}[p.get("suite", "random")](dut, p)
