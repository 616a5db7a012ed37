"""cocotb bench: ElementwiseUnit against golden.residual_add / glu and numerics.sigmoid /
silu, with random and corner-case operands, random gaps and random back-pressure; its
latency and throughput at full rate (``timing``); and a self-test of tb's stream protocol
monitor (``protocol_monitor``), which watches the ``o`` stream of every bench."""

import random

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge
from tb import (
    PATTERNS,
    StreamMonitor,
    StreamSink,
    StreamSource,
    idle,
    pack,
    params,
    report,
    start,
    to_signed,
)

from mmfree_fpga import golden as G
from mmfree_fpga import numerics as N
from mmfree_hw.elementwise import ElementwiseUnit, Op, Operands

LATENCY = ElementwiseUnit.LATENCY
DOC_LATENCY = 17       # the docstring: "LATENCY (17) cycles from an accepted i beat to its o beat"

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
    await sink.expect_no_more(len(cases), 2 * LATENCY)
    compare(sink.beats, cases)
    report(dut, "elementwise", len(cases), f"bit-exact, {p.get('pattern', 'both')}")


def compare(beats, cases):
    mismatches = []
    for (op, a, b), beat in zip(cases, beats, strict=True):
        got = to_signed(beat, N.X_BITS)
        want = reference(op, a, b)
        if got != want:
            mismatches.append((op.name, a, b, got, want))
    assert not mismatches, f"{len(mismatches)} mismatches, first: {mismatches[:5]}"


@cocotb.test()
async def timing(dut):
    """No gaps, no back-pressure: an isolated beat's o is valid exactly LATENCY (17) cycles
    after the edge that accepted it; a burst of n beats is accepted one per cycle and leaves
    one per cycle, each LATENCY after its own (n + LATENCY - 1 cycles in all)."""
    rng = random.Random(7)
    await start(dut)
    sink = StreamSink(dut, "o")
    source = StreamSource(dut, "i")
    cases = operands(0, rng)[:1]
    await source.send([pack(Operands, op=op, a=a, b=b) for op, a, b in cases])
    await sink.expect_no_more(1, 2 * LATENCY)
    latency = sink.monitor.presented[0] - source.accepted[0]
    dut._log.info("elementwise: latency %d cycles (LATENCY %d)", latency, LATENCY)
    assert latency == LATENCY == DOC_LATENCY
    n = 64
    burst = [(rng.choice(list(Op)), rng.randrange(-(1 << 31), 1 << 31),
              rng.randrange(-(1 << 31), 1 << 31)) for _ in range(n)]
    await source.send([pack(Operands, op=op, a=a, b=b) for op, a, b in burst])
    await sink.expect_no_more(1 + n, 2 * LATENCY)
    cases += burst
    t_in, t_out = source.accepted[1:], sink.monitor.transfers[1:]
    assert t_in == list(range(t_in[0], t_in[0] + n)), "the burst was not taken one per cycle"
    assert [b - a for a, b in zip(t_in, t_out, strict=True)] == [LATENCY] * n
    dut._log.info("elementwise: %d beats in %d cycles, first accept to last output",
                  n, t_out[-1] - t_in[0] + 1)
    assert t_out[-1] - t_in[0] + 1 == n + LATENCY
    compare(sink.beats, cases)
    report(dut, "elementwise", len(cases), "timing")


@cocotb.test()
async def protocol_monitor(dut):
    """tb.StreamMonitor catches both violations on a stream the bench drives itself (the
    unit's ``i``, stalled by a full pipeline): valid dropped without a transfer, and the
    payload changed while stalled; meanwhile the stalled ``o`` holds its beat (its strict
    monitor would fail the test otherwise), and the one real beat comes out once."""
    await start(dut)
    sink = StreamSink(dut, "o", ready_prob=0.0)
    source = StreamSource(dut, "i")
    watch = StreamMonitor(source, "i (deliberately broken)", strict=False)
    cocotb.start_soon(watch.run())
    await source.send([pack(Operands, op=Op.ADD, a=1, b=2)])
    await idle(dut, LATENCY + 3)
    assert str(dut.i__ready.value) == "0", "o is stalled, so i should be"
    dut.i__valid.value = 1                              # offered while not ready ...
    dut.i__payload.value = pack(Operands, op=Op.ADD, a=5, b=5)
    await RisingEdge(dut.clk)
    dut.i__valid.value = 0                              # ... and withdrawn: violation 1
    await idle(dut, 2)
    dut.i__valid.value = 1
    await RisingEdge(dut.clk)
    dut.i__payload.value = pack(Operands, op=Op.ADD, a=6, b=6)   # changed: violation 2
    await RisingEdge(dut.clk)
    dut.i__valid.value = 0                              # withdrawn: violation 3
    await idle(dut, 2)
    kinds = [v.split(": ")[1].split(" (")[0].split(" at ")[0] for v in watch.violations]
    dut._log.info("monitor self-test: %s", watch.violations)
    assert kinds == ["valid fell without a transfer", "payload changed while stalled",
                     "valid fell without a transfer"], watch.violations
    sink.ready_prob = 1.0
    await sink.expect_no_more(1, 2 * LATENCY)
    assert to_signed(sink.beats[0], N.X_BITS) == 3
