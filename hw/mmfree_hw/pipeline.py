"""Shared pipeline building blocks: the sigmoid lookup, the pipelined multiplier, the
rounding shifts, saturation and the stalling delay line.

Units are stall pipelines: every stage advances together while ``en`` is high (the output
is ready or empty), so a block here is told ``en`` and has a fixed latency in enabled
cycles.
"""

import numpy as np
from amaranth import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from mmfree_fpga import numerics as N

X = signed(N.X_BITS)
GATE = unsigned(N.GATE_FRAC + 1)          # 0 .. 2^24 inclusive
GAIN = signed(N.GAIN_BITS)                # an int16 gain; its frac travels beside it


def rshift_round(value, n: int, addend=None):
    """``numerics.rshift_round(value, n)`` (``floor(value / 2^n + 1/2)``, round half up) for
    a constant ``n``; with a signed ``addend``, ``rshift_round(value, n) + addend``.

    For ``n >= 1`` it is ``(value >> n) + value[n - 1]``: the bit below the cut is the half
    to round up by, so the adder is only as wide as the result (``value + 2^(n-1)`` would
    carry through the n bits that are then dropped). With an ``addend`` (``value`` signed),
    one adder takes that bit as the carry-in of both operands:
    ``A + B + cin = (2A + cin + 2B + cin) / 2``. ``n <= 0`` shifts left (exact).
    """
    value = Value.cast(value)
    if n <= 0:
        return value << -n if addend is None else (value << -n) + addend
    cin = value[n - 1]
    if addend is None:
        return (value >> n) + cin
    high = value[n:].as_signed()
    return (Cat(cin, high).as_signed() + Cat(cin, addend).as_signed()) >> 1


def round_shift_var(value, amount):
    """First half of ``rshift_round(value, amount)`` for a run-time ``amount >= 0``:
    ``t = (2 value) >> amount``, a barrel shift with no adder in series. :func:`round_half`
    of ``t``, usually a register later, finishes it; the pair is exact for ``amount = 0``
    too, where ``value[amount - 1]`` would not exist."""
    return (value << 1) >> amount


def round_half(t):
    """Second half of a run-time rounding shift: ``(t + 1) >> 1`` of a
    :func:`round_shift_var` result."""
    return (t + 1) >> 1


def saturate(value, bits: int = N.X_BITS):
    """Clamp a signed value into ``bits`` bits (as numerics.saturate).

    It fits exactly when the bits above the new sign bit all equal it: an AND/OR reduction
    in LUTs, where two magnitude comparisons would be two carry chains in series.
    """
    value = Value.cast(value)
    if len(value) <= bits:
        return value
    top = value[bits - 1:]
    fits = top.all() | ~top.any()
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return Mux(fits, value[:bits].as_signed(), Mux(value[-1], lo, hi))


def delay_line(m: Module, en, value, cycles: int, name: str) -> list:
    """``[value, value 1 enabled cycle later, ..., value cycles later]``: a stalling shift
    register (every stage loads while ``en`` is high), registers named ``{name}1`` ..."""
    line = [value]
    for k in range(cycles):
        reg = Signal.like(line[-1], name=f"{name}{k + 1}")
        with m.If(en):
            m.d.sync += reg.eq(line[-1])
        line.append(reg)
    return line


SIG_DIFF_BITS = int(max(np.diff(N.SIGMOID_TABLE))).bit_length()
assert min(np.diff(N.SIGMOID_TABLE)) >= 0 and SIG_DIFF_BITS <= 17


class Sigmoid(wiring.Component):
    """sigma(z): the 1025-knot Q0.24 table of ``numerics.SIGMOID_TABLE``, linear
    interpolation on the 11 bits between knots, z clamped to [-16, 16].

    Ports: ``z`` (X, in), ``y`` (Q0.24 in 25 bits, out), ``en`` (in).
    Latency: ``LATENCY`` = 6 enabled cycles: clamp, table read, the block RAM's output
    register (an ECP5 DP16KD is ~6 ns clock-to-out without it), knot difference,
    product, sum: one carry chain or one multiplier per cycle.
    Throughput: 1 per cycle.
    Resources: one 1026 x 25 table with two read ports, one 17 x 11 multiply.
    """

    z: In(X)
    y: Out(GATE)
    en: In(1)

    LATENCY = 6

    def elaborate(self, platform):
        m = Module()
        table = [int(v) for v in N.SIGMOID_TABLE]
        m.submodules.table = mem = memory.Memory(shape=GATE, depth=len(table), init=table)
        lo_port = mem.read_port(domain="sync")
        hi_port = mem.read_port(domain="sync")

        lim = N.SIG_RANGE << N.X_FRAC
        t = Signal(range(2 * lim + 1))
        with m.If(self.en):
            m.d.sync += t.eq(Mux(self.z > lim, 2 * lim,
                                 Mux(self.z < -lim, 0, self.z + lim)))
        frac1, frac2, frac3 = (Signal(N.SIG_SHIFT, name=f"frac{i}") for i in (1, 2, 3))
        lo1 = Signal(GATE)
        m.d.comb += [
            lo_port.addr.eq(t >> N.SIG_SHIFT), hi_port.addr.eq((t >> N.SIG_SHIFT) + 1),
            lo_port.en.eq(self.en), hi_port.en.eq(self.en),
        ]
        lo, hi = Signal(GATE), Signal(GATE)
        with m.If(self.en):
            m.d.sync += [frac1.eq(t[:N.SIG_SHIFT]), frac2.eq(frac1),
                         lo.eq(lo_port.data), hi.eq(hi_port.data)]
        # sigma is increasing with slope <= 1/4, so a knot step fits 17 unsigned bits
        # (2^24 / 4 / 32) and the product is one 18x18 multiplier
        diff = Signal(SIG_DIFF_BITS)
        step = Signal(SIG_DIFF_BITS + N.SIG_SHIFT)
        lo2 = Signal(GATE)
        with m.If(self.en):
            m.d.sync += [diff.eq(hi - lo), frac3.eq(frac2), lo1.eq(lo),
                         step.eq(diff * frac3), lo2.eq(lo1)]
            m.d.sync += self.y.eq(lo2 + rshift_round(step, N.SIG_SHIFT))
        return m


# A constant some units need: 1.0 in the gate format.
GATE_ONE = Const(N.GATE_ONE, GATE)


class PipelinedMul(wiring.Component):
    """``p = a * b`` (signed) from 18x18 partial products, for the ECP5's MULT18X18D.

    A wide product straight through Yosys' DSP mapping chains DSPs and carry adders in one
    cycle (the elementwise unit's first build closed at 41 MHz). Here each operand is cut
    into 17-bit unsigned low parts and a signed top part, every partial product is
    registered, and the partial sums are added in a balanced tree, one level per cycle.

    Ports: ``a``, ``b`` (in), ``p`` (out, a_width + b_width bits), ``en`` (in, stall).
    Latency: ``LATENCY`` enabled cycles (operand registers, products, then the adder tree).
    Throughput: one product per cycle.
    """

    SPLIT = 17

    def __init__(self, a_width: int, b_width: int):
        self.a_width, self.b_width = a_width, b_width
        self.a_parts = self._parts(a_width)
        self.b_parts = self._parts(b_width)
        self.levels = self._levels(len(self.a_parts) * len(self.b_parts))
        self.LATENCY = self.latency(a_width, b_width)
        super().__init__({"a": In(signed(a_width)), "b": In(signed(b_width)),
                          "en": In(1), "p": Out(signed(a_width + b_width))})

    @classmethod
    def latency(cls, a_width: int, b_width: int) -> int:
        """The ``LATENCY`` of an ``a_width`` x ``b_width`` instance, without building one (a
        unit's stage plan may need it before elaboration)."""
        return 2 + cls._levels(len(cls._parts(a_width)) * len(cls._parts(b_width)))

    @staticmethod
    def _levels(products: int) -> int:
        return max(0, (products - 1).bit_length())

    @classmethod
    def _parts(cls, width):
        """(low bit, width, signed) pieces: unsigned 17-bit lows, a signed top piece."""
        parts, lo = [], 0
        while width - lo > cls.SPLIT + 1:
            parts.append((lo, cls.SPLIT, False))
            lo += cls.SPLIT
        parts.append((lo, width - lo, True))
        return parts

    def elaborate(self, platform):
        m = Module()
        ar, br = Signal.like(self.a), Signal.like(self.b)
        with m.If(self.en):
            m.d.sync += [ar.eq(self.a), br.eq(self.b)]

        def piece(value, lo, width, is_signed):
            bits = value[lo:lo + width]
            return bits.as_signed() if is_signed else bits.as_unsigned()

        terms = []
        for alo, aw, asg in self.a_parts:
            for blo, bw, bsg in self.b_parts:
                t = Signal(signed(self.a_width + self.b_width))
                with m.If(self.en):
                    m.d.sync += t.eq(piece(ar, alo, aw, asg) * piece(br, blo, bw, bsg)
                                     << (alo + blo))
                terms.append(t)
        while len(terms) > 1:
            nxt = []
            for i in range(0, len(terms), 2):
                t = Signal(signed(self.a_width + self.b_width))
                with m.If(self.en):
                    m.d.sync += t.eq(terms[i] + terms[i + 1] if i + 1 < len(terms)
                                     else terms[i])
                nxt.append(t)
            terms = nxt
        m.d.comb += self.p.eq(terms[0])
        return m
