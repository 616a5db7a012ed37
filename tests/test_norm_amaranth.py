"""Quick Amaranth-simulator checks of the norm datapath (hw/mmfree_hw/norm.py, scalar.py):
the scalar blocks against numerics, and a few vectors per unit against golden, with random
input gaps and output back-pressure. The cocotb benches (tests/test_sim_norm.py) are the
long regression on the emitted Verilog."""

import math
import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from mmfree_fpga import golden as G
from mmfree_fpga import numerics as N
from mmfree_hw.norm import AbsmaxQuantize, Dequantize, RmsRsqrt
from mmfree_hw.scalar import BitLength, PFNormalize, SerialMul


def simulate(dut, *benches, background=()):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for bench in background:
        sim.add_testbench(bench, background=True)
    for bench in benches:
        sim.add_testbench(bench)
    sim.run()


async def send(ctx, port, words, rng, valid_prob=0.7):
    for word in words:
        while rng.random() >= valid_prob:
            await ctx.tick()
        ctx.set(port.payload, word)
        ctx.set(port.valid, 1)
        await ctx.tick().until(port.ready)
        ctx.set(port.valid, 0)


async def receive(ctx, port, n, rng, out, ready_prob=0.6):
    while len(out) < n:
        ctx.set(port.ready, int(rng.random() < ready_prob))
        _, _, valid, ready, payload = await ctx.tick().sample(port.valid, port.ready,
                                                              port.payload)
        if valid and ready:
            out.append(payload)


def pf_dict(pf):
    return {"mant": pf.mant, "exp": pf.exp}


def pf_of(payload):
    return N.PF(payload.mant, payload.exp)


# -- scalar blocks ---------------------------------------------------------------------------

def test_bit_length():
    dut = BitLength(62)
    values = [0, 1, 2, 3, 255, 256, (1 << 61) - 1, 1 << 61, 1 << 40] + [
        random.Random(i).getrandbits(random.Random(i).randrange(1, 63)) for i in range(40)]

    async def bench(ctx):
        got = []
        for v in values + [0]:
            ctx.set(dut.v, v)
            await ctx.tick()
            got.append(ctx.get(dut.n))
        # Two register stages: v set before edge t shows on n after edge t + 1.
        assert got[1:] == [v.bit_length() for v in values]
    simulate(dut, bench)


def test_pf_normalize():
    rng = random.Random(3)
    values = [0, 1, 5, (1 << 16) - 1, 1 << 16, (1 << 17) - 1, (1 << 17) - 2, 0x1FFFF8,
              (1 << 47) - 1, (1 << 47) - (1 << 30)] + [rng.getrandbits(rng.randrange(1, 48))
                                                       for _ in range(60)]
    exps = [rng.randrange(-200, 200) for _ in values]
    dut = PFNormalize(48)

    async def bench(ctx):
        got = []
        for j, (v, e) in enumerate(zip(values + [0] * 6, exps + [0] * 6, strict=True)):
            ctx.set(dut.v, v)
            ctx.set(dut.exp, e)
            ctx.set(dut.start, j < len(values))
            await ctx.tick()
            if ctx.get(dut.valid):
                got.append(N.PF(ctx.get(dut.mant), ctx.get(dut.exp_out)))
        assert got == [N.pf_normalize(v, e) for v, e in zip(values, exps, strict=True)]
    simulate(dut, bench)


@pytest.mark.parametrize("digits", [1, 2, 3, 4, 6])
def test_serial_mul(digits):
    rng = random.Random(digits)
    cases = [((1 << 32) - 1, (1 << (16 * digits)) - 1)] + [
        (rng.getrandbits(32), rng.getrandbits(16 * digits)) for _ in range(6)]
    dut = SerialMul()

    async def bench(ctx):
        for x, y in cases:
            ctx.set(dut.x, x)
            ctx.set(dut.y, y)
            ctx.set(dut.n, digits)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            await ctx.tick().until(~dut.busy)
            h, lo = ctx.get(dut.h), ctx.get(dut.lo)
            assert (h << (16 * digits)) + (lo >> (96 - 16 * digits)) == x * y
    simulate(dut, bench)


# -- the units -------------------------------------------------------------------------------

def rms_cases(rng: np.random.Generator):
    carry = []                       # squares summing to 2^34 - 1: rsqrt's rounding carries
    s = (1 << 34) - 1
    while s:
        carry.append(math.isqrt(s))
        s -= carry[-1] ** 2
    return [
        (rng.integers(-2 ** 20, 2 ** 20, 16), rng.integers(-2 ** 15, 2 ** 15, 16), 14),
        (rng.integers(N.X_MIN, N.X_MAX, 5), np.full(5, -32768), 0),
        (np.zeros(8, dtype=np.int64), None, 0),
        (np.array(carry + [0] * (16 - len(carry))), None, 0),
        (rng.integers(N.X_MIN, N.X_MAX, 24), None, 0),
        (np.array([0, 0, 1, 0]), rng.integers(-2 ** 15, 2 ** 15, 4), 63),
    ]


def test_rms_rsqrt():
    rng = random.Random(1)
    cases = rms_cases(np.random.default_rng(1))
    dut = RmsRsqrt(max_k=32)
    got = []
    cfgs = [{"k": len(u), "a_frac": f, "no_gain": int(a is None),
             "sqrt_k": pf_dict(G.sqrt_pf(len(u)))} for u, a, f in cases]
    elems = [{"u": int(x), "g": 7 if a is None else int(a[j])}
             for u, a, _ in cases for j, x in enumerate(u)]

    async def cfg(ctx):
        await send(ctx, dut.cfg, cfgs, rng)

    async def elements(ctx):
        await send(ctx, dut.i, elems, rng)

    async def out(ctx):
        await receive(ctx, dut.o, len(cases), rng, got)
    simulate(dut, out, background=(cfg, elements))
    assert [pf_of(p) for p in got] == [G.rms_rsqrt(u, a, f) for u, a, f in cases]


def test_absmax_quantize():
    rng = random.Random(2)
    nrng = np.random.default_rng(2)
    cases = [
        (nrng.integers(-2 ** 20, 2 ** 20, 16), nrng.integers(-2 ** 15, 2 ** 15, 16), 14),
        (np.zeros(6, dtype=np.int64), nrng.integers(-2 ** 15, 2 ** 15, 6), 0),
        (nrng.integers(N.X_MIN, N.X_MAX, 20), np.full(20, -32768), 63),
        (np.array([(1 << 25) - 1, 3, -5, -(1 << 24)]), np.ones(4, dtype=np.int64), 0),
        (np.array([1, -1, 0, 1]), np.ones(4, dtype=np.int64), 30),
    ]
    dut = AbsmaxQuantize(max_k=32)
    codes, scales = [], []
    total = sum(len(u) for u, _, _ in cases)

    async def cfg(ctx):
        await send(ctx, dut.cfg, [{"k": len(u), "g_frac": f} for u, _, f in cases], rng)

    async def elements(ctx):
        await send(ctx, dut.i, [{"u": int(x), "g": int(g[j])} for u, g, _ in cases
                                for j, x in enumerate(u)], rng)

    async def code_sink(ctx):
        await receive(ctx, dut.q, total, rng, codes)

    async def scale_sink(ctx):
        await receive(ctx, dut.scale, len(cases), rng, scales)
    simulate(dut, code_sink, scale_sink, background=(cfg, elements))
    pos = 0
    for (u, g, f), scale in zip(cases, scales, strict=True):
        q, m = G.absmax_quantize(u, g, f)
        chunk = codes[pos:pos + len(u)]
        pos += len(u)
        assert [c.q for c in chunk] == list(q)
        assert [c.last for c in chunk] == [0] * (len(u) - 1) + [1]
        assert pf_of(scale) == m


def test_dequantize():
    rng = random.Random(3)
    nrng = np.random.default_rng(3)
    pf = N.PF
    sat = np.array([N.X_MAX, N.X_MIN, 0, 1, -1, 12345])
    cases = [
        (nrng.integers(-2 ** 20, 2 ** 20, 12), pf(40000, -20), pf(50000, -16), pf(33000, -20)),
        (sat, pf(65535, 0), pf(65535, -16), pf(65535, -17)),      # S.exp + 16 = 15: saturates
        (sat, pf(32768, -30), pf(32768, -40), pf(32768, -38)),    # right shift of 62
        (nrng.integers(N.X_MIN, N.X_MAX, 5), N.PF_ZERO, pf(50000, -16), pf(33000, -20)),
        (nrng.integers(-2 ** 10, 2 ** 10, 3), pf(40001, -3), pf(61111, -9), pf(39999, -33)),
    ]
    for _, a, b, c in cases:          # golden's int64 arithmetic is exact for these shifts
        s = N.pf_mul(N.pf_mul(a, b), c)
        assert s.mant == 0 or -62 <= s.exp + N.X_FRAC <= 16
    dut = Dequantize(count_bits=8)
    got = []
    total = sum(len(a) for a, *_ in cases)

    async def scales(ctx):
        await send(ctx, dut.scales, [{"act_max": pf_dict(a), "inv_rms": pf_dict(b),
                                      "w_scale": pf_dict(c), "count": len(acc)}
                                     for acc, a, b, c in cases], rng)

    async def accs(ctx):
        await send(ctx, dut.acc, [int(x) for acc, *_ in cases for x in acc], rng)

    async def out(ctx):
        await receive(ctx, dut.o, total, rng, got)
    simulate(dut, out, background=(scales, accs))
    want = [int(y) for acc, a, b, c in cases for y in G.dequantize(acc, a, b, c)]
    assert got == want
