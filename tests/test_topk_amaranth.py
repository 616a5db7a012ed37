"""TopK in Amaranth's simulator against ``golden.topk``: random vectors, ties, extremes,
k past the vector's length and past max_k, k = 0, gaps and back-pressure, and the stated
cycle counts. The long regression is the cocotb bench (test_sim_topk)."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from mmfree_fpga import golden as G
from mmfree_fpga import numerics as N
from mmfree_hw.topk import TopK
from util import send


def expected(logits, k, max_k):
    """The unit's contract: golden.topk for min(k, max_k, len) candidates (none for 0)."""
    kk = min(k, max_k, len(logits))
    if kk == 0:
        return []
    ids, values = G.topk(np.asarray(logits, dtype=np.int64), kk)
    return [(int(i), int(v)) for i, v in zip(ids, values, strict=True)]


def run_topk(dut, vectors, valid_prob=1.0, ready_prob=1.0, seed=0):
    """vectors: (k, logits) pairs. Returns (candidates per vector, log of transfer edges)."""
    rng = random.Random(seed)
    want = sum(len(expected(v, k, dut.max_k)) for k, v in vectors)
    out, log = [], {"cfg": [], "i": [], "o": []}

    async def source(ctx, port, beats, name, prng):
        await send(ctx, port, beats, valid_prob, prng, log[name])

    async def cfg_bench(ctx):
        await source(ctx, dut.cfg, [{"k": k} for k, _ in vectors], "cfg",
                     random.Random(rng.random()))

    async def i_bench(ctx):
        beats = [{"logit": int(x), "last": int(j == len(v) - 1)}
                 for _, v in vectors for j, x in enumerate(v)]
        await source(ctx, dut.i, beats, "i", random.Random(rng.random()))

    async def o_bench(ctx):
        orng = random.Random(rng.random())
        edge = 0
        while len(out) < want:
            ready = int(orng.random() < ready_prob)
            ctx.set(dut.o.ready, ready)
            *_, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            edge += 1
            if valid and ready:
                out.append((int(payload.id), int(payload.logit), int(payload.last)))
                log["o"].append(edge)
            assert edge < 100_000, "no progress"
        ctx.set(dut.o.ready, 1)
        for _ in range(3 * dut.max_k + 20):
            *_, valid = await ctx.tick().sample(dut.o.valid)
            assert not valid, "an extra candidate"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(cfg_bench, background=True)
    sim.add_testbench(i_bench, background=True)
    sim.add_testbench(o_bench)
    sim.run()
    groups, cur = [], []
    for i, v, last in out:
        cur.append((i, v))
        if last:
            groups.append(cur)
            cur = []
    assert not cur, "candidates after the last 'last'"
    return groups, log


def check(dut, vectors, **kw):
    groups, log = run_topk(dut, vectors, **kw)
    want = [e for k, v in vectors if (e := expected(v, k, dut.max_k))]
    assert groups == want
    return log


@pytest.mark.parametrize("valid_prob,ready_prob", [(1.0, 1.0), (0.6, 1.0), (1.0, 0.5),
                                                   (0.7, 0.6)])
def test_random_vectors(valid_prob, ready_prob):
    rng = np.random.default_rng(1)
    max_k = 8
    vectors = []
    for _ in range(30):
        n = int(rng.integers(1, 40))
        k = int(rng.integers(1, max_k + 1))
        span = rng.choice([3, 1000, 1 << 31])          # many ties, few, none
        logits = rng.integers(-span, span, size=n)
        vectors.append((k, logits))
    check(TopK(max_k), vectors, valid_prob=valid_prob, ready_prob=ready_prob, seed=2)


def test_ties_extremes_and_edges():
    max_k = 8
    vectors = [
        (1, [5]),                                       # one element
        (1, [3, 7, 7, 1]),                              # argmax, tie to the lower id
        (8, [0] * 20),                                  # all equal: ids 0..7
        (4, [N.X_MIN, N.X_MAX, N.X_MIN, N.X_MAX, 0]),
        (3, [N.X_MIN] * 5),
        (8, [1, 2, 3]),                                 # k > length: all three, sorted
        (8, list(range(30))),                           # ascending: each new one in front
        (8, list(range(30, 0, -1))),                    # descending: appended at the tail
        (15, list(range(12))),                          # k > max_k: max_k candidates
        (0, [1, 2, 3]),                                 # k = 0: consumed, nothing out
        (2, [-1, -1, N.X_MAX, -1, N.X_MAX]),
    ]
    check(TopK(max_k), vectors)


def test_k_equals_max_k_one_cell():
    check(TopK(1), [(1, [4, 9, 9, 2]), (1, [N.X_MIN]), (1, [7, N.X_MAX, N.X_MAX])])


def cycle_figures(vectors, log, max_k):
    """Check the docstring's cycle counts on a run at full rate; returns, per vector,
    (n, kk, first candidate - last element, cfg beat to next cfg beat)."""
    figures, i0, o0 = [], 0, 0
    free = None                  # the cycle the previous vector's reads are all issued
    for j, (k, v) in enumerate(vectors):
        n, kk = len(v), min(k, max_k, len(v))
        i, o = log["i"][i0:i0 + n], log["o"][o0:o0 + kk]
        i0, o0 = i0 + n, o0 + kk
        assert i[0] == log["cfg"][j] + 1                     # i.ready 1 cycle after cfg
        assert i == list(range(i[0], i[0] + n))              # one element per cycle
        assert o == list(range(o[0], o[0] + kk))             # one candidate per cycle
        start = i[-1] + 1 if free is None else max(i[-1] + 1, free)   # the shift waits
        assert o[0] == start + max_k + 3
        if start == i[-1] + 1:
            assert o[0] - i[-1] == max_k + 4                 # LATENCY
        if j + 1 < len(vectors):
            assert log["cfg"][j + 1] == start + max_k + 1
            figures.append((n, kk, o[0] - i[-1], log["cfg"][j + 1] - log["cfg"][j]))
        free = o[0] - 2 + kk
    return figures


def test_cycle_counts():
    """No gaps, no back-pressure: i.ready one cycle after the cfg beat, one element per
    cycle, the first candidate LATENCY (max_k + 4) cycles after the last element, one per
    cycle, the next cfg beat max_k + 2 cycles after the last element (n + max_k + 2 per
    vector), unless the previous vector's candidates still occupy the result memory: then
    the shift waits for them."""
    max_k = 8
    dut = TopK(max_k)
    assert dut.LATENCY == max_k + 4 and dut.CYCLES_PER_VECTOR_EXTRA == max_k + 2
    rng = np.random.default_rng(3)
    vectors = [(5, rng.integers(-50, 50, size=20)), (8, rng.integers(-3, 3, size=11)),
               (1, rng.integers(-9, 9, size=6)), (8, rng.integers(-9, 9, size=3)),
               (8, rng.integers(-9, 9, size=2)), (2, [4, 4, 4])]
    log = check(dut, vectors)
    figures = cycle_figures(vectors, log, max_k)
    assert figures[0] == (20, 5, max_k + 4, 20 + max_k + 2)
    assert figures[1] == (11, 8, max_k + 4, 11 + max_k + 2)
    assert figures[2][3] > 6 + max_k + 2                    # waited for the 8 before it
