"""The elementwise unit: residual add, multiply, sigmoid, SiLU and the GLU product.

One operation per element, chosen per beat, bit-exact with ``golden.residual_add``,
``golden.glu`` and ``numerics.sigmoid`` / ``numerics.silu`` (NUMERICS.md, "Units").
"""

from functools import partial

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from mmfree_fpga import numerics as N

from .pipeline import PipelinedMul, Sigmoid, X, delay_line, rshift_round, saturate

# Operand widths of the two products: a * sigma(a) (sigma in Q0.24 as a signed operand),
# and silu(a) * b or a * b.
MUL_SILU = (N.X_BITS, N.GATE_FRAC + 2)
MUL_OUT = (N.X_BITS, N.X_BITS)


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
    second product (4), rounding (1), saturation and the result mux (1); the stage plan
    (``SIGMA``, ``SILU``, ``PRODUCT``) follows the blocks' latencies.
    Throughput: one element per cycle; a stalled ``o`` stalls the whole pipeline
    (``i.ready = ~o.valid | o.ready``), so back-pressure never drops a beat.
    Resources: the sigmoid table (1026 x 25, two read ports), a 32x26 and a 32x32
    product (4 MULT18X18D each), one 26x11 for the interpolation.
    """

    i: In(stream.Signature(Operands))
    o: Out(stream.Signature(X))

    # Stage plan: enabled cycles after the accepting edge, from the blocks' latencies (as
    # MLGRUUnit's), so the unit stays aligned if a block's pipeline changes.
    SIGMA = Sigmoid.LATENCY                                # sigma(a) beside its operands
    SILU = SIGMA + PipelinedMul.latency(*MUL_SILU) + 1     # silu(a) registered
    PRODUCT = SILU + PipelinedMul.latency(*MUL_OUT)        # the second product out
    LATENCY = PRODUCT + 2                                  # rounded, then chosen into o

    def elaborate(self, platform):
        m = Module()
        m.submodules.sigmoid = sig = Sigmoid()
        m.submodules.mul_silu = mul1 = PipelinedMul(*MUL_SILU)
        m.submodules.mul_out = mul2 = PipelinedMul(*MUL_OUT)
        en = Signal()
        flow = Signal()
        m.d.comb += [flow.eq(~self.o.valid | self.o.ready), self.i.ready.eq(flow),
                     sig.en.eq(en), sig.z.eq(self.i.payload.a), mul1.en.eq(en), mul2.en.eq(en)]
        delay = partial(delay_line, m, en)
        sigma, silu_s, product = self.SIGMA, self.SILU, self.PRODUCT

        beat = Signal(Operands)
        m.d.comb += beat.eq(self.i.payload)
        b = delay(beat, product + 1, "b")              # b[s]: the beat in stage s
        vs = delay(self.i.valid, product + 1, "v")
        valid = vs[-1]
        # the stages advance while o can move and anything is in them (see MLGRUUnit)
        m.d.comb += en.eq(flow & (self.i.valid | Cat(*vs[1:]).any() | self.o.valid))
        # stage SIGMA: a * sigma(a) starts
        m.d.comb += [mul1.a.eq(b[sigma].a), mul1.b.eq(sig.y)]
        y = delay(sig.y, product + 1 - sigma, "y")[-1]
        # stage SILU: silu(a) = round(a * sigma(a)) registered; the second product starts
        silu = Signal(X)
        with m.If(en):
            m.d.sync += silu.eq(rshift_round(mul1.p, N.GATE_FRAC))
        m.d.comb += [mul2.a.eq(Mux(b[silu_s].op == Op.MUL, b[silu_s].a, silu)),
                     mul2.b.eq(b[silu_s].b)]
        # stage PRODUCT: the second product rounded, and a + b (one stage ahead of its
        # saturation), both registered; then saturate and choose into o
        rounded = Signal(signed(2 * N.X_BITS - N.X_FRAC + 1))
        total = Signal(signed(N.X_BITS + 1))
        with m.If(en):
            m.d.sync += [rounded.eq(rshift_round(mul2.p, N.X_FRAC)),
                         total.eq(b[product].a + b[product].b)]
        silu_out = delay(silu, product + 1 - silu_s, "silu")[-1]
        result = Signal(X)
        with m.Switch(b[product + 1].op):
            with m.Case(Op.ADD):
                m.d.comb += result.eq(saturate(total))
            with m.Case(Op.MUL, Op.GLU):
                m.d.comb += result.eq(saturate(rounded))
            with m.Case(Op.SIGMOID):
                m.d.comb += result.eq(y)
            with m.Case(Op.SILU):
                m.d.comb += result.eq(silu_out)
        with m.If(en):
            m.d.sync += [self.o.payload.eq(result), self.o.valid.eq(valid)]
        return m
