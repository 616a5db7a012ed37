"""MLGRUUnit in the Amaranth simulator: a few channels over a few tokens and layers against
golden.mlgru, the state hazard at n = 1 and 3, latency and throughput, the arithmetic
helpers. Quick; the cocotb bench (test_sim_mlgru.py) runs the long random regression on the
emitted Verilog."""

import random

import numpy as np
import pytest
from amaranth import Module, Signal, signed
from amaranth.sim import Simulator

from mmfree_fpga import golden as G
from mmfree_fpga import numerics as N
from mmfree_hw.mlgru import MLGRUUnit, round_half, round_shift, round_shift_var
from mmfree_hw.pipeline import saturate

X_ONE = 1 << N.X_FRAC


def make_vectors(rng: random.Random, n: int, layers: int, tokens: int):
    """Stimulus for one sequence: per layer (lb, gn, gn_frac), per token and layer (zi, zf, zg).
    A few corner values are mixed in so saturation and the gate extremes occur."""
    def x(k):
        return np.array([rng.choice([rng.randrange(-8 * X_ONE, 8 * X_ONE),
                                     rng.randrange(N.X_MIN, N.X_MAX + 1), 0, N.X_MAX, N.X_MIN])
                         for _ in range(k)], dtype=np.int64)
    consts = [(np.array([rng.choice([0, N.GATE_ONE, rng.randrange(N.GATE_ONE + 1)])
                         for _ in range(n)], dtype=np.int64),
               np.array([rng.randrange(-32768, 32768) for _ in range(n)], dtype=np.int64),
               rng.choice([0, 14, 15, 30, 31]))
              for _ in range(layers)]
    steps = [[(x(n), x(n), x(n)) for _ in range(layers)] for _ in range(tokens)]
    return consts, steps


def expected(consts, steps, n):
    """golden.mlgru token by token, layer by layer, state from zero: the o vectors in order."""
    h = [np.zeros(n, dtype=np.int64) for _ in consts]
    out = []
    for token in steps:
        for layer, (zi, zf, zg) in enumerate(token):
            lb, gn, frac = consts[layer]
            o, h[layer] = G.mlgru(zi, zf, zg, h[layer], lb, gn, frac)
            out.extend(int(v) for v in o)
    return out


def simulate(dut, sequences, n, valid_prob=1.0, ready_prob=1.0, seed=0):
    """Streams every sequence (first token flagged), layer l at base l * n; returns the o
    beats and the cycles at which each i and o beat transferred."""
    rng = random.Random(seed)
    total = sum(len(steps) * len(consts) * n for consts, steps in sequences)
    got, t_in, t_out = [], [], []
    cycle = [0]

    async def clock(ctx):
        while True:
            await ctx.tick()
            cycle[0] += 1

    async def source(ctx):
        ctx.set(dut.n, n)
        for consts, steps in sequences:
            for t, token in enumerate(steps):
                for layer, (zi, zf, zg) in enumerate(token):
                    lb, gn, frac = consts[layer]
                    ctx.set(dut.base, layer * n)
                    ctx.set(dut.gn_frac, frac)
                    for j in range(n):
                        while rng.random() >= valid_prob:
                            ctx.set(dut.i.valid, 0)
                            await ctx.tick()
                        ctx.set(dut.i.valid, 1)
                        ctx.set(dut.i.payload, {"zi": int(zi[j]), "zf": int(zf[j]),
                                                "zg": int(zg[j]), "lb": int(lb[j]),
                                                "gn": int(gn[j]), "first": int(t == 0)})
                        await ctx.tick().until(dut.i.ready)
                        t_in.append(cycle[0])
                    ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        while len(got) < total:
            ready = rng.random() < ready_prob
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if ready and valid:
                got.append(payload)
                t_out.append(cycle[0])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(clock, background=True)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.run_until(1e-8 * (20 * total + 200))
    assert len(got) == total, f"{len(got)} of {total} beats"
    return got, t_in, t_out


def run_sequences(n, layers, tokens, count, max_channels, seed, dut=None, **stream):
    rng = random.Random(seed)
    sequences = [make_vectors(rng, n, layers, tokens) for _ in range(count)]
    dut = dut or MLGRUUnit(max_channels)
    got, t_in, t_out = simulate(dut, sequences, n, seed=seed, **stream)
    want = [o for consts, steps in sequences for o in expected(consts, steps, n)]
    bad = [(k, g, w) for k, (g, w) in enumerate(zip(got, want, strict=True)) if g != w]
    assert not bad, f"{len(bad)} mismatches of {len(want)}, first: {bad[:5]}"
    return dut, t_in, t_out


def test_channels_tokens_layers():
    """4 channels, 3 layers sharing the memory, 3 tokens, two sequences (the second starts
    from a cleared state although the memory still holds the first's)."""
    run_sequences(n=4, layers=3, tokens=3, count=2, max_channels=12, seed=1)


@pytest.mark.parametrize("n", [1, 3])
def test_state_hazard_small_n(n):
    """n < MIN_DISTANCE: the input interlock holds each vector's first beat until the
    previous vector's last beat is MIN_DISTANCE stages in. Full rate, gaps and
    back-pressure."""
    for k, stream in enumerate([{}, {"valid_prob": 0.6, "ready_prob": 0.6}]):
        dut, t_in, _ = run_sequences(n=n, layers=1, tokens=4, count=2, max_channels=4,
                                     seed=10 * n + k, **stream)
        if not stream:   # each vector waits for the previous one's last beat to be far in
            assert all(t_in[j + n] - t_in[j] == n + dut.MIN_DISTANCE - 1
                       for j in range(len(t_in) - n))


def test_latency_and_throughput():
    """At n = MIN_DISTANCE (one layer), no wait: one channel per cycle, fixed latency."""
    dut = MLGRUUnit(16)
    n = dut.MIN_DISTANCE
    dut, t_in, t_out = run_sequences(n=n, layers=1, tokens=3, count=1, max_channels=16,
                                     seed=5, dut=dut)
    assert [b - a for a, b in zip(t_in, t_out, strict=True)] == [dut.LATENCY] * len(t_in)
    assert t_in == list(range(t_in[0], t_in[0] + len(t_in)))


def test_arithmetic_helpers():
    """The rounding shortcuts and the LUT saturation against numerics, at the extremes too:
    the state's saturation in particular cannot be reached through the ports (h stays a
    convex mix of h and silu(zi) < X_MAX), so it is checked here."""
    m = Module()
    v = Signal(signed(49))
    k = Signal(range(32))
    sat, r16, r24 = Signal(signed(32)), Signal(signed(34)), Signal(signed(26))
    rv, c, rc = Signal(signed(50)), Signal(signed(32)), Signal(signed(36))
    m.d.comb += [sat.eq(saturate(v)), r16.eq(round_shift(v, 16)), r24.eq(round_shift(v, 24)),
                 rv.eq(round_half(round_shift_var(v, k))), rc.eq(round_shift(v, 24, c))]
    rng = random.Random(7)
    lim = 1 << 48
    values = [0, 1, -1, N.X_MAX, N.X_MIN, N.X_MAX + 1, N.X_MIN - 1, lim - 1, -lim,
              (1 << 15), -(1 << 15), (1 << 23), -(1 << 23), 3 << 22, -(3 << 22)]
    values += [rng.randrange(-lim, lim) >> rng.randrange(48) for _ in range(400)]

    async def bench(ctx):
        for value in values:
            ctx.set(v, value)
            ctx.set(k, rng.randrange(32))
            ctx.set(c, rng.choice([N.X_MIN, N.X_MAX, 0, -1, rng.randrange(N.X_MIN, N.X_MAX)]))
            shift, addend = ctx.get(k), ctx.get(c)
            assert ctx.get(sat) == N.saturate(value)
            assert ctx.get(r16) == N.rshift_round(value, 16)
            assert ctx.get(r24) == N.rshift_round(value, 24)
            assert ctx.get(rv) == N.rshift_round(value, shift), (value, shift)
            assert ctx.get(rc) == N.rshift_round(value, 24) + addend, (value, addend)

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
