"""The host link's serial port: an 8N1 UART (one start bit, 8 data bits LSB first, one stop
bit, no parity) as three components: :class:`UARTReceiver`, :class:`UARTTransmitter` and
:class:`UART`, the two side by side. Bytes move on ``lib.stream`` ports; the pins are ``rx``
(in) and ``tx`` (out, idle high).

The bit clock is an error-diffusing (Bresenham) divider, :class:`BitClock`: the bit period
in clock cycles, ``clk_freq / baud``, is kept as a fraction n / d, and a phase counter
modulo n advances by d per cycle; each wrap ends a bit. Bits last floor or ceil of n / d
cycles and every bit boundary lies less than one cycle after its ideal position, so the
rate is exact on average (no drift) whenever clk_freq / baud is a fraction of small
denominator: 3 Mbaud is 16, 50/3, 20 and 100/3 cycles per bit at 48, 50, 60 and 100 MHz,
all exact (error 0). An integer divider would be off by -1.96 % at 50 MHz (17 cycles) and
+1.01 % at 100 MHz (33): that is why it is fractional. Other ratios are approximated by
the nearest fraction with d <= ``max_denominator`` (256 by default: an error of at most
1 / (257 x cycles per bit), under 0.05 %; ``max_denominator=1`` gives a plain integer
divider).
"""

from __future__ import annotations

from fractions import Fraction

from amaranth import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

FRAME_BITS = 10                 # start, 8 data, stop


class BitClock:
    """The divider: its arithmetic, checked at construction; :meth:`counter`, which builds
    one phase counter (each direction has its own: the receiver restarts its counter at
    every start bit, the transmitter when it leaves idle); and the receiver's sampling
    plan.

    - ``cycles_per_bit``: the Fraction n / d the hardware uses; ``n``, ``d``.
    - ``actual_baud``: ``clk_freq * d / n``; ``baud_error``: ``actual_baud / baud - 1``.
    - ``rx_phase0``: the receiver's counter value at a start edge, chosen (by search over
      the 10 samples of a frame) to centre its samples on the bits; ``rx_offsets``: per
      bit (start, 8 data, stop) the interval [lo, lo + 1) in cycles, over where the edge
      falls within a clock cycle, of the sample's distance from the bit's ideal centre.
    - ``rx_tolerance``: (fast, slow), the largest relative rate error of a peer, faster
      and slower than ``actual_baud``, at which every sample still lands inside its bit
      (ideal peer edges: a peer's own jitter comes off it). At 3 Mbaud: 5.0 / 4.9 % at
      48 MHz, 5.2 / 4.7 % at 50, 5.0 / 5.0 % at 60, 5.2 / 5.0 % at 100; at least 4.0 %
      either way at any ratio of 8 or more cycles per bit (the least: 25/3, fast).

    Refuses (``ValueError``) fewer than ``MIN_CYCLES_PER_BIT`` (8) cycles per bit: a
    sample is only known to within one cycle (where the edge fell in its cycle), which at
    8 cycles per bit already costs a quarter of the half-bit margin; and a ``baud_error``
    beyond ``MAX_BAUD_ERROR`` (1 %): 8N1 samples its stop bit 9.5 bits after the start
    edge, so the two ends may differ by about 0.5 / 10 = 5 % in all, less the sampling
    uncertainty; 1 % at this end leaves a peer its customary 2 %, with margin.
    """

    MIN_CYCLES_PER_BIT = 8
    MAX_BAUD_ERROR = 0.01

    def __init__(self, clk_freq: float, baud: float, max_denominator: int = 256):
        if not clk_freq > 0 or not baud > 0:
            raise ValueError(f"clk_freq ({clk_freq}) and baud ({baud}) must be positive")
        if max_denominator < 1:
            raise ValueError("max_denominator must be >= 1")
        exact = Fraction(clk_freq) / Fraction(baud)
        if exact < self.MIN_CYCLES_PER_BIT:
            raise ValueError(
                f"baud {baud:g} is too high for a {clk_freq / 1e6:g} MHz clock: "
                f"{float(exact):.2f} cycles per bit, the UART needs at least "
                f"{self.MIN_CYCLES_PER_BIT} (at most {clk_freq / self.MIN_CYCLES_PER_BIT:g} "
                f"baud at this clock)")
        self.clk_freq, self.baud = clk_freq, baud
        self.cycles_per_bit = exact.limit_denominator(max_denominator)
        self.n = self.cycles_per_bit.numerator
        self.d = self.cycles_per_bit.denominator
        self.actual_baud = float(Fraction(clk_freq) / self.cycles_per_bit)
        self.baud_error = float(exact / self.cycles_per_bit - 1)
        if abs(self.baud_error) > self.MAX_BAUD_ERROR:
            raise ValueError(
                f"baud {baud:g} at {clk_freq / 1e6:g} MHz: the nearest divider, "
                f"{self.n}/{self.d} cycles per bit, gives {self.actual_baud:.6g} baud, "
                f"{self.baud_error:+.2%} off; 8N1 allows at most "
                f"±{self.MAX_BAUD_ERROR:.0%} at this end (raise max_denominator, now "
                f"{max_denominator}, or pick another clock)")
        self._plan()

    def _offsets(self, phase0: int) -> list[Fraction]:
        # The line falls at t0 = k0 - f (k0: the first edge after it, f in [0, 1)). The
        # synchroniser's first stage takes it at k0, its output at k0 + 1, the receiver
        # loads its counter at k0 + 2; the counter's tick in cycle k0 + 2 + j takes the
        # line as the first stage saw it at k0 + 1 + j. Sample k ticks in cycle
        # j_k = ceil(((k + 1) n - phase0) / d) - 1, so it lies j_k + 1 + f - (k + 1/2) n/d
        # from its bit's centre: lo = j_k + 1 - (k + 1/2) n/d.
        n, d = self.n, self.d
        return [-((phase0 - (k + 1) * n) // d) - (k + Fraction(1, 2)) * Fraction(n, d)
                for k in range(FRAME_BITS)]

    def _tolerance(self, lo: list[Fraction]) -> tuple[Fraction, Fraction]:
        # sample k, at (k + 1/2) P + [lo_k, lo_k + 1), must lie in (k T', (k + 1) T'),
        # T' = P (1 - e) for a fast peer, P (1 + e) for a slow one
        p = self.cycles_per_bit
        fast = min((p / 2 - a - 1) / ((k + 1) * p) for k, a in enumerate(lo))
        slow = min((p / 2 + a) / (k * p) for k, a in enumerate(lo) if k)
        return fast, slow

    def _plan(self):
        # The counter's load value at a start edge: the one (near half a bit) whose worse
        # direction tolerates the largest peer error. A fast peer's stop bit ends 10 bits
        # after the edge, a slow one's begins 9 bits after it, so the best samples sit a
        # little before the centres.
        n, d = self.n, self.d
        candidates = range(max(0, n // 2 - 3 * d), min(n, n // 2 + 3 * d + 1))
        self.rx_phase0 = max(candidates, key=lambda phase0: (
            min(self._tolerance(self._offsets(phase0))), -phase0))
        lo = self._offsets(self.rx_phase0)
        self.rx_offsets = [(float(a), float(a + 1)) for a in lo]
        self.rx_tolerance = tuple(float(t) for t in self._tolerance(lo))

    def counter(self, m: Module, name: str) -> tuple[Signal, Signal]:
        """Add a free-running phase counter (range n, + d per cycle, modulo n) to ``m``.
        Returns (phase, tick): ``tick`` is high in the cycle whose edge ends a bit. The
        caller may load ``phase`` with a later ``m.d.sync`` assignment (it wins)."""
        phase = Signal(range(self.n), name=f"{name}_phase")
        tick = Signal(name=f"{name}_tick")
        # phase + d >= n, written as a compare with a constant: no adder on the tick path
        m.d.comb += tick.eq(phase >= self.n - self.d)
        m.d.sync += phase.eq(phase + self.d)
        with m.If(tick):
            m.d.sync += phase.eq(phase - (self.n - self.d))
        return phase, tick

    def __repr__(self):
        return (f"BitClock({self.clk_freq:g} Hz, {self.baud:g} baud: {self.n}/{self.d} "
                f"cycles per bit, {self.baud_error:+.3e})")


def _divider_props(obj, clock: BitClock):
    obj.bit_clock = clock
    obj.cycles_per_bit = clock.cycles_per_bit
    obj.actual_baud = clock.actual_baud
    obj.baud_error = clock.baud_error


class UARTReceiver(wiring.Component):
    """8N1 receiver: ``rx`` pin in, bytes out on ``o``.

    Ports:

    - ``rx``: In(1), the line (idle high), asynchronous: it passes two flip-flops
      (``lib.cdc.FFSynchronizer``, initialised high so a reset line does not look like a
      start bit) before anything looks at it.
    - ``o``: Out stream of 8 bits, one beat per good frame, in arrival order, from a
      ``fifo_depth``-entry FIFO (``lib.fifo.SyncFIFOBuffered``: ``o.valid`` and
      ``o.payload`` come straight from flip-flops).
    - ``frame_error``: Out(1), a one-cycle pulse per frame whose stop bit was low; that
      frame's byte is dropped.
    - ``overrun``: Out(1), a one-cycle pulse per good frame that found the FIFO full; that
      (newest) byte is dropped, the bytes already queued are kept and keep their order.
      Nothing is ever overwritten: ``o`` carries exactly the good frames that found room.

    Both pulses come from flip-flops, one cycle after the stop bit's sample; a parent that
    wants sticky flags or counters adds them (one register each).

    Frame: in idle, a low synchronised ``rx`` is a start edge; the phase counter is loaded
    with ``BitClock.rx_phase0``, so that its ticks fall near the bit centres with the
    synchroniser's delay taken off: each sample lies in a one-cycle window
    (``rx_offsets``; where in its cycle the edge fell is unknown) a few cycles at most
    from its bit's centre, placed where it tolerates the largest peer error
    (``rx_tolerance``): at 3 Mbaud from 50 MHz, between 4/3 cycles early and 1/3 late.
    The start bit is sampled near its centre: high there is a glitch, not a frame, and the
    receiver returns to idle. Eight data bits (LSB first) follow, then the stop bit: high
    delivers the byte, low is a framing error. After a framing error the receiver waits
    until ``rx`` is high again before it looks for a start bit, so a break (the line held
    low for any time) yields one ``frame_error`` and no bytes, not a stream of 0x00. After
    a good stop bit it looks for the next start edge from the stop bit's sample on, so a
    fast peer's next frame is not missed.

    Tolerance (``bit_clock.rx_tolerance``, worked out from the sampling plan and checked
    against a bit-banged peer in tests/test_uart_amaranth.py): a peer 5.2 % fast or 4.7 %
    slow at 3 Mbaud from 50 MHz, at least 4.0 % either way at any rate allowed.

    Latency: ``LATENCY`` = 2: the byte is valid on ``o`` 2 cycles after the cycle whose
    edge took the stop bit's sample (the FIFO's write, then its output register). That
    cycle is k0 + 2 + j_9, k0 being the first clock edge after the start bit's fall and
    j_9 = ceil((10 n - rx_phase0) / d) - 1 (the counter starts at k0 + 2); in time,
    ``o.valid`` rises 9.5 bit periods + ``rx_offsets[9]`` + 3 cycles after the fall.
    Throughput: one byte per frame, back to back at the
    line's full rate (a new start edge is seen from the stop bit's centre on). ``o.ready``
    may stay low for up to ``fifo_depth`` frames without loss (the FIFO is ``fifo_depth``
    deep, its output register included); after that, good frames overrun.

    Resources: 2 synchroniser flip-flops, the phase counter (bits of n: 6 at 50/3), a
    4-bit bit counter, an 8-bit shift register, 2 state and 2 pulse flip-flops, the FIFO
    (``fifo_depth`` - 1 words of distributed RAM and an 8-bit output register). ECP5
    (Yosys 0.70 synth_ecp5), 50 MHz, 3 Mbaud, fifo_depth 4: 54 LUT4, 6 CCU2C, 39 FF,
    2 TRELLIS_DPR16X4.
    """

    LATENCY = 2

    def __init__(self, clk_freq: float, baud: float, fifo_depth: int = 4,
                 max_denominator: int = 256):
        if fifo_depth < 2:
            raise ValueError("fifo_depth must be >= 2 (one queued byte beside the output "
                             "register, so a frame can land while the last is taken)")
        _divider_props(self, BitClock(clk_freq, baud, max_denominator))
        self.fifo_depth = fifo_depth
        super().__init__({
            "rx": In(1),
            "o": Out(stream.Signature(8)),
            "frame_error": Out(1),
            "overrun": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        clock = self.bit_clock
        rx = Signal(init=1)
        m.submodules.rx_sync = FFSynchronizer(self.rx, rx, init=1, stages=2)

        phase, tick = clock.counter(m, "rx")

        busy = Signal()             # inside a frame
        wait_high = Signal()        # after a framing error: until the line is high again
        bit = Signal(range(FRAME_BITS))   # 0: start bit, 1-8: data, 9: stop
        shreg = Signal(8)

        phase0 = clock.rx_phase0         # centres the samples (BitClock._offsets)

        m.submodules.fifo = fifo = SyncFIFOBuffered(width=8, depth=self.fifo_depth)
        stop = busy & tick & (bit == FRAME_BITS - 1)
        m.d.comb += [
            fifo.w_data.eq(shreg),
            fifo.w_en.eq(stop & rx),
            self.o.valid.eq(fifo.r_rdy),
            self.o.payload.eq(fifo.r_data),
            fifo.r_en.eq(self.o.ready),
        ]
        m.d.sync += [
            self.frame_error.eq(stop & ~rx),
            self.overrun.eq(stop & rx & ~fifo.w_rdy),
        ]

        with m.If(wait_high):
            with m.If(rx):
                m.d.sync += wait_high.eq(0)
        with m.Elif(~busy):
            with m.If(~rx):
                m.d.sync += [busy.eq(1), bit.eq(0), phase.eq(phase0)]
        with m.Elif(tick):
            with m.If(bit == FRAME_BITS - 1):
                m.d.sync += [busy.eq(0), wait_high.eq(~rx)]
            with m.Else():
                m.d.sync += bit.eq(bit + 1)
                with m.If(bit == 0):
                    with m.If(rx):                   # not low at its centre: a glitch
                        m.d.sync += busy.eq(0)
                with m.Else():
                    m.d.sync += shreg.eq(Cat(shreg[1:], rx))   # LSB first: bit 0 ends at [0]
        return m


class UARTTransmitter(wiring.Component):
    """8N1 transmitter: bytes in on ``i``, ``tx`` pin out.

    Ports:

    - ``i``: In stream of 8 bits. ``i.ready`` is a flip-flop: high while the one-byte
      holding register is empty, so the next byte can be taken while the current one is
      on the line.
    - ``tx``: Out(1), a flip-flop, idle high (also in reset).

    Frame: start bit (low), 8 data bits LSB first, stop bit (high); ``tx`` changes only at
    bit boundaries, which fall at the clock edges start + ceil(k * n / d) for k = 1 .. 10
    (every boundary less than one cycle after its ideal time, none drifting). A byte
    waiting in the holding register when the stop bit ends starts its start bit at that
    very edge and the phase counter runs on, so bytes offered faster than the line can
    take them leave back to back: each frame exactly 10 bit periods on average, no idle
    gap beyond the stop bit. Otherwise the line idles high and the next byte's start bit
    restarts the counter.

    Latency: ``LATENCY`` = 2: with the line idle, ``tx`` falls (the start bit) 2 cycles
    after the cycle whose edge accepted the byte (the holding register, then ``tx``).
    Throughput: one byte per frame, 10 bit periods (10 n / d cycles on average), while
    ``i`` keeps a byte waiting; ``i.ready`` returns the cycle after a byte leaves the
    holding register for the line, so the source has a whole frame to offer the next.

    Resources: the phase counter (bits of n: 6 at 50/3), a 4-bit bit counter, an 8-bit
    shift register, the 8-bit holding register, 3 flip-flops (busy, ready, ``tx``). ECP5
    (Yosys 0.70 synth_ecp5), 50 MHz, 3 Mbaud: 54 LUT4, 6 CCU2C, 29 FF.
    """

    LATENCY = 2

    def __init__(self, clk_freq: float, baud: float, max_denominator: int = 256):
        _divider_props(self, BitClock(clk_freq, baud, max_denominator))
        super().__init__({
            "i": In(stream.Signature(8)),
            "tx": Out(1, init=1),
        })

    def elaborate(self, platform):
        m = Module()
        clock = self.bit_clock
        phase, tick = clock.counter(m, "tx")

        held = Signal(8)                 # the holding register
        ready = Signal(init=1)           # held is empty
        busy = Signal()
        bit = Signal(range(FRAME_BITS))  # the bit on the line: 0 start, 1-8 data, 9 stop
        shreg = Signal(8)

        m.d.comb += self.i.ready.eq(ready)
        with m.If(self.i.valid & ready):
            m.d.sync += [held.eq(self.i.payload), ready.eq(0)]

        end = busy & tick & (bit == FRAME_BITS - 1)
        with m.If(~ready & (~busy | end)):           # load: the start bit begins
            m.d.sync += [self.tx.eq(0), shreg.eq(held), bit.eq(0), busy.eq(1),
                         ready.eq(1)]
            with m.If(~busy):                        # from idle: a fresh bit period
                m.d.sync += phase.eq(0)
        with m.Elif(end):
            m.d.sync += busy.eq(0)                   # tx stays high: the stop bit, then idle
        with m.Elif(busy & tick):
            # shifting in ones makes the stop bit the 9th bit out of shreg
            m.d.sync += [self.tx.eq(shreg[0]), shreg.eq(Cat(shreg[1:], Const(1, 1))),
                         bit.eq(bit + 1)]
        return m


class UART(wiring.Component):
    """An 8N1 UART: :class:`UARTReceiver` and :class:`UARTTransmitter` at one baud rate,
    each with its own phase counter (the receiver's restarts at every start bit).

    Ports: ``rx`` (In(1)), ``o`` (Out stream of 8 bits), ``frame_error`` and ``overrun``
    (Out(1) pulses) of the receiver; ``i`` (In stream of 8 bits) and ``tx`` (Out(1), idle
    high) of the transmitter; their docstrings give latency, throughput and error
    handling. The two directions are independent (full duplex).

    ``UART(clk_freq=50e6, baud=3_000_000)``: ``cycles_per_bit`` (a Fraction),
    ``actual_baud``, ``baud_error`` (signed, relative) describe the divider, and
    construction raises ``ValueError`` when the clock is too slow for the rate (fewer
    than 8 cycles per bit) or the divider cannot come within 1 % (see :class:`BitClock`).

    Resources (ECP5, Yosys 0.70 synth_ecp5, fifo_depth 4): 100 LUT4, 12 CCU2C, 68 FF,
    2 TRELLIS_DPR16X4 at 50 MHz and 3 Mbaud; 127 LUT4, 26 CCU2C, 84 FF at 115200 baud
    (n = 15625, d = 36: 14-bit counters).
    """

    def __init__(self, clk_freq: float, baud: float, fifo_depth: int = 4,
                 max_denominator: int = 256):
        _divider_props(self, BitClock(clk_freq, baud, max_denominator))
        self.clk_freq, self.baud = clk_freq, baud
        self.fifo_depth, self.max_denominator = fifo_depth, max_denominator
        if fifo_depth < 2:
            raise ValueError("fifo_depth must be >= 2")
        super().__init__({
            "rx": In(1),
            "o": Out(stream.Signature(8)),
            "frame_error": Out(1),
            "overrun": Out(1),
            "i": In(stream.Signature(8)),
            "tx": Out(1, init=1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.rx = rx = UARTReceiver(self.clk_freq, self.baud, self.fifo_depth,
                                            self.max_denominator)
        m.submodules.tx = tx = UARTTransmitter(self.clk_freq, self.baud,
                                               self.max_denominator)
        wiring.connect(m, wiring.flipped(self.o), rx.o)
        wiring.connect(m, wiring.flipped(self.i), tx.i)
        m.d.comb += [
            rx.rx.eq(self.rx),
            self.tx.eq(tx.tx),
            self.frame_error.eq(rx.frame_error),
            self.overrun.eq(rx.overrun),
        ]
        return m
