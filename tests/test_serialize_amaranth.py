"""LaneSerializer and RegisterSlice in Amaranth's simulator: rows in order with padding
dropped, ``last`` on each product's final row, random gaps and back-pressure, the stated
latency and throughput, a registered ``ready``, and the engine -> serializer pair against
``golden.ternary_matvec``. The long regression is the cocotb bench (test_sim_serialize)."""

import random

import numpy as np
import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from mmfree_fpga import golden as G
from mmfree_fpga import numerics as N
from mmfree_hw.engine import TernaryEngine
from mmfree_hw.serialize import LaneSerializer, RegisterSlice
from util import send


async def collect(ctx, port, n, ready_prob, rng, out, log, limit=200_000):
    edge = 0
    while len(out) < n:
        ready = int(rng.random() < ready_prob)
        ctx.set(port.ready, ready)
        *_, valid, payload = await ctx.tick().sample(port.valid, port.payload)
        edge += 1
        if valid and ready:
            out.append(payload)
            log.append(edge)
        assert edge < limit, f"only {len(out)} of {n} beats"
    ctx.set(port.ready, 0)
    for _ in range(20):              # nothing more
        *_, valid = await ctx.tick().sample(port.valid)
        assert not valid, "an extra beat"


def lane_beats(values, lanes):
    """A product's rows as acc beats (lists of lanes ints), padding past N random."""
    rng = random.Random(len(values))
    groups = -(-len(values) // lanes)
    padded = list(values) + [rng.randrange(-(1 << 31), 1 << 31)
                             for _ in range(groups * lanes - len(values))]
    return [padded[g * lanes:(g + 1) * lanes] for g in range(groups)]


def run_serializer(dut, products, valid_prob=1.0, ready_prob=1.0, seed=0, beat_gap=0):
    """Push products (lists of row values) through; returns (rows, lasts, log)."""
    rng = random.Random(seed)
    beats = [b for p in products for b in lane_beats(p, dut.lanes)]
    n = sum(len(p) for p in products)
    out, log = [], {"cfg": [], "acc": [], "o": []}

    async def cfg_bench(ctx):
        await send(ctx, dut.cfg, [{"rows": len(p)} for p in products], valid_prob,
                   random.Random(rng.random()), log["cfg"])

    async def acc_bench(ctx):
        brng = random.Random(rng.random())
        edge = 0
        for beat in beats:
            for _ in range(beat_gap):
                ctx.set(dut.acc.valid, 0)
                await ctx.tick()
                edge += 1
            while brng.random() >= valid_prob:
                ctx.set(dut.acc.valid, 0)
                await ctx.tick()
                edge += 1
            ctx.set(dut.acc.valid, 1)
            ctx.set(dut.acc.payload, beat)
            while True:
                *_, ready = await ctx.tick().sample(dut.acc.ready)
                edge += 1
                if ready:
                    log["acc"].append(edge)
                    break
        ctx.set(dut.acc.valid, 0)

    async def o_bench(ctx):
        await collect(ctx, dut.o, n, ready_prob, random.Random(rng.random()), out, log["o"])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(cfg_bench, background=True)
    sim.add_testbench(acc_bench, background=True)
    sim.add_testbench(o_bench)
    sim.run()
    rows = [int(p.acc) for p in out]
    lasts = [int(p.last) for p in out]
    return rows, lasts, log


def expected_lasts(products):
    return [int(i == len(p) - 1) for p in products for i in range(len(p))]


def random_products(rng, lanes, count, max_rows):
    out = []
    for _ in range(count):
        rows = int(rng.integers(1, max_rows + 1))
        out.append([int(v) for v in rng.integers(-(1 << 31), 1 << 31, size=rows)])
    return out


@pytest.mark.parametrize("valid_prob,ready_prob", [(1.0, 1.0), (0.6, 1.0), (1.0, 0.5),
                                                   (0.7, 0.6)])
def test_rows_in_order_padding_dropped(valid_prob, ready_prob):
    rng = np.random.default_rng(1)
    lanes = 4
    products = [[5], [1, 2, 3, 4], [7, 8, 9, 10, 11], [-(1 << 31), (1 << 31) - 1, 0]]
    products += random_products(rng, lanes, 20, 13)
    rows, lasts, _ = run_serializer(LaneSerializer(lanes), products, valid_prob, ready_prob,
                                    seed=2)
    assert rows == [v for p in products for v in p]
    assert lasts == expected_lasts(products)


def test_zero_rows_is_skipped():
    dut = LaneSerializer(4)
    products = [[1, 2], [], [3, 4, 5, 6, 7], [], [], [8]]
    rows, lasts, log = run_serializer(dut, products)
    assert rows == [1, 2, 3, 4, 5, 6, 7, 8]
    assert lasts == [0, 1, 0, 0, 0, 0, 1, 1]
    assert len(log["acc"]) == 1 + 2 + 1


def test_acc_bits_sign_extends():
    """A serializer keeping the engine's 19 bits returns every 19-bit value unchanged."""
    lo, hi = -(1 << 18), (1 << 18) - 1
    products = [[lo, hi, -1, 0, 1, lo + 1, hi - 1]]
    rows, _, _ = run_serializer(LaneSerializer(4, acc_bits=19), products)
    assert rows == products[0]


def test_latency_and_one_row_per_cycle():
    """Row 0 two cycles after its beat; rows back to back across beats and products (the
    next beat loads at the edge its predecessor's last row leaves), and a beat offered
    while the buffer is busy is taken n cycles after its predecessor."""
    lanes = 4
    products = [list(range(10)), list(range(100, 103)), [7], list(range(200, 209))]
    rows, lasts, log = run_serializer(LaneSerializer(lanes), products)
    assert rows == [v for p in products for v in p]
    o, acc = log["o"], log["acc"]
    assert o[0] - acc[0] == LaneSerializer.LATENCY
    assert o == list(range(o[0], o[0] + len(o))), "a bubble"
    sizes = [min(lanes, len(p) - g * lanes) for p in products
             for g in range(-(-len(p) // lanes))]
    assert np.diff(acc).tolist() == sizes[:-1]
    assert acc[0] - log["cfg"][0] == 2                   # acc.ready 2 cycles after cfg


def test_never_stalls_beats_lanes_apart():
    """Beats offered every lanes cycles (an engine with K = lanes) are taken at once."""
    lanes = 8
    rng = np.random.default_rng(3)
    products = random_products(rng, lanes, 6, 40)
    rows, _, log = run_serializer(LaneSerializer(lanes), products, beat_gap=lanes - 1)
    assert rows == [v for p in products for v in p]
    assert set(np.diff(log["acc"]).tolist()) == {lanes}


@pytest.mark.parametrize("cls", ["slice", "serializer"])
def test_ready_is_registered(cls):
    """Toggling the output's ready and the input's valid within a cycle never changes the
    input's ready (it is a flip-flop, not a function of those ports)."""
    if cls == "slice":
        dut = RegisterSlice(16)
        inp, outp, payload = dut.i, dut.o, 3
    else:
        dut = LaneSerializer(4)
        inp, outp, payload = dut.acc, dut.o, [1, 2, 3, 4]
    rng = random.Random(4)
    changes = []

    async def bench(ctx):
        if cls == "serializer":
            ctx.set(dut.cfg.valid, 1)
            ctx.set(dut.cfg.payload, {"rows": 1000})
        ctx.set(inp.payload, payload)
        for _ in range(300):
            before = ctx.get(inp.ready)
            for _ in range(3):
                ctx.set(outp.ready, rng.random() < 0.5)
                ctx.set(inp.valid, rng.random() < 0.7)
                changes.append(ctx.get(inp.ready) != before)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert not any(changes)


def run_slice(dut, beats, valid_prob, ready_prob):
    out, log_i, log_o = [], [], []

    async def src(ctx):
        await send(ctx, dut.i, beats, valid_prob, random.Random(6), log_i)

    async def dst(ctx):
        await collect(ctx, dut.o, len(beats), ready_prob, random.Random(7), out, log_o)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(src, background=True)
    sim.add_testbench(dst)
    sim.run()
    return [int(v) for v in out], log_i, log_o


@pytest.mark.parametrize("valid_prob,ready_prob", [(1.0, 1.0), (0.7, 0.5)])
def test_slice_order_and_latency(valid_prob, ready_prob):
    rng = random.Random(5)
    beats = [rng.randrange(1 << 16) for _ in range(300)]
    out, log_i, log_o = run_slice(RegisterSlice(16), beats, valid_prob, ready_prob)
    assert out == beats
    if valid_prob == 1.0 and ready_prob == 1.0:
        assert [o - i for i, o in zip(log_i, log_o, strict=True)] == [1] * len(beats)


class EngineSerializer(wiring.Component):
    """TernaryEngine -> LaneSerializer, the pair the core joins: the engine's ``cfg``
    (K, row groups) as ``engine_cfg``, the serializer's (rows) as ``cfg``."""

    def __init__(self, lanes, max_k):
        self.lanes = lanes
        self.engine = TernaryEngine(lanes, max_k)
        self.ser = LaneSerializer(lanes, acc_bits=self.engine.acc_bits)
        sig = self.engine.signature.members
        super().__init__({"engine_cfg": sig["cfg"], "act": sig["act"],
                          "weights": sig["weights"], "cfg": self.ser.signature.members["cfg"],
                          "o": self.ser.signature.members["o"]})

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine, m.submodules.ser = self.engine, self.ser
        wiring.connect(m, self.engine.acc, self.ser.acc)
        for name in ("act", "weights"):
            wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(self.engine, name))
        wiring.connect(m, wiring.flipped(self.engine_cfg), self.engine.cfg)
        wiring.connect(m, wiring.flipped(self.cfg), self.ser.cfg)
        wiring.connect(m, self.ser.o, wiring.flipped(self.o))
        return m


def test_engine_to_serializer_matches_golden():
    rng = np.random.default_rng(8)
    lanes, max_k = 4, 16
    products = []
    for n, k in [(5, 7), (4, 16), (1, 3), (13, 6), (9, 1)]:
        products.append((rng.integers(-128, 128, size=k), rng.integers(-1, 2, size=(n, k))))
    dut = EngineSerializer(lanes, max_k)
    n_rows = sum(c.shape[0] for _, c in products)
    out, log = [], []

    async def act_bench(ctx):
        for q, _ in products:
            for value in q:
                ctx.set(dut.act.valid, 1)
                ctx.set(dut.act.payload, int(value))
                await ctx.tick().until(dut.act.ready)
            ctx.set(dut.act.valid, 0)

    async def engine_cfg_bench(ctx):
        await send(ctx, dut.engine_cfg, [{"k": len(q), "groups": -(-c.shape[0] // lanes)}
                                         for q, c in products], 0.3, random.Random(12), [])

    async def weight_bench(ctx):
        words = [w for _, c in products for w in N.engine_word_ints(c, lanes)]
        await send(ctx, dut.weights, words, 0.8, random.Random(9), [])

    async def cfg_bench(ctx):
        await send(ctx, dut.cfg, [{"rows": c.shape[0]} for _, c in products], 1.0,
                   random.Random(10), [])

    async def o_bench(ctx):
        await collect(ctx, dut.o, n_rows, 0.7, random.Random(11), out, log)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for bench in (act_bench, engine_cfg_bench, weight_bench, cfg_bench):
        sim.add_testbench(bench, background=True)
    sim.add_testbench(o_bench)
    sim.run()
    want = [int(v) for q, c in products for v in G.ternary_matvec(c, q)]
    assert [int(p.acc) for p in out] == want
    assert [int(p.last) for p in out] == [int(i == c.shape[0] - 1) for _, c in products
                                          for i in range(c.shape[0])]
