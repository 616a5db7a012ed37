"""The elementwise unit: residual add, multiply, sigmoid, SiLU and the GLU product.

One operation per element, chosen per beat, bit-exact with ``golden.residual_add``,
``golden.glu`` and ``numerics.sigmoid`` / ``numerics.silu`` (NUMERICS.md, "Units").
"""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from mmfree_fpga import numerics as N

from .pipeline import PipelinedMul, Sigmoid, X, rshift_round, saturate


class Op(enum.Enum, shape=3):
    ADD = 0      # saturate(a + b)                      residual add
    MUL = 1      # saturate(round(a * b / 2^16))         X x X
    SIGMOID = 2  # sigma(a) in Q0.24 (a 25-bit value)
    SILU = 3     # round(a * sigma(a) / 2^24)            (never saturates: |silu(a)| <= |a|)
    GLU = 4      # saturate(round(silu(a) * b / 2^16))   silu(gate) * up


class Operands(data.Struct):
    op: Op
    a: X
    b: X


class ElementwiseUnit(wiring.Component):
    """Ports: ``i`` stream of :class:`Operands`, ``o`` stream of X (int32).

    Latency: ``LATENCY`` (17) cycles from an accepted ``i`` beat to its ``o`` beat: sigmoid
    (6), ``a * sigma(a)`` (4, pipelined 18x18 partial products), rounding (1), the
    second product (4), rounding (1), saturation and the result mux (1).
    Throughput: one element per cycle; a stalled ``o`` stalls the whole pipeline
    (``i.ready = ~o.valid | o.ready``), so back-pressure never drops a beat.
    Resources: the sigmoid table (1026 x 25, two read ports), a 32x26 and a 32x32
    product (4 MULT18X18D each), one 26x11 for the interpolation.
    """

    i: In(stream.Signature(Operands))
    o: Out(stream.Signature(X))

    LATENCY = 17

    def elaborate(self, platform):
        m = Module()
        m.submodules.sigmoid = sig = Sigmoid()
        m.submodules.mul_silu = mul1 = PipelinedMul(N.X_BITS, N.GATE_FRAC + 2)
        m.submodules.mul_out = mul2 = PipelinedMul(N.X_BITS, N.X_BITS)
        en = Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en),
                     sig.en.eq(en), sig.z.eq(self.i.payload.a), mul1.en.eq(en), mul2.en.eq(en)]

        def delay(value, cycles, name):
            """``value`` as it was ``cycles`` enabled cycles ago (a stalling shift register)."""
            for k in range(cycles):
                reg = Signal.like(value, name=f"{name}_{k}")
                with m.If(en):
                    m.d.sync += reg.eq(value)
                value = reg
            return value

        beat = Signal(Operands)
        m.d.comb += beat.eq(self.i.payload)
        # stage 6: sigma(a) is ready beside its operands
        b2, v2 = delay(beat, Sigmoid.LATENCY, "b"), delay(self.i.valid, Sigmoid.LATENCY, "v")
        m.d.comb += [mul1.a.eq(b2.a), mul1.b.eq(sig.y)]
        y6 = delay(sig.y, 4, "y")
        # stage 6: a * sigma(a) -> silu, rounded into a register (stage 7)
        silu7 = Signal(X)
        with m.If(en):
            m.d.sync += silu7.eq(rshift_round(mul1.p, N.GATE_FRAC))
        b7, v7, y7 = delay(b2, 5, "b7"), delay(v2, 5, "v7"), delay(y6, 1, "y7")
        m.d.comb += [mul2.a.eq(Mux(b7.op == Op.MUL, b7.a, silu7)), mul2.b.eq(b7.b)]
        # stage 11: the second product; round (stage 12), then saturate and choose (13)
        rounded = Signal(signed(2 * N.X_BITS - N.X_FRAC + 1))
        with m.If(en):
            m.d.sync += rounded.eq(rshift_round(mul2.p, N.X_FRAC))
        b11 = delay(b7, 4, "b11")
        b12, v12 = delay(b11, 1, "b12"), delay(v7, 5, "v12")
        total = Signal(signed(N.X_BITS + 1))      # a + b one stage ahead of its saturation
        with m.If(en):
            m.d.sync += total.eq(b11.a + b11.b)
        y12, silu12 = delay(y7, 5, "y12"), delay(silu7, 5, "silu12")
        result = Signal(X)
        with m.Switch(b12.op):
            with m.Case(Op.ADD):
                m.d.comb += result.eq(saturate(total))
            with m.Case(Op.MUL, Op.GLU):
                m.d.comb += result.eq(saturate(rounded))
            with m.Case(Op.SIGMOID):
                m.d.comb += result.eq(y12)
            with m.Case(Op.SILU):
                m.d.comb += result.eq(silu12)
        with m.If(en):
            m.d.sync += [self.o.payload.eq(result), self.o.valid.eq(v12)]
        return m
