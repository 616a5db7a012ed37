"""cocotb bench: TopK against ``golden.topk`` (ids sorted by (-logit, id)).

The unit returns ``min(k, max_k, length)`` candidates (golden.topk refuses k > length; the
hardware cannot refuse, so it returns the whole vector sorted; k = 0 returns nothing);
the expected values are ``golden.topk(logits, min(k, max_k, length))``.

Suites (MMF_PARAMS ``suite``):

- ``random``: corner vectors (one element, all equal, X_MIN / X_MAX, ascending and
  descending runs, k = 1 argmax with ties, k > length, k > max_k, k = 0), then random
  vectors (lengths 1..``max_len``, k 0..127 weighted to 1..max_k) whose logits come from
  the full X range, a small range (many ties), the extremes only, or a constant; under one
  of ``tb.PATTERNS`` (gaps on ``cfg`` and ``i``, back-pressure on ``o``).
- ``timing``: the docstring's cycle counts for known vectors, no gaps or back-pressure,
  up to a vocabulary-sized vector (4096 logits, k = 64), and a short vector that waits
  for the previous one's candidates to leave the result memory.
"""

import random

import cocotb
import numpy as np
from tb import PATTERNS, StreamSink, StreamSource, pack, params, report, start, unpack

from mmfree_fpga import golden as G
from mmfree_fpga import numerics as N
from mmfree_hw.topk import Logit, TopK, candidate_layout, topk_cfg_layout

K_MAX_FIELD = 127               # the largest k the 7-bit field of max_k = 64 carries


def expected(logits, k: int, max_k: int) -> list[tuple[int, int]]:
    kk = min(k, max_k, len(logits))
    if kk == 0:
        return []
    ids, values = G.topk(np.asarray(logits, dtype=np.int64), kk)
    return [(int(i), int(v)) for i, v in zip(ids, values, strict=True)]


def corner_vectors(max_k: int, rng: np.random.Generator):
    lo, hi = N.X_MIN, N.X_MAX
    return [
        (1, [7]), (max_k, [lo]), (max_k, [hi]),
        (1, [3, 9, 9, 1, 9]),                              # argmax: the lowest id of the ties
        (max_k, [0] * (max_k + 10)),                       # all equal: ids 0 .. max_k - 1
        (max_k, [lo] * 70), (max_k, [hi] * 70),
        (5, [lo, hi, lo, hi, 0, -1, 1, hi, lo]),
        (max_k, list(range(200))),                         # every new element goes first
        (max_k, list(range(200, 0, -1))),                  # every new one to the tail
        (max_k, [hi - i for i in range(100)]),
        (max_k, [lo + i for i in range(100)]),
        (10, [int(v) for v in rng.integers(-2, 2, size=3)]),    # k > length
        (K_MAX_FIELD, [int(v) for v in rng.integers(-5, 5, size=90)]),   # k > max_k
        (0, [1, 2, 3]),                                    # k = 0: consumed, nothing out
        (1, [int(v) for v in rng.integers(lo, hi, size=300, endpoint=True)]),
    ]


def random_vectors(n: int, max_k: int, max_len: int, rng: np.random.Generator):
    out = []
    for _ in range(n):
        length = int(rng.integers(1, max_len + 1))
        r = rng.random()
        if r < 0.05:
            k = int(rng.integers(max_k + 1, K_MAX_FIELD + 1))
        elif r < 0.08:
            k = 0
        else:
            k = int(rng.integers(1, max_k + 1))
        kind = rng.choice(["full", "small", "small", "tiny", "extremes", "constant"])
        if kind == "full":
            logits = rng.integers(N.X_MIN, N.X_MAX, size=length, endpoint=True)
        elif kind == "small":
            logits = rng.integers(-20, 20, size=length)
        elif kind == "tiny":
            logits = rng.integers(0, 2, size=length) + int(rng.integers(N.X_MIN, N.X_MAX - 1))
        elif kind == "extremes":
            logits = rng.choice(np.array([N.X_MIN, N.X_MAX, 0, -1, 1]), size=length)
        else:
            logits = np.full(length, int(rng.integers(N.X_MIN, N.X_MAX, endpoint=True)))
        out.append((k, [int(v) for v in logits]))
    return out


class TopKTB:
    """cfg and logit sources, the candidate sink (with its protocol monitor)."""

    def __init__(self, dut, valid_prob=1.0, ready_prob=1.0, seed=0):
        rng = random.Random(seed)
        self.dut = dut
        self.cfg = StreamSource(dut, "cfg", valid_prob, seed=rng.randrange(1 << 30))
        self.i = StreamSource(dut, "i", valid_prob, seed=rng.randrange(1 << 30))
        self.sink = StreamSink(dut, "o", ready_prob, seed=rng.randrange(1 << 30))
        self.layout = candidate_layout(params().get("id_bits", 16))
        self.checked = 0

    async def run(self, vectors, max_k: int):
        """Stream (k, logits) vectors through; check every candidate and every ``last``."""
        first = len(self.sink.beats)
        cfg_layout = topk_cfg_layout(max_k)
        cocotb.start_soon(self.cfg.send([pack(cfg_layout, k=k) for k, _ in vectors]))
        cocotb.start_soon(self.i.send([pack(Logit, logit=x, last=int(j == len(v) - 1))
                                       for _, v in vectors for j, x in enumerate(v)]))
        want = [expected(v, k, max_k) for k, v in vectors]
        n = sum(len(w) for w in want)
        await self.sink.expect_no_more(first + n, 3 * max_k + 20)
        got = [unpack(self.layout, b) for b in self.sink.beats[first:]]
        pos = 0
        for j, w in enumerate(want):
            g = got[pos:pos + len(w)]
            pos += len(w)
            pairs = [(c["id"], c["logit"]) for c in g]
            lasts = [c["last"] for c in g]
            assert pairs == w, (f"vector {j} (k={vectors[j][0]}, length {len(vectors[j][1])}):"
                                f" got {pairs[:6]}..., want {w[:6]}...")
            assert lasts == [0] * (len(w) - 1) + [1] * bool(w), (j, lasts)
        self.checked += n
        return n


async def suite_random(dut, p):
    max_k, pattern = p["max_k"], p.get("pattern", "both")
    valid_prob, ready_prob = PATTERNS[pattern]
    rng = np.random.default_rng(p.get("seed", 0))
    vectors = corner_vectors(max_k, rng) + random_vectors(p["vectors"], max_k,
                                                          p.get("max_len", 300), rng)
    tb = TopKTB(dut, valid_prob, ready_prob, p.get("seed", 0))
    n = await tb.run(vectors, max_k)
    lengths = [len(v) for _, v in vectors]
    report(dut, "topk", n, f"candidates of {len(vectors)} vectors (lengths "
           f"{min(lengths)}..{max(lengths)}, {sum(lengths)} logits), max_k={max_k}, {pattern}")


async def suite_timing(dut, p):
    """No gaps, no back-pressure: ``i.ready`` 1 cycle after the cfg beat, one logit per
    cycle, the first candidate LATENCY (max_k + 4) cycles after the last logit, one per
    cycle, the next cfg beat max_k + 2 cycles after the last logit: n + max_k + 2 cycles
    per vector; a vector whose last logit comes while the previous one's candidates are
    still being read waits for them before its shift (then starts the cycle after)."""
    max_k = p["max_k"]
    rng = np.random.default_rng(p.get("seed", 0))
    tb = TopKTB(dut)
    vectors = [(5, [int(v) for v in rng.integers(-100, 100, size=37)]),
               (max_k, [int(v) for v in rng.integers(-3, 3, size=300)]),
               (1, [int(v) for v in rng.integers(-9, 9, size=12)]),        # waits for 64
               (max_k, [int(v) for v in rng.integers(N.X_MIN, N.X_MAX, size=4096)]),
               (3, [1, 2]), (2, [9, 9, 9, 9])]
    await tb.run(vectors, max_k)
    cfg_at, i_at, o_at = tb.cfg.accepted, tb.i.accepted, tb.sink.monitor.transfers
    figures, i0, o0, free = [], 0, 0, None
    for j, (k, v) in enumerate(vectors):
        n, kk = len(v), min(k, max_k, len(v))
        i, o = i_at[i0:i0 + n], o_at[o0:o0 + kk]
        i0, o0 = i0 + n, o0 + kk
        assert i[0] - cfg_at[j] == 1, (j, i[0], cfg_at[j])
        assert i == list(range(i[0], i[0] + n)), f"vector {j}: a gap in the logits"
        assert o == list(range(o[0], o[0] + kk)), f"vector {j}: a gap in the candidates"
        waited = free is not None and free > i[-1] + 1
        start = max(i[-1] + 1, free) if waited else i[-1] + 1
        assert o[0] == start + max_k + 3, (j, o[0], start)
        if not waited:
            assert o[0] - i[-1] == TopK(max_k).LATENCY == max_k + 4
        if j + 1 < len(vectors):
            assert cfg_at[j + 1] == start + max_k + 1, (j, cfg_at[j + 1], start)
            if not waited:
                assert cfg_at[j + 1] - cfg_at[j] == n + max_k + 2
            figures.append((n, kk, o[0] - i[-1], cfg_at[j + 1] - cfg_at[j], waited))
        free = o[0] - 2 + kk
    assert [f[4] for f in figures] == [False, False, True, False, True]
    dut._log.info("topk timing (length, candidates, last logit to first candidate, cycles "
                  "cfg to cfg, waited for the previous read-out): %s", figures)
    report(dut, "topk", tb.checked, f"timing, max_k={max_k}")


@cocotb.test()
async def topk(dut):
    p = params()
    await start(dut)
    await {"random": suite_random, "timing": suite_timing}[p.get("suite", "random")](dut, p)
