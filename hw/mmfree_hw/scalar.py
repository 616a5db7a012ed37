"""Scalar building blocks of the norm units: the PF format, its normalizer, a bit-length tree
and a digit-serial multiplier for the once-per-vector Newton steps (NUMERICS.md, "rsqrt(s)",
"recip24(m)").

Everything here runs once per vector, not per element, so it is built for small area and
short paths (one multiply or one add per cycle), not for latency.
"""

from amaranth import Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from mmfree_fpga import numerics as N

# PF exponents on the wire are numerics.PF_EXP_BITS wide. Every PF these units produce or
# consume stays well inside it: rms_rsqrt gives exponents in [-53, 10], absmax_quantize in
# [-94, 16] (g_frac <= 63), and an exported weight scale s_w / 127 (s_w >= 1e-5) about
# [-40, 0] (the exporter refuses one that does not fit). Products of three PFs (Dequantize)
# are formed in EXP_WIDE bits inside the unit.
EXP_WIDE = 12


class PFloat(data.Struct):
    """``mant * 2^exp``: mant in [2^15, 2^16), or mant = 0 (and exp = 0) for zero."""

    mant: unsigned(N.PF_BITS)
    exp: signed(N.PF_EXP_BITS)


def bit_length(value):
    """``int.bit_length`` of an unsigned value, combinationally: a tree of OR-reductions and
    muxes, log2(width) levels deep. Used on narrow values only; :class:`BitLength` is the
    registered version for wide ones."""
    value = Value.cast(value)
    width = len(value)
    if width == 1:
        return value
    half = 1 << ((width - 1).bit_length() - 1)     # largest power of two below width
    hi, lo = value[half:], value[:half]
    return Mux(hi.any(), half + bit_length(hi), bit_length(lo))


def half_ulp(n, width: int):
    """``(1 << n) >> 1``, the rounding constant of ``rshift_round(x, n)``, as a decoder
    (bit i is ``n == i + 1``) instead of a widening variable shift of a constant."""
    return Cat(*(n == i + 1 for i in range(width)))


class BitLength(wiring.Component):
    """``int.bit_length(v)`` for an unsigned ``v`` in two register stages: the length of
    each 8-bit chunk (a function of 8 inputs), then the top non-zero chunk's.

    Ports: ``v`` (in, unsigned ``width``), ``n`` (out). Latency: 2 cycles, one per cycle.
    Resources: ~5 LUTs and 5 flip-flops per 8 input bits, a small mux.
    """

    def __init__(self, width: int):
        self.width = width
        super().__init__({"v": In(unsigned(width)), "n": Out(range(width + 1))})

    def elaborate(self, platform):
        m = Module()
        chunks = [self.v[i:i + 8] for i in range(0, self.width, 8)]
        lens = [Signal(range(9), name=f"len{i}") for i in range(len(chunks))]
        nonzero = Signal(len(chunks))
        m.d.sync += [ln.eq(bit_length(c)) for ln, c in zip(lens, chunks, strict=True)]
        m.d.sync += nonzero.eq(Cat(*(c.any() for c in chunks)))
        top = Signal(range(len(chunks) + 1))                  # 1 + index of the top chunk
        m.d.comb += top.eq(bit_length(nonzero))
        with m.Switch(top):
            for i, ln in enumerate(lens):
                with m.Case(i + 1):
                    m.d.sync += self.n.eq(8 * i + ln)
            with m.Default():
                m.d.sync += self.n.eq(0)
        return m


class PFNormalize(wiring.Component):
    """``numerics.pf_normalize(v, exp)``: the mantissa rounded (half up) to 16 bits.

    Ports: ``v`` (unsigned ``width``), ``exp`` (signed EXP_WIDE), ``start`` (in: take them);
    ``mant``, ``exp_out`` (out, held until the next result), ``valid`` (out: a one-cycle
    strobe when they are new).
    Latency: 7 cycles (input register; bit length 2; shift amount; rounding add; shift;
    carry fix-up and exponent), one register per step so no path holds more than one add
    or one shifter, and the caller's operand muxes end at the input register. One
    operation may start per cycle.
    Resources: a ``width``-bit bit-length, adder and barrel shifter; ~5 ``width``-bit
    registers.
    """

    def __init__(self, width: int):
        self.width = width
        super().__init__({
            "v": In(unsigned(width)), "exp": In(signed(EXP_WIDE)), "start": In(1),
            "mant": Out(unsigned(N.PF_BITS)), "exp_out": Out(signed(EXP_WIDE)),
            "valid": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        w = self.width
        v0 = Signal(w)
        e0 = Signal(signed(EXP_WIDE))
        m.d.sync += [v0.eq(self.v), e0.eq(self.exp)]
        m.submodules.bits = bits = BitLength(w)
        m.d.comb += bits.v.eq(v0)
        # The operands travel beside the bit-length pipeline.
        v1, v2 = Signal(w), Signal(w)
        e1, e2 = Signal(signed(EXP_WIDE)), Signal(signed(EXP_WIDE))
        go = Signal(6)
        m.d.sync += [v1.eq(v0), v2.eq(v1), e1.eq(e0), e2.eq(e1),
                     go.eq(Cat(self.start, go[:-1]))]
        # Step 3: shift = bit_length(v) - 16 (negative: shift left, as pf_normalize does).
        v3 = Signal(w)
        e3 = Signal(signed(EXP_WIDE))
        sh3 = Signal(signed(8))
        zero3 = Signal()
        m.d.sync += [v3.eq(v2), e3.eq(e2), sh3.eq(bits.n - N.PF_BITS), zero3.eq(bits.n == 0)]
        # Step 4: the rounding add (right shifts only).
        shr = Signal(range(max(w, 2)))
        shl = Signal(range(N.PF_BITS + 1))
        m.d.comb += [shr.eq(Mux(sh3 > 0, sh3, 0)), shl.eq(Mux(sh3 < 0, -sh3, 0))]
        v4 = Signal(w + 1)
        shr4 = Signal.like(shr)
        shl4 = Signal.like(shl)
        e4 = Signal(signed(EXP_WIDE))
        sh4 = Signal(signed(8))
        zero4 = Signal()
        m.d.sync += [v4.eq(v3 + half_ulp(shr, w)), shr4.eq(shr), shl4.eq(shl),
                     e4.eq(e3), sh4.eq(sh3), zero4.eq(zero3)]
        # Step 5: the shift, into 17 bits (bit 16 set only when rounding carried).
        mant5 = Signal(N.PF_BITS + 1)
        e5 = Signal(signed(EXP_WIDE))
        zero5 = Signal()
        m.d.sync += [mant5.eq(Mux(shl4 != 0, v4 << shl4, v4 >> shr4)),
                     e5.eq(e4 + sh4), zero5.eq(zero4)]
        # Step 6: a carry into bit 16 leaves exactly 2^16: halve it, one more shift.
        carry = mant5[N.PF_BITS]
        m.d.sync += [self.valid.eq(go[5]),
                     self.mant.eq(Mux(carry, 1 << (N.PF_BITS - 1), mant5[:N.PF_BITS])),
                     self.exp_out.eq(Mux(zero5, 0, e5 + carry))]
        return m


class SerialMul(wiring.Component):
    """``p = x * y`` for unsigned ``x < 2^32`` and a ``y`` of ``n`` 16-bit digits (n <= 6),
    one digit per cycle, least significant first.

    Each step adds ``x * digit`` to the running high part ``h`` and shifts one finished
    16-bit digit of the product out into ``lo`` (entering at the top), so no adder is wider
    than 49 bits however wide the product. When ``busy`` falls,
    ``p = h * 2^(16 n) + lo[96 - 16 n:]``. ``x * digit`` is formed as two 16x16 partial
    products (one DSP each), registered, then summed, then accumulated: three steps of one
    operation each, pipelined, so a digit still enters every cycle.

    Ports: ``x`` (32), ``y`` (96), ``n`` (digits), ``start`` (in: take them, clear ``h``);
    ``busy`` (out, high from the cycle after start), ``h`` (32, out), ``lo`` (96, out).
    Latency: n + 4 cycles from start until ``busy`` is low again (the operands are
    registered first, so the caller's operand muxes and the multiplier never share a
    cycle).
    Resources: two 16x16 multipliers, a 48-bit and a 49-bit adder, ~330 flip-flops.
    """

    x: In(32)
    y: In(96)
    n: In(range(7))
    start: In(1)
    busy: Out(1)
    h: Out(32)
    lo: Out(96)

    def elaborate(self, platform):
        m = Module()
        x = Signal(32)
        y = Signal(96)
        count = Signal(range(7))
        p_lo, p_hi = Signal(32), Signal(32)
        t = Signal(48)
        stage = Signal(2)               # a digit's partial products / its sum are in flight
        go = Signal()
        x_in, y_in, n_in = Signal(32), Signal(96), Signal(range(7))
        m.d.sync += [go.eq(self.start), x_in.eq(self.x), y_in.eq(self.y), n_in.eq(self.n)]
        m.d.comb += self.busy.eq(go | (count != 0) | stage.any())
        with m.If(go):
            m.d.sync += [x.eq(x_in), y.eq(y_in), count.eq(n_in), stage.eq(0), self.h.eq(0)]
        with m.Else():
            m.d.sync += [p_lo.eq(x[:16] * y[:16]), p_hi.eq(x[16:] * y[:16]),
                         t.eq(p_lo + (p_hi << 16)), stage.eq(Cat(count != 0, stage[0]))]
            with m.If(count != 0):
                m.d.sync += [y.eq(y >> 16), count.eq(count - 1)]
            with m.If(stage[1]):
                total = self.h + t                      # h < 2^32, t < 2^48: 49 bits
                m.d.sync += [self.h.eq(total[16:]), self.lo.eq(Cat(self.lo[16:], total[:16]))]
        return m
