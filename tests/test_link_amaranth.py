"""FrameLink in the Amaranth simulator, in front of the real CommandProcessor.

The device under test is ``FrameLink`` wired to ``test_verilator_link.LinkTop`` (the
CommandProcessor with a ``lib.memory`` per space and the small fake sequencer of that test),
exactly as a UART would see it. :class:`Bench` clocks it from a background testbench that
offers the host's bytes on ``rx`` (optionally with random gaps), takes ``tx`` with random
back-pressure, and logs every byte that reaches the command processor; :class:`SimLink` is
a raw ``Transport`` over the bench (a read advances the simulation until the bytes are there
or ``timeout`` cycles pass without one), so the same ``FramedTransport`` and ``CoreDriver``
that drive a board drive the simulated gateware. Frames come from ``protocol``'s encoder;
faults from ``faults.FaultyTransport`` or made by hand. Every test checks that only whole,
good commands reached the processor (:meth:`Bench.forwarded_commands`).
"""

import random
import time

import numpy as np
import pytest
from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from test_framed_link import CFG, Recorder, StateCore, random_words
from test_verilator_link import TOKEN_LIMIT, TRACE_MAGIC, LinkTop

from mmfree_fpga import commands as C
from mmfree_fpga.driver import CoreDriver, CoreError, LinkError, SequencerError
from mmfree_fpga.driver.transport import Transport
from mmfree_fpga.isa import Space
from mmfree_fpga.link import protocol as P
from mmfree_fpga.link.faults import Faults, FaultyTransport
from mmfree_fpga.link.framed import FramedTransport
from mmfree_hw.link import FrameLink

PERIOD = 1e-8
RX_TIMEOUT = 40
HEARTBEAT = 600


class Top(wiring.Component):
    def __init__(self, link: FrameLink, device):
        self.link, self.device = link, device
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = link = self.link
        m.submodules.dev = dev = self.device
        wiring.connect(m, link.cmd_out, dev.cmd_in)
        wiring.connect(m, dev.cmd_out, link.reply_in)
        m.d.comb += link.cmd_busy.eq(dev.busy)
        return m


class Bench:
    """The simulated device and the byte queues around it (see the module docstring)."""

    def __init__(self, seed=0, rx_gap=0.0, tx_stall=0.0, device=None, **link_kw):
        link_kw = {"rx_timeout": RX_TIMEOUT, "heartbeat": HEARTBEAT} | link_kw
        self.link = FrameLink(**link_kw)
        self.top = Top(self.link, LinkTop(CFG) if device is None else device)
        self.rng = random.Random(seed)
        self.rx_gap, self.tx_stall = rx_gap, tx_stall
        self.to_dev = bytearray()
        self.from_dev = bytearray()
        self.tx_log = []             # (cycle, byte) of every tx transfer
        self.fwd = bytearray()       # bytes that reached the command processor
        self.fwd_log = []            # cycle of each
        self.reply_log = []          # cycle of every reply byte into the link
        self.rx_log = []             # cycle of every rx transfer
        self.busy_log = []
        self.cycle = 0
        self.sim = Simulator(self.top)
        self.sim.add_clock(PERIOD)
        self.sim.add_testbench(self._bench, background=True)

    async def _bench(self, ctx):
        link, rng = self.link, self.rng
        offered = took = None
        while True:
            offer = bool(self.to_dev) and not (self.rx_gap and rng.random() < self.rx_gap)
            if offer or offered:
                ctx.set(link.rx.valid, offer)
                ctx.set(link.rx.payload, self.to_dev[0] if offer else 0)
            offered = offer
            take = not (self.tx_stall and rng.random() < self.tx_stall)
            if take != took:
                ctx.set(link.tx.ready, take)
                took = take
            _, _, tv, tp, cv, cr, cp, rv, rr, busy = await ctx.tick().sample(
                link.tx.valid, link.tx.payload, link.cmd_out.valid, link.cmd_out.ready,
                link.cmd_out.payload, link.reply_in.valid, link.reply_in.ready, link.busy)
            if offer:                         # rx.ready is always high
                self.rx_log.append(self.cycle)
                del self.to_dev[0]
            if tv and take:
                self.from_dev.append(tp)
                self.tx_log.append((self.cycle, tp))
            if cv and cr:
                self.fwd.append(cp)
                self.fwd_log.append(self.cycle)
            if rv and rr:
                self.reply_log.append(self.cycle)
            self.busy_log.append(busy)
            self.cycle += 1

    def link_busy(self) -> bool:
        return bool(self.busy_log and self.busy_log[-1])

    def step(self, n: int) -> None:
        self.sim.run_until((self.cycle + n) * PERIOD)

    def run_until_quiet(self, quiet: int = 200, limit: int = 200_000) -> None:
        """Until nothing is left to send in and, for ``quiet`` cycles, nothing went out and
        the link's ``busy`` stayed low."""
        last = len(self.from_dev)
        idle = 0
        for _ in range(limit // 10):
            self.step(10)
            if len(self.from_dev) != last or self.to_dev or any(self.busy_log[-10:]):
                last, idle = len(self.from_dev), 0
            else:
                idle += 10
                if idle >= quiet:
                    return
        raise AssertionError("the device never went quiet")

    def frames(self) -> list[P.Frame]:
        """Every frame the device sent so far (consumes them)."""
        parser = P.FrameParser(P.MAX_REPLY_PAYLOAD)
        out = parser.feed(bytes(self.from_dev))
        assert parser.garbage == 0 and not parser.buf, "the device sent bytes outside frames"
        self.from_dev.clear()
        return out

    def forwarded_commands(self) -> list[bytes]:
        """The byte stream that reached the processor, cut into commands."""
        out, buf = [], bytes(self.fwd)
        while buf:
            n = P.command_size(buf, CFG.lanes)
            assert n is not None, f"a partial command reached the processor: {buf.hex()}"
            out.append(buf[:n])
            buf = buf[n:]
        return out


class SimLink(Transport):
    """A raw transport over a :class:`Bench`: a read times out after ``timeout`` cycles
    without a byte, or at once when the link's ``busy`` says nothing will come (the host
    learns sooner what it would learn at its timeout: it keeps the tests fast)."""

    def __init__(self, bench: Bench, timeout: int = HEARTBEAT + 400):
        self.bench, self.timeout = bench, timeout

    def write(self, data: bytes) -> None:
        self.bench.to_dev += data

    def read(self, n: int) -> bytes:
        b = self.bench
        waited = 0
        while len(b.from_dev) < n:
            before = len(b.from_dev)
            b.step(20)
            waited = 0 if len(b.from_dev) != before or b.to_dev else waited + 20
            idle = not b.to_dev and not any(b.busy_log[-20:])
            if waited >= self.timeout or idle and len(b.from_dev) < n:
                raise LinkError(f"waiting for {n - len(b.from_dev)} of {n} bytes: no answer "
                                f"for {waited} cycles")
        out = bytes(b.from_dev[:n])
        del b.from_dev[:n]
        return out


def expected_run(tokens, topk, seq_first=True):
    """The fake sequencer's records of one RUN (test_verilator_link.FakeSequencer)."""
    traces, ids, logits, error = [], [], [], None
    for i, t in enumerate(tokens):
        if t >= TOKEN_LIMIT:
            error = (C.ErrorCode.TOKEN, t & 0xFFFF)
            break
        last = i == len(tokens) - 1
        k = topk if last else 0
        flags = (i == 0) | last << 1 | (seq_first and i == 0) << 2
        traces.append((t & 0xFFFF, [t, k, flags, TRACE_MAGIC]))
        if k:
            ids = [t + j for j in range(k)]
            logits = [3 * t - 5 * j for j in range(k)]
    return traces, ids, logits, error


def cmd(seq, command):
    return P.encode_cmd(seq, command)


def one_reply(frames, seq):
    """The reply bytes of ``seq`` in ``frames`` (indices checked), and the other frames."""
    data, index, rest, ended = bytearray(), 0, [], False
    for f in frames:
        if f.type in (P.FrameType.REPLY, P.FrameType.REPLY_END) and f.seq == seq:
            assert not ended, "frames after REPLY_END"
            (idx,) = P.REPLY_INDEX.unpack_from(f.payload)
            assert idx == index
            chunk = f.payload[2:]
            if chunk:
                data += chunk
                index += 1
            ended = f.type == P.FrameType.REPLY_END
        else:
            rest.append(f)
    assert ended, "no REPLY_END"
    return bytes(data), rest


def naks(frames):
    out = []
    for f in frames:
        assert f.type == P.FrameType.NAK
        info = P.parse_nak(f.payload)
        assert info.version == P.PROTOCOL_VERSION and info.max_payload == P.MAX_CMD_PAYLOAD
        out.append((info.reason, f.seq))
    return out


IDENT = C.encode_identify()


# -- frames by hand -----------------------------------------------------------------------------

def test_good_frame_and_reply():
    b = Bench()
    b.to_dev += cmd(7, IDENT)
    b.run_until_quiet()
    frames = b.frames()
    reply, rest = one_reply(frames, 7)
    assert reply == C.identify_reply(CFG) and not rest
    assert len(frames) == 1 and frames[0].type == P.FrameType.REPLY_END
    assert b.forwarded_commands() == [IDENT]


def test_every_bad_frame_is_refused_and_the_link_recovers():
    b = Bench(seed=1, rx_gap=0.3)
    good = C.encode_write(Space.PARAMS, 3, [11, -12, 13])
    frame = bytearray(cmd(1, good))
    flipped = bytearray(frame)
    flipped[9] ^= 0x10                                   # a payload bit
    cases = [
        (bytes(flipped), P.Nak.BAD_CRC, 1),
        (P.encode_frame(P.FrameType.CMD, 2, bytes(P.MAX_CMD_PAYLOAD + 1)), P.Nak.BAD_LENGTH, 2),
        (P.encode_frame(P.FrameType.CMD, 3, b""), P.Nak.BAD_LENGTH, 3),
        (P.encode_frame(P.FrameType.CMD, 4, good, version=2), P.Nak.VERSION, 4),
        (P.encode_frame(P.FrameType.REPLY, 5, good), P.Nak.BAD_TYPE, 5),
        (bytes(frame[:11]), P.Nak.TRUNCATED, 1),         # stops inside the payload
        (bytes(frame[:3]), P.Nak.TRUNCATED, 0),          # stops before its seq
    ]
    for i, (bad, reason, seq) in enumerate(cases):
        b.to_dev += bad
        b.run_until_quiet(quiet=2 * RX_TIMEOUT + 50)
        got = naks(b.frames())
        # a BAD_LENGTH frame's payload is hunted through: it holds no SOF here (zeros)
        assert got == [(reason, seq)], (i, reason, got)
        assert b.fwd == b"", f"case {i}: a bad frame reached the processor"
    # garbage with and without SOF bytes, then a good frame: accepted
    b.to_dev += bytes([0x00, 0x13, P.SOF, 0x01]) + bytes(RX_TIMEOUT)    # a false header
    b.run_until_quiet(quiet=2 * RX_TIMEOUT + 50)
    b.frames()
    b.to_dev += cmd(9, good)
    b.run_until_quiet()
    reply, _ = one_reply(b.frames(), 9)
    assert reply == bytes([C.Status.OK])
    assert b.forwarded_commands() == [good]
    b.to_dev += cmd(10, C.encode_read(Space.PARAMS, 3, 3))
    b.run_until_quiet()
    reply, _ = one_reply(b.frames(), 10)
    assert C.bytes_to_words(Space.PARAMS, reply[1:], CFG.lanes).tolist() == [11, -12, 13]


def test_duplicate_is_not_executed_and_its_nak_follows_the_reply():
    b = Bench(seed=2)
    run = C.encode_run([3, 4], 2)
    b.to_dev += cmd(20, run) + cmd(20, run)              # back to back: the second arrives
    b.run_until_quiet()                                  # while the first still runs
    frames = b.frames()
    reply, rest = one_reply(frames, 20)
    assert naks(rest) == [(P.Nak.REPEAT, 20)]
    assert frames[-1].type == P.FrameType.NAK, "a NAK came between the frames of a reply"
    assert b.forwarded_commands() == [run]
    assert reply[0] == C.Status.OK
    b.to_dev += cmd(20, run)                             # later: still refused
    b.run_until_quiet()
    assert naks(b.frames()) == [(P.Nak.REPEAT, 20)]
    b.to_dev += cmd(21, run)                             # a new seq runs it
    b.run_until_quiet()
    one_reply(b.frames(), 21)
    assert b.forwarded_commands() == [run, run]


def test_busy_while_a_run_holds_the_buffer():
    b = Bench(seed=3)
    run = C.encode_run(list(range(16, 48)), 1)           # 32 tokens, ~40 cycles each
    b.to_dev += cmd(30, run)
    b.step(200)                                          # running now
    b.to_dev += cmd(31, IDENT)
    b.run_until_quiet()
    frames = b.frames()
    _, rest = one_reply(frames, 30)
    assert naks(rest) == [(P.Nak.BUSY, 31)] and frames[-1].type == P.FrameType.NAK
    assert b.forwarded_commands() == [run]


def test_a_command_waiting_in_the_buffer_runs_after_the_reply():
    """The buffer is free once a command has gone to the processor: the next frame may
    arrive while the reply still streams, and waits for it."""
    b = Bench(seed=4, tx_stall=0.9)                      # a slow line: the reply lingers
    read = C.encode_read(Space.WEIGHTS, 0, CFG.size(Space.WEIGHTS))
    b.to_dev += cmd(40, read)
    b.step(320)                                          # forwarded; the reply goes out
    assert b.from_dev and b.link_busy()
    b.to_dev += cmd(41, IDENT)
    b.run_until_quiet()
    frames = b.frames()
    r40, rest = one_reply(frames, 40)
    r41, rest = one_reply(rest, 41)
    assert not rest and len(r40) == 1 + CFG.size(Space.WEIGHTS) * CFG.lanes // 4
    assert r41 == C.identify_reply(CFG)
    assert b.forwarded_commands() == [read, IDENT]


def test_long_reply_in_chunks():
    b = Bench(seed=5, max_chunk=16)
    b.to_dev += cmd(50, C.encode_reset_state())
    b.run_until_quiet()
    b.frames()
    tokens = list(range(0, 16)) * 3
    b.to_dev += cmd(51, C.encode_run(tokens, 2))
    b.run_until_quiet()
    frames = b.frames()
    reply, rest = one_reply(frames, 51)
    assert not rest
    sizes = [len(f.payload) - 2 for f in frames]
    assert all(n == 16 for n in sizes[:-1]) and sizes[-1] <= 16
    assert [f.type for f in frames[:-1]] == [P.FrameType.REPLY] * (len(frames) - 1)
    recs = C.read_run_records(C.bytes_reader(reply[1:]), len(C.Counter))
    assert [r.tag for r in recs if isinstance(r, C.Trace)] == tokens
    assert isinstance(recs[-1], C.Done) and recs[-1].counters[C.Counter.TOKENS] == 48
    b.to_dev += cmd(52, C.encode_identify())
    b.run_until_quiet()
    assert one_reply(b.frames(), 52)[0] == C.identify_reply(CFG)


class SlowProcessor(wiring.Component):
    """A stand-in processor for the heartbeat test: a command is one byte b; it works 16 b
    cycles (busy), then answers b, b ^ 0xFF, one byte every 100 cycles."""

    cmd_in: In(stream.Signature(8))
    cmd_out: Out(stream.Signature(8))
    busy: Out(1)

    def elaborate(self, platform):
        m = Module()
        b = Signal(8)
        count = Signal(16)
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.cmd_in.ready.eq(1)
                with m.If(self.cmd_in.valid):
                    m.d.sync += [b.eq(self.cmd_in.payload), count.eq(self.cmd_in.payload * 16)]
                    m.next = "WORK"
            with m.State("WORK"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += count.eq(count - 1)
                with m.If(count == 0):
                    m.d.sync += count.eq(100)
                    m.next = "OUT0"
            for i, (name, nxt) in enumerate((("OUT0", "OUT1"), ("OUT1", "IDLE"))):
                with m.State(name):
                    m.d.comb += [self.busy.eq(1), self.cmd_out.payload.eq(b ^ (0xFF * i))]
                    with m.If(count != 0):
                        m.d.sync += count.eq(count - 1)
                    with m.Else():
                        m.d.comb += self.cmd_out.valid.eq(1)
                        with m.If(self.cmd_out.ready):
                            m.d.sync += count.eq(100)
                            m.next = nxt
        return m


def test_heartbeat_while_a_command_runs():
    """An idle device sends nothing; a busy one a frame at least every heartbeat cycles."""
    hb = 120
    b = Bench(seed=6, heartbeat=hb, device=SlowProcessor())
    b.step(1000)
    assert not b.from_dev
    b.to_dev += cmd(60, bytes([90]))                      # 1440 cycles of work
    b.run_until_quiet()
    cycles = [c for c, _ in b.tx_log]
    frames, starts, pos = [], [], 0
    parser = P.FrameParser()
    data = bytes(v for _, v in b.tx_log)
    for i in range(len(data)):
        got = parser.feed(data[i:i + 1])
        if got:
            frames += got
            starts.append(cycles[pos])
            pos = i + 1
    reply, rest = one_reply(frames, 60)
    assert reply == bytes([90, 90 ^ 0xFF]) and not rest
    assert len(frames) >= 1440 // hb
    assert max(np.diff(starts)) <= hb + 1
    assert sum(len(f.payload) == 2 for f in frames) >= 1440 // hb - 2, "no empty heartbeats"
    # a partial reply went out in a heartbeat frame, before the REPLY_END
    assert any(len(f.payload) == 3 and f.type == P.FrameType.REPLY for f in frames)
    assert frames[-1].type == P.FrameType.REPLY_END


# -- cycles -------------------------------------------------------------------------------------

def test_latency_and_throughput():
    b = Bench(seed=7)
    w = C.encode_write(Space.PARAMS, 0, list(range(50)))
    b.to_dev += cmd(70, w)
    b.run_until_quiet()
    last_rx = b.rx_log[-1]
    assert b.fwd_log[0] - last_rx == 4                   # the docstring's 4 cycles
    gaps = np.diff(b.fwd_log)                            # the processor pauses one cycle
    assert gaps[9] == 2 and np.all(np.delete(gaps, 9) == 1)     # after WRITE's header
    assert np.all(np.diff(b.rx_log) == 1)
    cycles = [c for c, _ in b.tx_log]
    assert cycles[0] - b.reply_log[-1] == 4              # REPLY_END after the status byte
    gaps = np.diff(cycles)                               # a byte per cycle, but for one
    assert np.all(np.delete(gaps, -4) == 1) and gaps[-4] == 2   # idle cycle before the CRC
    one_reply(b.frames(), 70)
    # a NAK: 3 cycles after the byte that decided it
    b.tx_log.clear()
    b.to_dev += P.encode_frame(P.FrameType.CMD, 71, b"", version=2)
    b.run_until_quiet()
    assert b.tx_log[0][0] - b.rx_log[-5] == 3            # its header's last byte
    # a full chunk goes out while the processor goes on: READ of WEIGHTS (384 bytes)
    b.frames()
    b.tx_log.clear()
    b.to_dev += cmd(72, C.encode_read(Space.WEIGHTS, 0, CFG.size(Space.WEIGHTS)))
    b.run_until_quiet()
    cycles = [c for c, _ in b.tx_log]
    n = len(cycles)
    assert n == 2 * P.OVERHEAD + 2 * 2 + 1 + 384
    assert cycles[-1] - cycles[0] + 1 == n + 3           # 2 CRC bubbles, 1 between frames
    # busy: low only when idle, and low again at the end
    assert b.busy_log[-1] == 0


# -- the host's code on the gateware ----------------------------------------------------------

def session(drv, rng, nrng, shadow, n_ops):
    """Random driver traffic; checks every answer against the models. As a host does, a
    RESET_STATE comes between WRITEs and the RUNs after them (else a lost RUN reply could
    not be replayed)."""
    seq_first, dirty = True, True
    for _ in range(n_ops):
        r = rng.random()
        s = rng.choice(list(Space))
        size = CFG.size(s)
        if r < 0.3:
            n = rng.randrange(1, min(size, 24) + 1)
            addr = rng.randrange(size - n + 1)
            words = random_words(s, n, nrng)
            drv.write(s, addr, words)
            shadow[s][addr:addr + n] = words
            dirty = True
        elif r < 0.55:
            n = rng.randrange(1, min(size, 24) + 1)
            addr = rng.randrange(size - n + 1)
            assert np.array_equal(drv.read(s, addr, n), shadow[s][addr:addr + n])
        elif r < 0.95:
            if dirty or r < 0.6:
                drv.reset_state()
                seq_first, dirty = True, False
            tokens = [rng.randrange(40) for _ in range(rng.randrange(1, 4))]
            topk = rng.randrange(CFG.max_topk + 1)
            res = drv.run(tokens, topk)
            traces, ids, logits, _ = expected_run(tokens, topk, seq_first)
            seq_first = False
            assert [(t, list(v)) for t, v in res.traces] == traces
            assert list(res.ids) == ids and list(res.logits) == logits
        else:
            drv.identify()


def check_forwarded(bench, sent):
    for c in bench.forwarded_commands():
        assert c in sent, f"a command the host never sent reached the processor: {c.hex()}"


@pytest.mark.parametrize("seed", range(3))
def test_driver_over_faulty_link_on_gateware(seed):
    """CoreDriver -> FramedTransport -> faults -> the gateware: every answer right."""
    t0 = time.monotonic()
    bench = Bench(seed=seed, rx_gap=0.2, tx_stall=0.2)
    rec = Recorder(FaultyTransport(
        SimLink(bench), seed,
        tx=Faults(flip=0.002, drop=0.001, truncate=0.04, duplicate=0.05, garbage=0.05),
        rx=Faults(flip=0.0005, drop=0.0005, garbage=0.0005)))
    ft = FramedTransport(rec, retries=10, first_seq=seed)
    drv = CoreDriver(ft, chunk_bytes=P.MAX_WRITE_DATA)
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    shadow = {s: drv.read(s, 0, CFG.size(s)) for s in Space}
    session(drv, rng, nrng, shadow, 40)
    for s in Space:                                      # nothing silently corrupted
        assert np.array_equal(drv.read(s, 0, CFG.size(s)), shadow[s]), s.name
    check_forwarded(bench, rec.sent)
    print(f"\nseed {seed}: {ft.stats.frames_sent} frames, {bench.cycle} cycles "
          f"({bench.cycle / (time.monotonic() - t0):.0f}/s), "
          f"{dict(rec.inner.injected)}, naks {ft.stats.naks}, replays {ft.stats.replays}")


def test_big_write_and_errors_through_gateware():
    bench = Bench(seed=11)
    drv = CoreDriver(FramedTransport(SimLink(bench), first_seq=0),
                     chunk_bytes=P.MAX_WRITE_DATA)
    nrng = np.random.default_rng(11)
    words = random_words(Space.WEIGHTS, CFG.size(Space.WEIGHTS), nrng)
    drv.write(Space.WEIGHTS, 0, words)
    assert np.array_equal(drv.read(Space.WEIGHTS, 0, CFG.size(Space.WEIGHTS)), words)
    with pytest.raises(CoreError, match="BAD_RANGE"):
        drv.read(Space.PARAMS, CFG.size(Space.PARAMS), 1)
    with pytest.raises(SequencerError):
        drv.run([1, TOKEN_LIMIT + 1, 2], 1)
    res = drv.run([5], 1)
    assert list(res.ids) == [5]
    drv.transport.write(bytes([0xEE]))                   # an unknown opcode: one byte
    assert drv.transport.read(1) == bytes([C.Status.BAD_COMMAND])
    assert drv.identify().lanes == CFG.lanes


def test_dead_device_fails_cleanly():
    bench = Bench(seed=12)
    ft = FramedTransport(FaultyTransport(SimLink(bench, timeout=400), silent_after=1),
                         retries=3)
    drv = CoreDriver(ft)
    drv.identify()
    t0 = time.monotonic()
    with pytest.raises(LinkError, match=r"COUNTERS: no good reply after 3 attempts"):
        drv.counters()
    assert time.monotonic() - t0 < 30


# -- the gateware against the Python model of the device ----------------------------------

def events(data: bytes):
    """A device's output as replies (seq, bytes) and NAKs (seq, reason), in order."""
    replies, nak_list, acc = [], [], {}
    for f in P.FrameParser().feed(data):
        if f.type == P.FrameType.NAK:
            nak_list.append((f.seq, P.parse_nak(f.payload).reason))
            continue
        acc.setdefault(f.seq, bytearray()).extend(f.payload[2:])
        if f.type == P.FrameType.REPLY_END:
            replies.append((f.seq, bytes(acc.pop(f.seq))))
    return replies, nak_list


def is_subsequence(small, big):
    it = iter(big)
    return all(any(x == y for y in it) for x in small)


def fuzz_transmission(rng, seq, command):
    """One host transmission: a frame, maybe damaged, maybe with company."""
    f = bytearray(cmd(seq, command))
    kind = rng.choice(["good"] * 6 + ["flip", "drop", "truncate", "garbage", "duplicate",
                                      "version", "length", "type", "damaged_then_good"])
    if kind == "flip":
        i = rng.randrange(1, len(f))
        f[i] ^= 1 << rng.randrange(8)
    elif kind == "drop":
        del f[rng.randrange(1, len(f))]
    elif kind == "truncate":
        f = f[:rng.randrange(1, len(f))]
    elif kind == "garbage":
        f = bytes(P.SOF if rng.random() < 0.2 else rng.randrange(256)
                  for _ in range(rng.randrange(1, 20))) + bytes(RX_TIMEOUT) + f
    elif kind == "duplicate":
        f = f + f
    elif kind == "version":
        f = P.encode_frame(P.FrameType.CMD, seq, command, version=rng.randrange(2, 256))
    elif kind == "length":
        f = P.encode_frame(P.FrameType.CMD, seq, bytes(P.MAX_CMD_PAYLOAD + 1))[:40]
    elif kind == "type":
        f = P.encode_frame(rng.choice([0, 2, 3, 4, 0x55]), seq, command)
    elif kind == "damaged_then_good":
        bad = bytearray(f)
        bad[rng.randrange(6, len(f))] ^= 0x40
        f = bytes(bad) + f
    return bytes(f), kind


def test_gateware_equals_the_device_model_on_fuzzed_frames():
    """Random frames (good, damaged, duplicated, with garbage), each followed by a
    silence: the gateware forwards exactly the commands the Python device model accepts,
    sends the same replies in the same order, and a subset of its NAKs (the gateware
    holds one NAK: a newer replaces one not yet sent), mostly all of them."""
    rng, nrng = random.Random(21), np.random.default_rng(21)
    b = Bench(seed=21, rx_gap=0.1, tx_stall=0.1)
    model = P.DeviceFramer(StateCore(CFG))
    kinds = set()
    seq = 0
    n = 250
    for _ in range(n):
        r = rng.random()
        if r < 0.4:
            command = C.encode_write(Space.PARAMS, rng.randrange(60),
                                     random_words(Space.PARAMS, rng.randrange(1, 5), nrng))
        elif r < 0.8:
            command = C.encode_read(Space.PARAMS, rng.randrange(60), rng.randrange(1, 5))
        elif r < 0.9:
            command = C.encode_identify()
        else:
            command = C.encode_reset_state()
        if rng.random() < 0.85:
            seq = (seq + 1) & 0xFF                        # else: the same seq again
        data, kind = fuzz_transmission(rng, seq, command)
        kinds.add(kind)
        b.to_dev += data
        model.receive(data)
        b.run_until_quiet(quiet=RX_TIMEOUT + 30)
        model.quiet()
    hw_replies, hw_naks = events(bytes(b.from_dev))
    sw_replies, sw_naks = events(bytes(model.out))
    assert b.forwarded_commands() == model.accepted
    assert hw_replies == sw_replies
    assert is_subsequence(hw_naks, sw_naks)
    assert len(hw_naks) >= 0.9 * len(sw_naks)
    assert len(model.accepted) > n / 3 and len(sw_naks) > n / 4
    assert len(kinds) == 10
    print(f"\n{n} transmissions: {len(model.accepted)} accepted, {len(hw_naks)} of "
          f"{len(sw_naks)} NAKs, {b.cycle} cycles")


def test_heartbeats_keep_a_short_timeout_host_waiting():
    """A host whose read timeout is shorter than the command is not fooled: heartbeats."""
    b = Bench(seed=13, heartbeat=120, device=SlowProcessor())
    ft = FramedTransport(SimLink(b, timeout=300), retries=2)
    ft.write(bytes([90]))                # 1440 cycles of work, then 2 bytes 100 apart
    assert ft.read(2) == bytes([90, 90 ^ 0xFF])
    assert ft.stats.retries == 0 and ft.stats.frames_sent == 1


def test_parameters():
    for bad in ({"max_payload": 0}, {"max_payload": 1 << 16}, {"max_chunk": 0},
                {"rx_timeout": 0}, {"heartbeat": 0}, {"max_chunk": 8, "reply_depth": 7}):
        with pytest.raises(ValueError):
            FrameLink(**bad)
    # a small link: 64-byte commands, one reply byte per frame, a 2-byte reply FIFO
    b = Bench(seed=14, max_payload=64, max_chunk=1, reply_depth=2)
    b.to_dev += P.encode_frame(P.FrameType.CMD, 1, C.encode_write(Space.PARAMS, 0,
                                                                  list(range(14))))
    b.run_until_quiet()
    (f,) = b.frames()
    assert P.parse_nak(f.payload) == (P.Nak.BAD_LENGTH, P.PROTOCOL_VERSION, 64)
    b.to_dev += cmd(2, C.encode_write(Space.PARAMS, 0, list(range(13))))   # 62 bytes: fits
    b.to_dev += bytes(RX_TIMEOUT)
    b.run_until_quiet()
    assert one_reply(b.frames(), 2)[0] == bytes([C.Status.OK])
    b.to_dev += cmd(3, C.encode_identify())
    b.run_until_quiet()
    frames = b.frames()
    assert one_reply(frames, 3)[0] == C.identify_reply(CFG)
    assert all(len(f.payload) <= 3 for f in frames)          # a byte a frame (END maybe
    assert len(frames) in (C.IDENTIFY_BYTES, C.IDENTIFY_BYTES + 1)   # empty: timing decides)
