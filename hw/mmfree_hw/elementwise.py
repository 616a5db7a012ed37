"""The elementwise unit: residual add, multiply, sigmoid, SiLU and the GLU product.

One operation per element, chosen per beat, bit-exact with ``golden.residual_add``,
``golden.glu`` and ``numerics.sigmoid`` / ``numerics.silu`` (NUMERICS.md, "Units").
"""

from amaranth import Module, Signal, signed
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from mmfree_fpga import numerics as N

from .pipeline import Sigmoid, X, rshift_round, saturate


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

    Latency: 4 cycles from an accepted ``i`` beat to its ``o`` beat.
    Throughput: one element per cycle; a stalled ``o`` stalls the whole pipeline
    (``i.ready = ~o.valid | o.ready``), so back-pressure never drops a beat.
    Resources: the sigmoid table (1026 x 25, two read ports), a 32x25 and a 32x32 multiply.
    """

    i: In(stream.Signature(Operands))
    o: Out(stream.Signature(X))

    LATENCY = 4

    def elaborate(self, platform):
        m = Module()
        m.submodules.sigmoid = sig = Sigmoid()
        en = Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en),
                     sig.en.eq(en), sig.z.eq(self.i.payload.a)]

        s1, s2, s3 = Signal(Operands), Signal(Operands), Signal(Operands)
        v1, v2, v3 = Signal(), Signal(), Signal()
        y3 = Signal.like(sig.y)
        silu3 = Signal(X)
        with m.If(en):
            m.d.sync += [
                s1.eq(self.i.payload), v1.eq(self.i.valid),
                s2.eq(s1), v2.eq(v1),
                s3.eq(s2), v3.eq(v2), y3.eq(sig.y),
                silu3.eq(rshift_round(s2.a * sig.y, N.GATE_FRAC)),
            ]
            result = Signal(X)
            product = Signal(signed(2 * N.X_BITS))
            m.d.comb += product.eq(silu3 * s3.b)
            with m.Switch(s3.op):
                with m.Case(Op.ADD):
                    m.d.comb += result.eq(saturate(s3.a + s3.b))
                with m.Case(Op.MUL):
                    m.d.comb += result.eq(saturate(rshift_round(s3.a * s3.b, N.X_FRAC)))
                with m.Case(Op.SIGMOID):
                    m.d.comb += result.eq(y3)
                with m.Case(Op.SILU):
                    m.d.comb += result.eq(silu3)
                with m.Case(Op.GLU):
                    m.d.comb += result.eq(saturate(rshift_round(product, N.X_FRAC)))
            m.d.sync += [self.o.payload.eq(result), self.o.valid.eq(v3)]
        return m
