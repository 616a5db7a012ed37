"""MLGRUUnit in the Amaranth simulator: a few channels over a few tokens and layers against
golden.mlgru, the settings on their own ``cfg`` stream (late, with gaps), the state hazard at
n = 1 and 3, latency and throughput back to back, the arithmetic helpers. Quick; the cocotb
bench (test_sim_mlgru.py) runs the long random regression on the emitted Verilog."""

import random

import numpy as np
import pytest
from amaranth import Module, Signal, signed
from amaranth.sim import Simulator

from mmfree_fpga import golden as G
from mmfree_fpga import numerics as N
from mmfree_hw.mlgru import MLGRUUnit, round_half, round_shift, round_shift_var
from mmfree_hw.pipeline import saturate
from util import send

X_ONE = 1 << N.X_FRAC


def make_vectors(rng: random.Random, widths, tokens: int):
    """Stimulus for one sequence, layer l ``widths[l]`` channels wide: per layer (lb, gn,
    gn_frac), per token and layer (zi, zf, zg). A few corner values are mixed in so
    saturation and the gate extremes occur."""
    def x(k):
        return np.array([rng.choice([rng.randrange(-8 * X_ONE, 8 * X_ONE),
                                     rng.randrange(N.X_MIN, N.X_MAX + 1), 0, N.X_MAX, N.X_MIN])
                         for _ in range(k)], dtype=np.int64)
    consts = [(np.array([rng.choice([0, N.GATE_ONE, rng.randrange(N.GATE_ONE + 1)])
                         for _ in range(n)], dtype=np.int64),
               np.array([rng.randrange(-32768, 32768) for _ in range(n)], dtype=np.int64),
               rng.choice([0, 14, 15, 30, 31]))
              for n in widths]
    steps = [[(x(n), x(n), x(n)) for n in widths] for _ in range(tokens)]
    return consts, steps


def expected(consts, steps):
    """golden.mlgru token by token, layer by layer, state from zero: the o vectors in order."""
    h = [np.zeros(len(lb), dtype=np.int64) for lb, _, _ in consts]
    out = []
    for token in steps:
        for layer, (zi, zf, zg) in enumerate(token):
            lb, gn, frac = consts[layer]
            o, h[layer] = G.mlgru(zi, zf, zg, h[layer], lb, gn, frac)
            out.extend(int(v) for v in o)
    return out


def vectors_of(sequences):
    """(cfg, i beats) per vector in stream order: layer l of every sequence at the base
    after the layers before it (its region, always with its own width)."""
    out = []
    for consts, steps in sequences:
        widths = [len(lb) for lb, _, _ in consts]
        bases = [sum(widths[:layer]) for layer in range(len(widths))]
        for t, token in enumerate(steps):
            for layer, (zi, zf, zg) in enumerate(token):
                lb, gn, frac = consts[layer]
                cfg = {"n": widths[layer], "base": bases[layer], "gn_frac": frac}
                out.append((cfg, [{"zi": int(zi[j]), "zf": int(zf[j]), "zg": int(zg[j]),
                                   "lb": int(lb[j]), "gn": int(gn[j]), "first": int(t == 0)}
                                  for j in range(widths[layer])]))
    return out


def simulate(dut, sequences, valid_prob=1.0, ready_prob=1.0, cfg_prob=1.0, late_prob=0.0,
             seed=0):
    """Streams every sequence (first token flagged) through ``cfg`` and ``i``, two
    independent handshakes: ``cfg`` with random gaps (``cfg_prob``) and, with probability
    ``late_prob`` per vector, a long wait (up to twice the vector's width) before it is
    offered, so that it often comes after the vector's beats are already waiting; ``i``
    with random gaps, ``o`` with random back-pressure. Returns the o beats and the edges at
    which each cfg, i and o beat transferred (all counted from the same first edge)."""
    vectors = vectors_of(sequences)
    total = sum(len(beats) for _, beats in vectors)
    rng_c, rng_i, rng_o = (random.Random(seed * 3 + k) for k in range(3))
    got, t_cfg, t_in, t_out = [], [], [], []
    gaps = 0

    async def cfg_source(ctx):
        nonlocal gaps
        edge = 0
        for cfg, beats in vectors:
            wait = rng_c.randrange(2 * len(beats) + 2) if rng_c.random() < late_prob else 0
            while rng_c.random() >= cfg_prob:
                wait += 1
            gaps += wait
            ctx.set(dut.cfg.valid, 0)
            for _ in range(wait):
                await ctx.tick()
                edge += 1
            ctx.set(dut.cfg.valid, 1)
            ctx.set(dut.cfg.payload, cfg)
            while True:
                *_, ready = await ctx.tick().sample(dut.cfg.ready)
                edge += 1
                if ready:
                    t_cfg.append(edge)
                    break
        ctx.set(dut.cfg.valid, 0)

    async def source(ctx):
        await send(ctx, dut.i, [b for _, beats in vectors for b in beats], valid_prob, rng_i,
                   t_in)

    async def sink(ctx):
        edge = 0
        while len(got) < total:
            ready = rng_o.random() < ready_prob
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            edge += 1
            if ready and valid:
                got.append(payload)
                t_out.append(edge)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(cfg_source)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    # a bound only against a hung unit: gaps are drawn as the run goes
    sim.run_until(1e-8 * (30 * total + 20 * len(vectors) * dut.MIN_DISTANCE + 500))
    assert len(got) == total, f"{len(got)} of {total} beats (cfg gaps {gaps})"
    assert len(t_cfg) == len(vectors)
    return got, t_cfg, t_in, t_out


def run_sequences(widths, tokens, count, max_channels, seed, dut=None, **stream):
    """``count`` sequences of ``tokens`` tokens over layers of ``widths`` channels, checked
    bit-exactly against golden.mlgru."""
    rng = random.Random(seed)
    sequences = [make_vectors(rng, widths, tokens) for _ in range(count)]
    dut = dut or MLGRUUnit(max_channels)
    got, t_cfg, t_in, t_out = simulate(dut, sequences, seed=seed, **stream)
    want = [o for consts, steps in sequences for o in expected(consts, steps)]
    bad = [(k, g, w) for k, (g, w) in enumerate(zip(got, want, strict=True)) if g != w]
    assert not bad, f"{len(bad)} mismatches of {len(want)}, first: {bad[:5]}"
    return dut, t_cfg, t_in, t_out


STREAMS = {
    "full": {},
    "late_cfg": {"cfg_prob": 0.5, "late_prob": 0.5},
    "gaps_backpressure": {"valid_prob": 0.6, "ready_prob": 0.6},
    "all": {"valid_prob": 0.7, "ready_prob": 0.6, "cfg_prob": 0.5, "late_prob": 0.4},
}


@pytest.mark.parametrize("stream", STREAMS.values(), ids=STREAMS.keys())
def test_channels_tokens_layers(stream):
    """4 channels, 3 layers sharing the memory (bases 0, 4, 8), 3 tokens, two sequences
    (the second starts from a cleared state although the memory still holds the
    first's)."""
    run_sequences([4, 4, 4], tokens=3, count=2, max_channels=12, seed=1, **stream)


@pytest.mark.parametrize("stream", STREAMS.values(), ids=STREAMS.keys())
def test_mixed_widths(stream):
    """Layers of 3, 9, 1 and 12 channels (below and above MIN_DISTANCE, so the interlock
    acts on some vectors only and n changes from vector to vector), 4 tokens."""
    run_sequences([3, 9, 1, 12], tokens=4, count=2, max_channels=25, seed=2, **stream)


@pytest.mark.parametrize("n", [1, 3])
def test_state_hazard_small_n(n):
    """n < MIN_DISTANCE: the input interlock holds each vector's first beat until the
    previous vector's last beat is MIN_DISTANCE stages in. Full rate, then gaps,
    back-pressure and late cfg beats."""
    for k, stream in enumerate([{}, STREAMS["all"]]):
        dut, _, t_in, _ = run_sequences([n], tokens=4, count=2, max_channels=4,
                                        seed=10 * n + k, **stream)
        if not stream:   # each vector waits for the previous one's last beat to be far in
            assert all(t_in[j + n] - t_in[j] == n + dut.MIN_DISTANCE - 1
                       for j in range(len(t_in) - n))


@pytest.mark.parametrize("n", [8, 13])
def test_back_to_back_one_channel_per_cycle(n):
    """n >= MIN_DISTANCE, cfg always offered, no gaps, no back-pressure: 2 layers x 3
    tokens run one channel per cycle with no bubble between vectors, each o beat LATENCY
    after its i beat. The first i beat goes the edge after the first cfg beat, the second
    cfg beat right behind the first, and each later one the edge after the vector two
    ahead of it finished (its place in the queue freed)."""
    dut = MLGRUUnit(2 * n)
    assert n >= dut.MIN_DISTANCE
    layers, tokens = 2, 3
    dut, t_cfg, t_in, t_out = run_sequences([n] * layers, tokens=tokens, count=1,
                                            max_channels=2 * n, seed=5, dut=dut)
    total = layers * tokens * n
    assert t_in == list(range(t_cfg[0] + 1, t_cfg[0] + 1 + total))
    assert [b - a for a, b in zip(t_in, t_out, strict=True)] == [dut.LATENCY] * total
    assert t_out[-1] - t_cfg[0] == total + dut.LATENCY     # cycles, cfg beat to last o
    assert t_cfg[1] == t_cfg[0] + 1
    assert t_cfg[2:] == [t_in[v * n - 1] + 1 for v in range(1, layers * tokens - 1)]


def test_late_cfg_delays_only_its_vector():
    """Every cfg beat offered after a random wait, i and o at full rate (n = MIN_DISTANCE
    and 10): a vector's first beat goes at the edge after its cfg beat, or right after the
    previous vector if the cfg beat was there in time; the beats of a vector go back to
    back; the latency stays LATENCY."""
    dut = MLGRUUnit(24)
    widths = [dut.MIN_DISTANCE, 10]
    dut, t_cfg, t_in, t_out = run_sequences(widths, tokens=6, count=2, max_channels=24,
                                            seed=6, dut=dut, late_prob=1.0)
    assert [b - a for a, b in zip(t_in, t_out, strict=True)] == [dut.LATENCY] * len(t_in)
    first, late = 0, 0
    for v, t in enumerate(t_cfg):
        n = widths[v % len(widths)]
        want = t + 1 if v == 0 else max(t + 1, t_in[first - 1] + 1)
        late += want == t + 1 and v > 0
        assert t_in[first] == want, (v, t, t_in[first - 1:first + 1])
        assert t_in[first:first + n] == list(range(want, want + n))
        first += n
    assert 0 < late < len(t_cfg) - 1      # some cfg beats came late, some in time


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
