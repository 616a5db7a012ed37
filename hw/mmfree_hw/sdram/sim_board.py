"""The simulated ULX3S memory: a design with SDRAM pins (``top.LinkedAccelerator(...,
sdram=)``) and the timing-checked chip model on them, as one top with the Verilator
harness's ports (``cmd_in``, ``cmd_out``, ``busy``).

The chip model (``mt48lc16m16a2.v``) runs on the inverted system clock: on the board the
SDRAM clock pin is the system clock phase-shifted (litex-boards' ULX3S: a PLL output at
90 degrees; 180 degrees from an ``ODDRX1F``), because LiteDRAM expects the chip to take a
command in the cycle its pins change and counts its read latency from there. The chip is
built with ``FATAL = 1``: the first datasheet violation ends the simulation with the
rule's name on stderr and a non-zero exit, which the host sees as the simulator dying.
"""

from pathlib import Path

from amaranth import ClockSignal, Instance, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

#: The chip model's Verilog (Micron MT48LC16M16A2, the ULX3S's 32 MB part).
CHIP_MODEL = Path(__file__).with_name("mt48lc16m16a2.v")


class ChipModelBoard(wiring.Component):
    """``inner`` (a component with ``cmd_in``, ``cmd_out``, ``busy`` and ``sdram`` pins,
    and a ``verilog_sources()``) with the chip model on its pins. Ports: ``cmd_in``,
    ``cmd_out``, ``busy``, passed through unchanged (no latency). ``clock_hz``: the
    system clock the chip model checks its timing against. ``dq_fault``: data bits that
    read back inverted (a broken board, for the tests of the power-up check)."""

    cmd_in: In(stream.Signature(8))
    cmd_out: Out(stream.Signature(8))
    busy: Out(1)

    def __init__(self, inner, clock_hz: float, dq_fault: int = 0):
        self.inner, self.clock_hz, self.dq_fault = inner, clock_hz, dq_fault
        super().__init__()

    def verilog_sources(self) -> list[Path]:
        return [*self.inner.verilog_sources(), CHIP_MODEL]

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = self.inner
        wiring.connect(m, wiring.flipped(self.cmd_in), inner.cmd_in)
        wiring.connect(m, inner.cmd_out, wiring.flipped(self.cmd_out))
        m.d.comb += self.busy.eq(inner.busy)
        pins = inner.sdram
        dq_i = Signal.like(pins.dq_i)
        m.d.comb += pins.dq_i.eq(dq_i ^ self.dq_fault)
        m.submodules.chip = Instance(
            "mt48lc16m16a2_split",
            p_TCK_PS=round(1e12 / self.clock_hz), p_FATAL=1,
            i_clk=~ClockSignal(), i_cke=pins.cke, i_cs_n=pins.cs_n, i_ras_n=pins.ras_n,
            i_cas_n=pins.cas_n, i_we_n=pins.we_n, i_ba=pins.ba, i_a=pins.a, i_dm=pins.dm,
            i_dq_o=pins.dq_o, i_dq_oe=pins.dq_oe, o_dq_i=dq_i)
        return m
