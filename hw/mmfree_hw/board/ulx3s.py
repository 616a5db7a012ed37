"""The ULX3S board shell: what a bitstream adds around the simulated design.

Inside is ``serial_top.SerialAccelerator`` with the board's ``CoreConfig`` and
``SdramConfig`` from ``mmfree_fpga.boards`` (the same objects ``--backend sim --board``
builds the simulator from); around it only what a board needs:

- the PLL (``Ecp5Pll``): the 25 MHz oscillator to the core clock (``sync``; the SDRAM
  controller runs on it too) and the same frequency at ``board.sdram_clock_phase``
  (``sdram_ps``), which clocks the SDRAM chip through an ``ODDRX1F`` on its clock pin.
  LiteDRAM's 1:1 PHY counts its read latency from the edge on which its pins change; a
  chip clocked in phase with it would see commands a cycle early relative to that count
  (in simulation every read came back a cycle late), so the chip's clock is shifted, as
  litex-boards' ULX3S target does (its sys_ps domain) and as the simulation does (the chip
  model on the inverted clock). The reset of both domains is held until the PLL locks.
- the pins: the FT231X UART (``rx``/``tx``), the SDRAM (command, address and mask outputs
  through plain output buffers, since LiteDRAM's PHY already registers them; the data bus
  through a tristate buffer from the split ``dq_o``/``dq_oe``/``dq_i``), and the LEDs.

LEDs (0 is the rightmost on the board): 0 heartbeat (about 1.5 Hz: the core clock runs),
1 PLL locked, 2 the accelerator is busy, 3 UART frame errors seen, 4 UART overruns seen.
"""

from __future__ import annotations

from amaranth import Elaboratable, Module, Signal
from amaranth.lib import io

from mmfree_fpga.boards import Board
from mmfree_fpga.link import protocol as P

from ..serial_top import SerialAccelerator
from .ecp5_pll import Ecp5Pll


def link_args(core_hz: float) -> dict:
    """FrameLink's timeouts scaled from the protocol's 50 MHz defaults to ``core_hz`` by a
    power of two, so that their durations (the receive timeout that drops a stalled frame,
    the heartbeat the host waits on) stay at least what they are at 50 MHz: a USB serial
    adapter may hold a frame's tail back for its 16 ms latency timer."""
    scale = 1
    while 50e6 * scale < core_hz:
        scale *= 2
    return {"rx_timeout": P.DEFAULT_RX_TIMEOUT * scale,
            "heartbeat": P.DEFAULT_HEARTBEAT * scale}


class Ulx3sTop(Elaboratable):
    """The top level of a ULX3S bitstream for ``board`` (a ``boards.Board`` of the ULX3S
    family). ``accel`` is the design inside (a ``SerialAccelerator``)."""

    def __init__(self, board: Board):
        if board.core is None:
            raise ValueError(f"{board.name}: {board.status}")
        self.board = board
        self.accel = SerialAccelerator(board.core, board.core_hz, board.uart_baud,
                                       sdram=board.sdram, **link_args(board.core_hz))
        outputs = [("sync", board.core_hz, 0.0)]
        if board.sdram is not None:
            outputs.append(("sdram_ps", board.core_hz, board.sdram_clock_phase))
        self.pll = Ecp5Pll(board.clk_in_hz, outputs)

    def verilog_sources(self):
        return self.accel.verilog_sources()

    def elaborate(self, platform):
        m = Module()
        b = self.board
        clk_in = platform.request("clk25", dir="-")
        m.submodules.clk_in = clk_buf = io.Buffer("i", clk_in)
        m.submodules.pll = pll = self.pll
        m.d.comb += pll.clk_in.eq(clk_buf.i)
        m.submodules.accel = acc = self.accel

        uart = platform.request(b.uart_resource, 0)
        m.d.comb += [acc.rx.eq(uart.rx.i), uart.tx.o.eq(acc.tx)]

        if b.sdram is not None:
            pads = platform.request("sdram", 0, dir="-")
            s = acc.sdram
            # the resource names the active-low pins by their function (PinsN), so the
            # buffers invert the controller's *_n outputs back
            for name, value in (("clk_en", s.cke), ("cs", ~s.cs_n), ("ras", ~s.ras_n),
                                ("cas", ~s.cas_n), ("we", ~s.we_n), ("ba", s.ba),
                                ("a", s.a), ("dqm", s.dm)):
                m.submodules[f"sdram_{name}"] = buf = io.Buffer("o", getattr(pads, name))
                m.d.comb += buf.o.eq(value)
            m.submodules.sdram_dq = dq = io.Buffer("io", pads.dq)
            m.d.comb += [dq.o.eq(s.dq_o), dq.oe.eq(s.dq_oe), s.dq_i.eq(dq.i)]
            m.submodules.sdram_clk = ck = io.DDRBuffer("o", pads.clk, o_domain="sdram_ps")
            m.d.comb += [ck.o[0].eq(1), ck.o[1].eq(0)]

        beat = Signal(range(max(2, int(b.core_hz / 3))))
        blink = Signal()
        with m.If(beat == 0):
            m.d.sync += [beat.eq(int(b.core_hz / 3) - 1), blink.eq(~blink)]
        with m.Else():
            m.d.sync += beat.eq(beat - 1)
        leds = [platform.request("led", i).o for i in range(5)]
        m.d.comb += [leds[0].eq(blink), leds[1].eq(pll.locked), leds[2].eq(acc.busy),
                     leds[3].eq(acc.frame_errors != 0), leds[4].eq(acc.overruns != 0)]
        return m
