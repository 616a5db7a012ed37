"""cocotb bench: the UART (hw/mmfree_hw/uart.py) against an independent peer,
cocotbext-uart's ``UartSource`` (drives ``rx``) and ``UartSink`` (listens on ``tx``).

The DUT is :class:`~mmfree_hw.uart.UART` itself, pins exposed: ``rx``, ``tx``, the byte
streams ``o`` (received) and ``i`` (to send), the ``frame_error`` / ``overrun`` pulses.
The peer runs on its own time base, a bit period in whole nanoseconds, which may be off
the DUT's rate on purpose (``peer_error``: +0.02 is a peer 2 % fast).

Suites (MMF_PARAMS ``suite``):

- ``link``: both directions at once. ``UartSource`` sends the corners (0x00, 0xFF, 0x55,
  0xAA, ...) and random bytes, in bursts with random idle gaps; a ``tb.StreamSink``
  takes them from ``o`` under random back-pressure (and stalls shorter than
  ``fifo_depth - 1`` frames, which the FIFO absorbs). A ``tb.StreamSource`` feeds ``i``
  with random valid gaps and pauses; ``UartSink`` collects the line. Every byte equal, in
  order, both ways; no ``frame_error`` or ``overrun``; on ``tx`` every stop bit high
  (the sink does not look at it), and a frame whose byte was waiting when the previous
  one began follows it with no idle time: start bits floor or ceil of 10 n / d cycles
  apart.
- ``framing``: ``rx`` held low by direct pin writes for a whole frame (start, data and
  stop bit), then for a long break: one ``frame_error`` pulse each, no byte; the
  ``UartSource`` bytes after each arrive intact.
- ``overrun``: ``o.ready`` held low while ``fifo_depth + 3`` frames arrive: the first
  ``fifo_depth`` bytes are kept, 3 ``overrun`` pulses; then everything flows again.

cocotbext-uart 0.1.4 under cocotb 2.1 (read from its source, cocotbext/uart/uart.py): it
runs unchanged. What it uses that cocotb 2 deprecated still works: ``setimmediatevalue``
(a DeprecationWarning in the log) and ``Task.kill`` (reached only from its setters);
``Timer(t, "ns")``, ``First(Event.wait(), Timer(...))`` and ``handle._path`` are as
before. Three things to know instead:

- it times its bits with ``Timer(int(1e9 / baud), "ns")``, truncated to whole
  nanoseconds, so the peer's rate is not the baud it was given (3 Mbaud becomes 333 ns,
  +0.1 %; 3 Mbaud x 1.02 326 ns, +2.25 %; x 0.98 340 ns, -1.96 %: less than asked).
  :func:`peer_baud` picks the whole-nanosecond period itself (floor for a fast peer, ceil
  for a slow one, so the error is at least the one asked for) and hands the peer a baud
  that truncates to exactly it; the effective error is logged and reported;
- its ``baud`` / ``bits`` / ``stop_bits`` setters assign to themselves (a
  RecursionError), so each rate gets its own instance, built once per test;
- ``UartSink`` waits through the stop bit without sampling it, so :class:`TxFrames`
  checks the transmitter's stop bits.
"""

import logging
import math
import random

import cocotb
from cocotb.triggers import FallingEdge, RisingEdge, Timer
from cocotbext.uart import UartSink, UartSource
from tb import StreamSink, StreamSource, cycle, params, report, start

from mmfree_hw.uart import FRAME_BITS, BitClock

CORNERS = [0x00, 0xFF, 0x55, 0xAA, 0x01, 0x80, 0x7F, 0xFE, 0x00, 0x00, 0xFF, 0xFF]


def peer_baud(actual_baud: float, error: float) -> tuple[float, int, float]:
    """(the baud to give cocotbext-uart, its bit period in ns, its effective error): the
    period that ``int(1e9 / baud)`` truncates to is chosen here, never by accident."""
    ideal = 1e9 / (actual_baud * (1 + error))
    ns = math.floor(ideal) if error > 0 else math.ceil(ideal) if error < 0 else round(ideal)
    return 1e9 / (ns + 0.25), ns, (1e9 / ns) / actual_baud - 1


class Pulses:
    """Counts the rising edges of a one-cycle pulse output (event driven: no per-cycle
    coroutine)."""

    def __init__(self, signal):
        self.signal, self.count = signal, 0
        cocotb.start_soon(self._run())

    async def _run(self):
        while True:
            await RisingEdge(self.signal)
            self.count += 1


class TxFrames:
    """Watches ``tx``: the cycle of every start bit, and the stop bit of each frame (high
    at its middle; cocotbext-uart's sink waits through the stop bit without sampling
    it). A falling edge starts a frame; the data bits' falling edges come before the stop
    bit's middle, where the watcher is asleep."""

    def __init__(self, dut, cycles_per_bit: float, period_ns: int):
        self.dut = dut
        self.stop_ns = round(9.5 * cycles_per_bit * period_ns)
        self.starts: list[int] = []
        self.bad_stops: list[int] = []
        cocotb.start_soon(self._run())

    async def _run(self):
        while True:
            await FallingEdge(self.dut.tx)
            self.starts.append(cycle())
            await Timer(self.stop_ns, "ns")
            if str(self.dut.tx.value) != "1":
                self.bad_stops.append(self.starts[-1])


class UartTB:
    def __init__(self, dut, p):
        self.dut, self.p = dut, p
        self.clock = BitClock(p["clk_mhz"] * 1e6, p["baud"])
        self.bit = float(self.clock.cycles_per_bit)           # cycles per bit
        self.fifo_depth = p.get("fifo_depth", 4)
        baud, self.peer_ns, self.peer_error = peer_baud(self.clock.actual_baud,
                                                        p.get("peer_error", 0.0))
        dut._log.info("DUT %s; peer bit period %d ns: %+.3f %% off", self.clock,
                      self.peer_ns, 100 * self.peer_error)
        self.source = UartSource(dut.rx, baud=baud, bits=8, stop_bits=1)
        self.uart_sink = UartSink(dut.tx, baud=baud, bits=8, stop_bits=1)
        for peer in (self.source, self.uart_sink):     # not a log line per byte
            peer.log.setLevel(logging.WARNING)
        self.frame_errors = Pulses(dut.frame_error)
        self.overruns = Pulses(dut.overrun)

    async def cycles(self, n: float):
        """Wait about ``n`` cycles (one Timer, not n triggers), ending just after a rising
        edge, where tb.py's drivers expect to start."""
        await Timer(max(1, round(n)) * self.p["period_ns"], "ns")
        await RisingEdge(self.dut.clk)

    async def frames(self, n: float):
        """Wait ``n`` frames of the DUT's rate."""
        await self.cycles(n * FRAME_BITS * self.bit)


async def receive_link(tb: UartTB, data: list[int], rng: random.Random):
    """UartSource -> rx -> o, in bursts with idle gaps; o under random back-pressure and
    stalls shorter than fifo_depth - 1 frames."""
    sink = StreamSink(tb.dut, "o", ready_prob=tb.p.get("ready_prob", 0.5),
                      seed=rng.randrange(1 << 30))
    sent = 0

    async def stalls():
        while len(sink.beats) < len(data):
            await tb.frames(rng.uniform(2, 6))
            prob, sink.ready_prob = sink.ready_prob, 0.0
            await tb.frames(rng.uniform(0.5, tb.fifo_depth - 1.2))
            sink.ready_prob = prob

    cocotb.start_soon(stalls())
    while sent < len(data):
        burst = data[sent:sent + rng.randint(1, 40)]
        await tb.source.write(burst)
        await tb.source.wait()
        sent += len(burst)
        if rng.random() < 0.5:
            await tb.frames(rng.uniform(0.05, 2))
    await sink.wait_for(len(data), timeout_cycles=int(20 * FRAME_BITS * tb.bit))
    return sink


async def transmit_link(tb: UartTB, data: list[int], rng: random.Random):
    """i (random valid gaps, and pauses between chunks) -> tx -> UartSink."""
    source = StreamSource(tb.dut, "i", valid_prob=tb.p.get("valid_prob", 0.7),
                          seed=rng.randrange(1 << 30))
    sent = 0
    while sent < len(data):
        chunk = data[sent:sent + rng.randint(1, 50)]
        await source.send(chunk)
        sent += len(chunk)
        if rng.random() < 0.5:
            await tb.frames(rng.uniform(0.1, 3))
    got = bytearray()
    for _ in range(12):          # the last byte accepted is at most 2 frames from done
        await tb.frames(0.5)
        got += tb.uart_sink.read_nowait()
        if len(got) >= len(data):
            break
    return source, list(got)


async def suite_link(dut, p):
    tb = UartTB(dut, p)
    rng = random.Random(p.get("seed", 0))
    n = p["bytes"]
    to_dut = (CORNERS + [rng.randrange(256) for _ in range(n)])[:n]
    from_dut = (CORNERS[::-1] + [rng.randrange(256) for _ in range(n)])[:n]
    frames = TxFrames(dut, tb.bit, p["period_ns"])
    rx_task = cocotb.start_soon(receive_link(tb, to_dut, random.Random(rng.random())))
    source, got = await transmit_link(tb, from_dut, random.Random(rng.random()))
    sink = await rx_task
    await tb.frames(2)

    bad = [i for i, (g, w) in enumerate(zip(sink.beats, to_dut, strict=True)) if g != w]
    assert not bad, f"rx: {len(bad)} of {n} bytes wrong, first at {bad[0]}"
    wrong = sum(g != w for g, w in zip(got, from_dut, strict=False))
    assert got == from_dut, f"tx: {wrong} wrong of {len(got)} / {n} received"
    assert (tb.frame_errors.count, tb.overruns.count) == (0, 0)

    # back to back: byte j was in the holding register before frame j - 1 ended, so its
    # start bit follows at floor or ceil of 10 n / d cycles
    frame = FRAME_BITS * tb.bit
    s, acc = frames.starts, source.accepted
    assert len(s) == n and not frames.bad_stops, (len(s), frames.bad_stops)
    gaps = [s[j] - s[j - 1] for j in range(1, n) if acc[j] + 2 < s[j - 1] + frame - 1]
    assert gaps and set(gaps) <= {math.floor(frame), math.ceil(frame)}, sorted(set(gaps))
    dut._log.info("link: %d bytes each way, peer %+.3f %%; %d of %d frames back to back "
                  "(%s cycles apart)", n, 100 * tb.peer_error, len(gaps), n - 1,
                  sorted(set(gaps)))
    report(dut, "uart", 2 * n, f"bytes, {p['baud']:g} baud, peer {100 * tb.peer_error:+.2f} %")


async def suite_framing(dut, p):
    tb = UartTB(dut, p)
    rng = random.Random(p.get("seed", 0))
    sink = StreamSink(dut, "o", ready_prob=0.7, seed=3)
    expected, checked = [], 0
    for low_frames in (1, 1, 6):
        # the line low for whole frames incl. the stop bit, then high for a bit
        await tb.source.wait()
        dut.rx.value = 0
        await Timer(round(low_frames * FRAME_BITS * tb.peer_ns), "ns")
        dut.rx.value = 1
        await Timer(tb.peer_ns, "ns")
        errors = tb.frame_errors.count
        after = [rng.randrange(256) for _ in range(5)] + [0x00, 0xFF]
        await tb.source.write(after)
        await tb.source.wait()
        expected += after
        await sink.wait_for(len(expected), timeout_cycles=int(10 * FRAME_BITS * tb.bit))
        assert sink.beats == expected
        assert errors == tb.frame_errors.count, "the good bytes gave a frame error"
        checked += len(after)
    await tb.frames(2)
    assert tb.frame_errors.count == 3, f"{tb.frame_errors.count} frame errors, not 3"
    assert len(sink.beats) == len(expected) and tb.overruns.count == 0
    dut._log.info("framing: 3 low frames (one a 6-frame break) -> 3 frame_error pulses, "
                  "no bytes; %d bytes after them intact", checked)
    report(dut, "uart", checked, "bytes after framing errors")


async def suite_overrun(dut, p):
    tb = UartTB(dut, p)
    rng = random.Random(p.get("seed", 0))
    depth = tb.fifo_depth
    sink = StreamSink(dut, "o", ready_prob=0.0, seed=4)
    burst = [rng.randrange(256) for _ in range(depth + 3)]
    await tb.source.write(burst)
    await tb.source.wait()
    await tb.frames(1)
    assert sink.beats == [] and tb.overruns.count == 3, tb.overruns.count
    sink.ready_prob = 1.0
    later = [rng.randrange(256) for _ in range(10)]
    await tb.source.write(later)
    await tb.source.wait()
    await sink.wait_for(depth + len(later), timeout_cycles=int(3 * FRAME_BITS * tb.bit))
    await tb.frames(1)
    assert sink.beats == burst[:depth] + later
    assert tb.overruns.count == 3 and tb.frame_errors.count == 0
    dut._log.info("overrun: %d of %d blocked bytes kept, 3 overrun pulses, the next %d "
                  "intact", depth, len(burst), len(later))
    report(dut, "uart", depth + len(later), "bytes around an overrun")


@cocotb.test()
async def uart(dut):
    p = params()
    dut.rx.value = 1                  # idle before the peer takes the pin over
    dut.i__valid.value = 0
    dut.o__ready.value = 0
    await start(dut, p["period_ns"])
    suites = {"link": suite_link, "framing": suite_framing, "overrun": suite_overrun}
    await suites[p.get("suite", "link")](dut, p)
