"""The UART (hw/mmfree_hw/uart.py) in Amaranth's simulator: a TX -> RX loopback of random
bytes under gaps and back-pressure at several divisors (exact fractions, an integer
divider), the transmitter's exact bit timing (start bit, 8 data bits LSB first, stop bit,
edges at ceil(k n / d) cycles, frames back to back), the receiver's latency, its rate
tolerance against a bit-banged peer (just inside ``rx_tolerance`` works, just outside
fails: the analysis is tight), framing errors and breaks (one pulse, no bytes, recovery),
glitches, overrun (newest byte dropped, nothing corrupted), and the constructor's
refusals. The peer-model regression is the cocotb bench (test_sim_uart, cocotbext-uart).

Cycle numbers: edge E is the E-th rising edge (Amaranth's clock puts it at E - 1/2
periods); cycle c is the one after edge c (tb.py's numbering). ``ctx.tick().sample(...)``
returning at edge E gives the values of cycle E - 1, and a beat seen valid and ready
there transfers at edge E.
"""

import contextlib
import gc
import math
import random
import warnings
from fractions import Fraction

import pytest
from amaranth import Module
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

from mmfree_hw.uart import FRAME_BITS, UART, BitClock, UARTReceiver, UARTTransmitter

CLK = 1e-8                      # the simulator's clock period (its absolute value is moot)
CORNERS = [0x00, 0xFF, 0x55, 0xAA, 0x01, 0x80, 0x7F, 0xFE]


def frame_bits(byte: int) -> list[int]:
    return [0, *((byte >> k) & 1 for k in range(8)), 1]


def bitbang(dut_rx, data, period_cycles, *, start=20.0, rng=None):
    """A testbench driving ``dut_rx`` with 8N1 frames at ``period_cycles`` per bit (any
    real number: a peer with its own clock), from ``start`` cycles on, back to back or,
    with ``rng``, with random idle gaps of 0 to 3 cycles after each frame."""
    async def peer(ctx):
        ctx.set(dut_rx, 1)
        await ctx.delay(CLK * start)
        for byte in data:
            for v in frame_bits(byte):
                ctx.set(dut_rx, v)
                await ctx.delay(CLK * period_cycles)
            if rng and rng.random() < 0.7:
                await ctx.delay(CLK * rng.random() * 3)
        await ctx.delay(CLK * period_cycles * 3)
    return peer


def rx_collector(dut, out, events, ready_prob=1.0, seed=1):
    """Background testbench: takes ``o`` beats (with random back-pressure) into ``out``,
    counts ``frame_error`` / ``overrun`` pulses in ``events``, and records the cycle of
    every beat."""
    async def sink(ctx):
        rng = random.Random(seed)
        edge = 0
        while True:
            ready = int(rng.random() < ready_prob)
            ctx.set(dut.o.ready, ready)
            *_, valid, payload, fe, ov = await ctx.tick().sample(
                dut.o.valid, dut.o.payload, dut.frame_error, dut.overrun)
            edge += 1
            if valid and ready:
                out.append(int(payload))
                events["beats"].append(edge)
            events["frame_error"] += fe
            events["overrun"] += ov
    return sink


def new_events():
    return {"beats": [], "frame_error": 0, "overrun": 0}


def run_receiver(dut, peer):
    """Run ``peer`` to its end, collecting ``o`` (always ready) and the pulses."""
    out, events = [], new_events()
    sim = Simulator(dut)
    sim.add_clock(CLK)
    sim.add_testbench(peer)
    sim.add_testbench(rx_collector(dut, out, events), background=True)
    sim.run()
    return out, events


# -- the divider -------------------------------------------------------------------------

@contextlib.contextmanager
def never_elaborated():
    """For components built only to read their divider or to be refused."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        yield
        gc.collect()


@pytest.mark.parametrize("clk_mhz,cycles", [(48, Fraction(16)), (50, Fraction(50, 3)),
                                            (60, Fraction(20)), (100, Fraction(100, 3))])
def test_3mbaud_is_exact(clk_mhz, cycles):
    with never_elaborated():
        uart = UART(clk_freq=clk_mhz * 1e6, baud=3_000_000)
        assert uart.cycles_per_bit == cycles
        assert uart.baud_error == 0 and uart.actual_baud == 3e6
        del uart


def test_fraction_approximation():
    """A ratio with a large denominator is approximated within far less than 0.01 %."""
    c = BitClock(48_123_457, 115_200)
    assert c.d <= 256 and abs(c.baud_error) < 1e-6


def test_refuses_baud_too_high():
    with never_elaborated():
        with pytest.raises(ValueError, match=r"too high for a 50 MHz clock: 7\.14 cycles "
                                             r"per bit, the UART needs at least 8"):
            UART(clk_freq=50e6, baud=7e6)
        with pytest.raises(ValueError, match="at least 8"):
            UARTReceiver(clk_freq=20e6, baud=3e6)
    assert BitClock(24e6, 3e6).cycles_per_bit == 8           # exactly 8: allowed


def test_refuses_large_error():
    with never_elaborated():
        # an integer divider: 50e6 / 3e6 = 16.67 -> 17 cycles, 1.96 % slow
        with pytest.raises(ValueError, match=r"17/1 cycles per bit, gives 2\.94118e\+06 "
                                             r"baud, -1\.96% off; 8N1 allows at most ±1%"):
            UART(clk_freq=50e6, baud=3e6, max_denominator=1)
        with pytest.raises(ValueError, match=r"\+1\.01% off"):
            UARTTransmitter(clk_freq=100e6, baud=3e6, max_denominator=1)
        with pytest.raises(ValueError, match="positive"):
            UART(clk_freq=50e6, baud=0)
        with pytest.raises(ValueError, match="fifo_depth"):
            UART(clk_freq=50e6, baud=3e6, fifo_depth=1)
    assert BitClock(48e6, 3e6, max_denominator=1).baud_error == 0   # 16: exact, allowed


# -- transmitter ---------------------------------------------------------------------------

def run_transmitter(dut, batches, cycles):
    """Offer ``batches`` of bytes on ``i`` (each batch with ``valid`` held high, an idle
    pause of ``pause`` cycles after it); return (per-cycle tx samples, accept edges)."""
    tx, accepted = [], []

    async def source(ctx):
        edge = 0
        for data, pause in batches:
            for byte in data:
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, byte)
                while True:
                    *_, ready = await ctx.tick().sample(dut.i.ready)
                    edge += 1
                    if ready:
                        accepted.append(edge)
                        break
            ctx.set(dut.i.valid, 0)
            if pause:
                await ctx.tick().repeat(pause)
                edge += pause

    async def monitor(ctx):
        for _ in range(cycles):
            *_, value = await ctx.tick().sample(dut.tx)
            tx.append(int(value))

    sim = Simulator(dut)
    sim.add_clock(CLK)
    sim.add_testbench(source, background=True)
    sim.add_testbench(monitor)
    sim.run()
    return tx, accepted


def expected_line(data, cycles_per_bit, length):
    """The ideal waveform of back-to-back frames starting at cycle 0: bit k ends at
    ceil(k P) cycles."""
    bits = [b for byte in data for b in frame_bits(byte)]
    line = []
    for t in range(length):
        k = 0
        while k < len(bits) and math.ceil((k + 1) * cycles_per_bit) <= t:
            k += 1
        line.append(bits[k] if k < len(bits) else 1)
    return line


@pytest.mark.parametrize("clk,baud", [(48e6, 3e6), (50e6, 3e6), (100e6, 3e6),
                                      (50e6, 115_200)])
def test_tx_bit_timing(clk, baud):
    """Start bit, 8 data bits LSB first, stop bit, edges at ceil(k n / d) cycles after the
    start, 3 frames back to back (no idle beyond the stop bit), then idle high; a byte
    after a pause starts LATENCY cycles after its accept with a fresh bit period."""
    dut = UARTTransmitter(clk, baud)
    p = dut.cycles_per_bit
    first, second = [0xA5, 0x00, 0xFF], [0x3C]
    frame = math.ceil(FRAME_BITS * p)
    pause = 2 * frame + 7
    tx, accepted = run_transmitter(dut, [(first, pause), (second, 0)],
                                   cycles=5 * frame + pause)
    # tx[c] is the line in cycle c; a byte accepted at edge e was "at cycle" e - 1
    fall = tx.index(0)
    assert fall - (accepted[0] - 1) == UARTTransmitter.LATENCY
    n1 = math.ceil(3 * FRAME_BITS * p)
    assert tx[fall:fall + n1 + 5] == expected_line(first, p, n1 + 5)
    fall2 = accepted[3] - 1 + UARTTransmitter.LATENCY
    assert all(tx[fall + n1:fall2]), "the line idles high"
    n2 = math.ceil(FRAME_BITS * p)
    assert tx[fall2:fall2 + n2 + 5] == expected_line(second, p, n2 + 5)
    # a batch's next byte is taken 2 cycles after its predecessor, as soon as that one
    # left the holding register for the line: a whole frame ahead of its turn
    assert accepted[1] - accepted[0] == 2


# -- loopback ------------------------------------------------------------------------------

@pytest.mark.parametrize("clk,baud,max_den", [(48e6, 3e6, 256), (50e6, 3e6, 256),
                                              (25e6, 3e6, 256), (10e6, 1e6, 1),
                                              (50e6, 1e6, 256)])
def test_loopback(clk, baud, max_den):
    """TX -> RX through a wire: random bytes and the corners, random gaps on ``i``, random
    back-pressure on ``o``; every byte arrives, in order, no error pulses."""
    rng = random.Random(int(clk / baud * 1000))
    data = CORNERS + [rng.randrange(256) for _ in range(40)]
    uart = UART(clk, baud, max_denominator=max_den)
    m = Module()
    m.submodules.uart = uart
    m.d.comb += uart.rx.eq(uart.tx)
    out, events = [], new_events()

    async def source(ctx):
        for byte in data:
            while rng.random() < 0.3:
                ctx.set(uart.i.valid, 0)
                await ctx.tick().repeat(rng.randint(1, 300))
            ctx.set(uart.i.valid, 1)
            ctx.set(uart.i.payload, byte)
            while True:
                *_, ready = await ctx.tick().sample(uart.i.ready)
                if ready:
                    break
        ctx.set(uart.i.valid, 0)

    async def done(ctx):
        while len(out) < len(data):
            await ctx.tick()
        await ctx.tick().repeat(int(3 * FRAME_BITS * uart.cycles_per_bit))

    sim = Simulator(m)
    sim.add_clock(CLK)
    sim.add_testbench(source, background=True)
    sim.add_testbench(rx_collector(uart, out, events, ready_prob=0.3), background=True)
    sim.add_testbench(done)
    sim.run()
    assert out == data
    assert (events["frame_error"], events["overrun"]) == (0, 0)


# -- receiver ------------------------------------------------------------------------------

@pytest.mark.parametrize("clk,baud", [(48e6, 3e6), (50e6, 3e6), (100e6, 3e6)])
@pytest.mark.parametrize("fall", [19.1, 19.55, 19.9])
def test_rx_latency(clk, baud, fall):
    """The byte is valid from cycle k0 + 3 + ceil((10 n - rx_phase0) / d), k0 the first
    clock edge after the start bit's fall: the counter starts 2 cycles after k0 (the
    synchroniser), ticks for the stop bit in cycle k0 + 2 + j_9, and o.valid follows
    LATENCY cycles later."""
    dut = UARTReceiver(clk, baud)
    c = dut.bit_clock
    p = float(dut.cycles_per_bit)
    out, events = run_receiver(dut, bitbang(dut.rx, [0x4D], p, start=fall))
    assert out == [0x4D]
    k0 = math.ceil(fall + 0.5)                   # the first edge after the fall
    tick_cycle = k0 + 2 + (-((c.rx_phase0 - FRAME_BITS * c.n) // c.d) - 1)
    assert events["beats"][0] - 1 == tick_cycle + UARTReceiver.LATENCY


@pytest.mark.parametrize("clk,baud", [(50e6, 3e6), (48e6, 3e6), (24e6, 3e6), (25e6, 3e6)])
def test_rx_tolerance(clk, baud):
    """A peer off by 98 % of ``rx_tolerance`` (fast, then slow) is received intact at any
    edge phase; one 0.6 % further off is not: ``rx_tolerance`` is what the gateware does."""
    c = BitClock(clk, baud)
    fast, slow = c.rx_tolerance
    p = float(c.cycles_per_bit)
    assert min(fast, slow) >= 0.04
    rng = random.Random(3)
    data = CORNERS + [rng.randrange(256) for _ in range(16)]
    for err, ok in [(-0.98 * fast, True), (0.98 * slow, True),
                    (-(fast + 0.006), False), (slow + 0.006, False)]:
        dut = UARTReceiver(clk, baud, fifo_depth=32)
        out, events = run_receiver(dut, bitbang(dut.rx, data, p * (1 + err), rng=rng,
                                                start=20 + rng.random()))
        assert (out == data and events["frame_error"] == 0) == ok, (err, out)


def test_framing_error_and_break():
    """A frame whose stop bit is low (the line low for a whole frame) gives one
    ``frame_error`` pulse and no byte; so does a break of 5 frames (not five 0x00 bytes);
    the bytes after each arrive intact."""
    clk, baud = 50e6, 3e6
    dut = UARTReceiver(clk, baud)
    p = float(dut.cycles_per_bit)
    seen = {}

    async def peer(ctx):
        ctx.set(dut.rx, 1)
        await ctx.delay(CLK * 20.3)
        for low_bits, after in [(10, [0x12, 0x34]), (50, [0x56]), (9, [0xFF, 0x00])]:
            ctx.set(dut.rx, 0)                           # low_bits bits low, then high
            await ctx.delay(CLK * p * low_bits)
            ctx.set(dut.rx, 1)
            await ctx.delay(CLK * p * 2)
            for byte in after:
                for v in frame_bits(byte):
                    ctx.set(dut.rx, v)
                    await ctx.delay(CLK * p)
            await ctx.delay(CLK * p * 3)
            seen[low_bits] = (len(out), events["frame_error"])

    out, events = [], new_events()
    sim = Simulator(dut)
    sim.add_clock(CLK)
    sim.add_testbench(peer)
    sim.add_testbench(rx_collector(dut, out, events), background=True)
    sim.run()
    # 9 bits low is a 0x00 byte with a good stop bit
    assert out == [0x12, 0x34, 0x56, 0x00, 0xFF, 0x00]
    assert seen == {10: (2, 1), 50: (3, 2), 9: (6, 2)}


def test_glitch_is_not_a_frame():
    """A low pulse shorter than half a bit is not a start bit: nothing, no error."""
    dut = UARTReceiver(50e6, 3e6)
    p = float(dut.cycles_per_bit)

    async def peer(ctx):
        ctx.set(dut.rx, 1)
        await ctx.delay(CLK * 20.3)
        for width in (1, 3, p * 0.3):
            ctx.set(dut.rx, 0)
            await ctx.delay(CLK * width)
            ctx.set(dut.rx, 1)
            await ctx.delay(CLK * p * 12)
        for v in frame_bits(0x9B):
            ctx.set(dut.rx, v)
            await ctx.delay(CLK * p)
        await ctx.delay(CLK * p * 3)

    out, events = run_receiver(dut, peer)
    assert out == [0x9B]
    assert (events["frame_error"], events["overrun"]) == (0, 0)


@pytest.mark.parametrize("depth", [2, 4])
def test_overrun_drops_the_newest(depth):
    """``o.ready`` low while depth + 3 frames arrive: the first ``depth`` bytes wait (the
    FIFO), the 3 later ones are dropped with one ``overrun`` pulse each; once ``o`` drains,
    new bytes arrive normally."""
    dut = UARTReceiver(50e6, 3e6, fifo_depth=depth)
    p = float(dut.cycles_per_bit)
    rng = random.Random(depth)
    burst = [rng.randrange(256) for _ in range(depth + 3)]
    later = [0xC3, 0x3C]
    out, events = [], new_events()
    drained = {"ready": False}

    async def peer(ctx):
        await bitbang(dut.rx, burst, p)(ctx)
        drained["ready"] = True
        await ctx.delay(CLK * 50)
        await bitbang(dut.rx, later, p, start=1)(ctx)

    async def sink(ctx):
        while True:
            ready = drained["ready"]            # the peer may flip it within the cycle
            ctx.set(dut.o.ready, int(ready))
            *_, valid, payload, ov = await ctx.tick().sample(dut.o.valid, dut.o.payload,
                                                            dut.overrun)
            if valid and ready:
                out.append(int(payload))
            events["overrun"] += ov

    sim = Simulator(dut)
    sim.add_clock(CLK)
    sim.add_testbench(peer)
    sim.add_testbench(sink, background=True)
    sim.run()
    assert out == burst[:depth] + later
    assert events["overrun"] == 3
