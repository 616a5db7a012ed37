"""The accelerator on a serial line: what a board's top instantiates between its UART pins
(the boards issue adds the PLL and the pin constraints), and :class:`UartLoop`, a
simulation fixture that puts a second UART, the host's USB adapter, on the other end of
the line so the Verilator harness (``verilator/harness.cpp``) drives the whole path, bit
timing included, with the host's byte streams.

Data path (8N1, both directions at one baud, full duplex)::

    rx pin -> UARTReceiver -> FrameLink (frames checked) -> CommandProcessor -> core
    tx pin <- UARTTransmitter <- FrameLink (reply frames) <---------------------'
"""

import math
from fractions import Fraction

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from mmfree_fpga.core_config import CoreConfig, SdramConfig

from .top import LinkedAccelerator
from .uart import FRAME_BITS, UART, BitClock


def line_hold_cycles(clock: BitClock) -> int:
    """Cycles for which a frame that begins (its start bit's fall) keeps a line busy: to
    the end of its stop bit, and to the peer receiver's delivery of the byte (9.5 bit
    periods + ``rx_offsets[9]`` + ``UARTReceiver.LATENCY`` + 1 cycles after the fall, the
    receiver's synchroniser and FIFO included), whichever is later, plus 2 cycles of
    margin. 169 at 50 MHz / 3 Mbaud (a frame is 500/3 = 166.7 cycles)."""
    cpb = clock.cycles_per_bit
    frame = FRAME_BITS * cpb
    deliver = Fraction(19, 2) * cpb + Fraction(clock.rx_offsets[FRAME_BITS - 1][1]) + 3
    return math.ceil(max(frame, deliver)) + 2


def _countdown(m: Module, name: str, load, hold: int) -> Signal:
    """A counter that restarts at ``hold`` in every cycle ``load`` is high; returns a
    signal high while ``load`` is or the count has not run out."""
    cnt = Signal(range(hold + 1), name=f"{name}_hold")
    with m.If(load):
        m.d.sync += cnt.eq(hold)
    with m.Elif(cnt != 0):
        m.d.sync += cnt.eq(cnt - 1)
    active = Signal(name=f"{name}_active")
    m.d.comb += active.eq(load | (cnt != 0))
    return active


def uart_activity(m: Module, uart: UART, rx_pin, clock: BitClock, name: str) -> Signal:
    """A signal high while ``uart`` (an 8N1 :class:`UART` whose ``rx`` is ``rx_pin``,
    timed by ``clock``) or either of its lines may still do something without new input.
    It sees only the UART's ports (its state machines are its own), and is exact up to a
    few cycles and independent of the bytes' values (so a simulation that stops its clock
    when it falls stays deterministic):

    - transmitter: a byte in its holding register (``i.ready`` low), or a frame on the
      line: ``i.ready`` rises at the very edge at which ``tx`` falls for a start bit (the
      held byte moves to the shift register), so a rise starts a count of
      :func:`line_hold_cycles` (169 at 50 MHz / 3 Mbaud) that covers the frame and the
      peer's delivery of its byte;
    - receiver: a start bit on ``rx_pin`` (through a 2-flip-flop synchroniser like the
      receiver's own) starts the same count; the watcher then ignores the line until
      about 9.5 bit periods after the fall (inside the stop bit, whatever the data bits
      were) and looks for the next start bit from there, as the receiver does; a line
      held low (a break) keeps it busy. Also a received byte not yet taken (``o.valid``).

    Cost: 4 flip-flops and three counters of bits(hold) (8 at 50 MHz / 3 Mbaud).
    """
    hold = line_hold_cycles(clock)
    ready_q = Signal(init=1, name=f"{name}_tx_ready_q")
    m.d.sync += ready_q.eq(uart.i.ready)
    tx_frame = _countdown(m, f"{name}_tx", uart.i.ready & ~ready_q, hold)

    rx_s = Signal(init=1, name=f"{name}_rx_s")
    m.submodules[f"{name}_rx_watch"] = FFSynchronizer(rx_pin, rx_s, init=1, stages=2)
    # seen in the cycle after the synchroniser's 2nd edge: the count's last cycle takes
    # the line as it was about round(9.5 bits) after the fall
    rearm = max(1, round(Fraction(19, 2) * clock.cycles_per_bit) - 1)
    wait = Signal(range(rearm + 1), name=f"{name}_rx_rearm")
    start = Signal(name=f"{name}_rx_start")
    m.d.comb += start.eq(~rx_s & (wait == 0))
    with m.If(start):
        m.d.sync += wait.eq(rearm)
    with m.Elif(wait != 0):
        m.d.sync += wait.eq(wait - 1)
    rx_frame = _countdown(m, f"{name}_rx", start, hold)

    active = Signal(name=f"{name}_busy")
    m.d.comb += active.eq(~uart.i.ready | tx_frame | rx_frame | uart.o.valid)
    return active


class SerialAccelerator(wiring.Component):
    """``LinkedAccelerator`` (FrameLink + command processor + core) behind an 8N1 UART.

    ``SerialAccelerator(cfg, clk_freq, baud, **link_args)``: ``cfg`` the core's
    :class:`CoreConfig`; ``clk_freq`` (Hz) and ``baud`` make the UART's fractional bit
    clock (``uart.BitClock``; construction raises ``ValueError`` below 8 cycles per bit or
    beyond 1 % error; 50 MHz / 3 Mbaud is exact, 50/3 cycles per bit); ``link_args`` go to
    ``FrameLink`` (``heartbeat``, ``rx_timeout``, ``max_payload``, ...: cycles, so scale
    them to the clock; the protocol's defaults are 21 ms and 84 ms at 50 MHz).
    ``max_denominator`` is the UART's. ``sdram`` (a ``SdramConfig``): the weights in SDRAM,
    as ``top.Accelerator`` builds them; the component then has ``LinkedAccelerator``'s
    ``sdram`` port (the chip's pins, data bus split) for the board shell.

    Ports:

    - ``rx``: In(1), the serial line from the host (idle high; asynchronous, synchronised
      inside).
    - ``tx``: Out(1), the serial line to the host, a flip-flop, idle high (also in reset).
    - ``busy``: Out(1), low only when nothing happens until a start bit arrives on
      ``rx``: the link hunts, the processor waits, no reply byte is held or on ``tx``, no
      frame on ``rx`` is still coming in (:func:`uart_activity`: from the ports, exact to
      a few cycles and independent of the bytes' values; it falls 3-4 cycles after the
      last stop bit on either line ends). Not needed on a board (leave it unconnected:
      its logic is optimised away); a simulation that stops its clock while idle needs
      it.
    - ``frame_errors``, ``overruns``: Out(``error_bits``, default 8), the receiver's
      ``frame_error`` and ``overrun`` pulses counted, saturating at all ones, cleared only
      by reset: a board shows them on LEDs (a wrong baud or a noisy line shows as
      frame errors). ``overruns`` stays 0 here: FrameLink takes a byte in every cycle.

    Latency: a frame's bytes reach FrameLink ``UARTReceiver.LATENCY`` (2) cycles after the
    edge that sampled each stop bit (9.5 bit periods + at most a few cycles after its
    start bit's fall); a command's first byte reaches the processor 4 cycles after the
    frame's last CRC byte (``FrameLink``); a reply byte leaves FrameLink's output
    register and starts its start bit ``UARTTransmitter.LATENCY`` (2) cycles later when
    the line is idle, else right after the frame on the line.

    Throughput: the line rate each way, 10 bit periods a byte (``baud / 10`` bytes/s:
    300 kB/s at 3 Mbaud), back to back: FrameLink takes every byte the receiver gives and
    keeps the transmitter's holding register full while a frame goes out. The link is
    stop-and-wait per command (``protocol``, "Line efficiency"): a WRITE of 2038 data bytes
    costs its 2058-byte frame, the 2048 cycles in which FrameLink hands the checked
    command to the processor, and a 13-byte reply; measured in simulation
    (tests/test_sim_uart_link.py, 50 MHz, 3 Mbaud, host latency 0): 97.8 % of the line
    rate.

    Resources: the UART (~100 LUT4, 68 FF on ECP5 at 50 MHz / 3 Mbaud), the error
    counters, ``busy``'s watchers (unused on a board), and ``LinkedAccelerator``.
    """

    def __init__(self, cfg: CoreConfig, clk_freq: float, baud: float, *,
                 max_denominator: int = 256, error_bits: int = 8,
                 sdram: SdramConfig | None = None, **link_args):
        if error_bits < 1:
            raise ValueError("error_bits must be >= 1")
        self.cfg, self.clk_freq, self.baud = cfg, clk_freq, baud
        self.max_denominator, self.error_bits = max_denominator, error_bits
        self.bit_clock = BitClock(clk_freq, baud, max_denominator)   # checks the pair
        self.cycles_per_bit = self.bit_clock.cycles_per_bit
        self.acc = LinkedAccelerator(cfg, sdram=sdram, **link_args)
        members = {
            "rx": In(1), "tx": Out(1, init=1), "busy": Out(1),
            "frame_errors": Out(error_bits), "overruns": Out(error_bits),
        }
        if sdram is not None:
            members["sdram"] = self.acc.signature.members["sdram"]
        super().__init__(members)

    def verilog_sources(self):
        """Verilog files a build compiles beside this design (the SDRAM controller)."""
        return self.acc.verilog_sources()

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart = uart = UART(self.clk_freq, self.baud,
                                        max_denominator=self.max_denominator)
        m.submodules.acc = acc = self.acc
        if "sdram" in self.signature.members:
            wiring.connect(m, acc.sdram, wiring.flipped(self.sdram))
        wiring.connect(m, uart.o, acc.cmd_in)
        wiring.connect(m, acc.cmd_out, uart.i)
        m.d.comb += [uart.rx.eq(self.rx), self.tx.eq(uart.tx)]
        for pulse, count in ((uart.frame_error, self.frame_errors),
                             (uart.overrun, self.overruns)):
            with m.If(pulse & (count != (1 << self.error_bits) - 1)):
                m.d.sync += count.eq(count + 1)
        line = uart_activity(m, uart, self.rx, self.bit_clock, "line")
        m.d.comb += self.busy.eq(acc.busy | line)
        return m


class UartLoop(wiring.Component):
    """Simulation fixture (not for a board): the host's USB serial adapter, modelled by a
    second instance of our :class:`UART`, wired to a :class:`SerialAccelerator`, with the
    Verilator harness's ports (``verilator.build.PORTS``), so the harness's byte streams
    are the host adapter's: what the host writes goes out on the wire bit by bit at the
    UART's rate, and what comes back over the wire is what the host reads.

    - ``cmd_in``: In stream, 8 bits: bytes to send (the adapter's transmitter; ready while
      its holding register is free, so the harness is paced at the line rate).
    - ``cmd_out``: Out stream, 8 bits: bytes received (the adapter's receiver FIFO; keep
      ``ready`` high, as the harness does, or bytes overrun like a real adapter's).
    - ``busy``: Out(1), low only when both UARTs are idle (nothing held, no frame on
      either wire, no received byte waiting) and the link and processor wait for a byte:
      the accelerator's ``busy`` and :func:`uart_activity` of the adapter. The harness
      stops the clock while busy is low and it has no input, so a byte still on a wire
      keeps it high until its receiver has delivered it.

    ``UartLoop(cfg, clk_freq, baud, **link_args)``: the same arguments as
    SerialAccelerator (``accel`` is it). Both ends share the clock, so the baud error is
    0 between them: the UART's tolerance is tested against cocotbext-uart, not here.
    """

    cmd_in: In(stream.Signature(8))
    cmd_out: Out(stream.Signature(8))
    busy: Out(1)

    def __init__(self, cfg: CoreConfig, clk_freq: float, baud: float, **kwargs):
        self.accel = SerialAccelerator(cfg, clk_freq, baud, **kwargs)
        self.clk_freq, self.baud = clk_freq, baud
        self.cycles_per_bit = self.accel.cycles_per_bit
        super().__init__()

    def line_rate_cycles(self, n_bytes: int) -> Fraction:
        """Cycles that ``n_bytes`` take on the wire at the UART's exact rate (10 bits
        each, the start and stop bits included)."""
        return n_bytes * FRAME_BITS * self.cycles_per_bit

    def elaborate(self, platform):
        m = Module()
        m.submodules.host = host = UART(self.clk_freq, self.baud,
                                        max_denominator=self.accel.max_denominator)
        m.submodules.accel = accel = self.accel
        wiring.connect(m, wiring.flipped(self.cmd_in), host.i)
        wiring.connect(m, host.o, wiring.flipped(self.cmd_out))
        m.d.comb += [accel.rx.eq(host.tx), host.rx.eq(accel.tx)]
        line = uart_activity(m, host, accel.tx, accel.bit_clock, "host")
        m.d.comb += self.busy.eq(accel.busy | line)
        return m
