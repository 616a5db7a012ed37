"""Shared pipeline building blocks: the sigmoid lookup and the rounding shift.

Units are stall pipelines: every stage advances together while ``en`` is high (the output
is ready or empty), so a block here is told ``en`` and has a fixed latency in enabled
cycles.
"""

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from mmfree_fpga import numerics as N

X = signed(N.X_BITS)
GATE = unsigned(N.GATE_FRAC + 1)          # 0 .. 2^24 inclusive


def rshift_round(value, n: int):
    """``floor(value / 2^n + 1/2)`` as numerics.rshift_round (round half up)."""
    if n <= 0:
        return value << -n
    return (value + (1 << (n - 1))) >> n


def saturate(value, bits: int = N.X_BITS):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return Mux(value > hi, hi, Mux(value < lo, lo, value))


class Sigmoid(wiring.Component):
    """sigma(z): the 1025-knot Q0.24 table of ``numerics.SIGMOID_TABLE``, linear
    interpolation on the 11 bits between knots, z clamped to [-16, 16].

    Ports: ``z`` (X, in), ``y`` (Q0.24 in 25 bits, out), ``en`` (in).
    Latency: 2 enabled cycles (table read, interpolation register). Throughput: 1 per cycle.
    Resources: one 1026 x 25 table with two read ports, one 21 x 11 multiply.
    """

    z: In(X)
    y: Out(GATE)
    en: In(1)

    def elaborate(self, platform):
        m = Module()
        table = [int(v) for v in N.SIGMOID_TABLE]
        m.submodules.table = mem = memory.Memory(shape=GATE, depth=len(table), init=table)
        lo_port = mem.read_port(domain="sync")
        hi_port = mem.read_port(domain="sync")

        lim = N.SIG_RANGE << N.X_FRAC
        t = Signal(range(2 * lim + 1))
        m.d.comb += t.eq(Mux(self.z > lim, 2 * lim, Mux(self.z < -lim, 0, self.z + lim)))
        frac = Signal(N.SIG_SHIFT)
        m.d.comb += [
            lo_port.addr.eq(t >> N.SIG_SHIFT), hi_port.addr.eq((t >> N.SIG_SHIFT) + 1),
            lo_port.en.eq(self.en), hi_port.en.eq(self.en),
        ]
        with m.If(self.en):
            m.d.sync += frac.eq(t[:N.SIG_SHIFT])
        diff = Signal(signed(N.GATE_FRAC + 2))
        m.d.comb += diff.eq(hi_port.data - lo_port.data)
        with m.If(self.en):
            m.d.sync += self.y.eq(lo_port.data + rshift_round(diff * frac, N.SIG_SHIFT))
        return m


# A constant some units need: 1.0 in the gate format.
GATE_ONE = Const(N.GATE_ONE, GATE)
