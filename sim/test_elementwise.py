"""cocotb bench: ElementwiseUnit against golden.residual_add / glu and numerics.sigmoid /
silu, with random and corner-case operands, random gaps and random back-pressure."""

import random

import cocotb
import numpy as np
from tb import PATTERNS, StreamSink, StreamSource, pack, params, start, to_signed

from mmfree_fpga import golden as G
from mmfree_fpga import numerics as N
from mmfree_hw.elementwise import Op, Operands

X_ONE = 1 << N.X_FRAC
CORNERS = [0, 1, -1, N.X_MAX, N.X_MIN, X_ONE, -X_ONE, 16 * X_ONE, -16 * X_ONE,
           16 * X_ONE + 1, -16 * X_ONE - 1, (1 << 11) - 1, 1 << 11, 181 * X_ONE, -181 * X_ONE]


def reference(op: Op, a: int, b: int) -> int:
    av, bv = np.array([a], dtype=np.int64), np.array([b], dtype=np.int64)
    if op == Op.ADD:
        r = G.residual_add(av, bv)
    elif op == Op.MUL:
        r = N.saturate(N.rshift_round(av * bv, N.X_FRAC))
    elif op == Op.SIGMOID:
        r = N.sigmoid(av)
    elif op == Op.SILU:
        r = N.silu(av)
    else:
        r = G.glu(av, bv)
    return int(r[0])


def operands(n: int, rng: random.Random):
    cases = [(op, a, b) for op in Op for a in CORNERS for b in CORNERS[:6]]
    while len(cases) < n:
        scale = rng.choice([4, 20, 31])
        a = rng.randrange(-(1 << scale), 1 << scale)
        b = rng.randrange(-(1 << scale), 1 << scale)
        cases.append((rng.choice(list(Op)), a, b))
    return cases[:max(n, len(cases))]


@cocotb.test()
async def random_and_corners(dut):
    p = params()
    valid_prob, ready_prob = PATTERNS[p.get("pattern", "both")]
    rng = random.Random(p.get("seed", 0))
    cases = operands(p.get("transactions", 2500), rng)
    await start(dut)
    sink = StreamSink(dut, "o", ready_prob, seed=rng.randrange(1 << 30))
    source = StreamSource(dut, "i", valid_prob, seed=rng.randrange(1 << 30))
    await source.send([pack(Operands, op=op, a=a, b=b) for op, a, b in cases])
    beats = await sink.wait_for(len(cases))
    mismatches = []
    for (op, a, b), beat in zip(cases, beats, strict=True):
        got = to_signed(beat, N.X_BITS)
        want = reference(op, a, b)
        if got != want:
            mismatches.append((op.name, a, b, got, want))
    assert not mismatches, f"{len(mismatches)} mismatches, first: {mismatches[:5]}"
    dut._log.info("elementwise: %d transactions bit-exact (%s)", len(cases),
                  p.get("pattern", "both"))
