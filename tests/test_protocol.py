"""The frame format of ``mmfree_fpga.link.protocol``: the CRC against Amaranth's, known
bytes, the streaming parser (resync, never a crash, never a corrupted frame, no over-read),
command boundaries, and the device model (``DeviceFramer``) under every fault class."""

import random
import struct
import zlib

import pytest
from amaranth.lib import crc
from amaranth.lib.crc import catalog
from amaranth.sim import Simulator

from mmfree_fpga import commands as C
from mmfree_fpga.isa import Space
from mmfree_fpga.link import protocol as P


def test_crc_is_zlib_and_amaranth():
    params = getattr(catalog, P.CRC_ALGORITHM)(8)
    assert catalog.CRC32_ETHERNET is getattr(catalog, P.CRC_ALGORITHM)
    rng = random.Random(0)
    for n in [0, 1, 2, 3, 9, 64, 255, 2048] + [rng.randrange(300) for _ in range(200)]:
        data = bytes(rng.randrange(256) for _ in range(n))
        assert params.compute(data) == zlib.crc32(data) == P.crc32(data)
    assert P.crc32(b"123456789") == 0xCBF43926


def test_crc_hardware_is_zlib():
    """lib.crc.Processor, as the gateware uses it (start, then a byte per valid)."""
    params = getattr(catalog, P.CRC_ALGORITHM)(8)
    dut = crc.Processor(params)
    rng = random.Random(1)
    cases = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))) for _ in range(20)]

    async def bench(ctx):
        for data in cases:
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            for b in data:
                ctx.set(dut.valid, 1)
                ctx.set(dut.data, b)
                await ctx.tick()
            ctx.set(dut.valid, 0)
            assert ctx.get(dut.crc) == zlib.crc32(data)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_known_frame_bytes():
    """The layout, byte by byte (a reader in another language can check itself on these)."""
    f = P.encode_cmd(0x12, C.encode_identify())
    assert f.hex() == "a50101120100" + "01" + struct.pack("<I", zlib.crc32(
        bytes.fromhex("0101120100") + b"\x01")).hex()
    assert P.OVERHEAD == 10 and len(f) == 11
    r = P.encode_reply(7, 3, b"\xAA\xBB", end=True)
    assert r[:8] == bytes([P.SOF, 1, P.FrameType.REPLY_END, 7, 4, 0, 3, 0])
    n = P.encode_nak(9, P.Nak.REPEAT)
    assert n[:10] == bytes([P.SOF, 1, P.FrameType.NAK, 9, 4, 0, P.Nak.REPEAT, 1, 0x00, 0x08])
    assert P.MAX_CMD_PAYLOAD == 2048 and P.MAX_WRITE_DATA == 2038
    assert P.MAX_RUN_TOKENS_PER_FRAME == 511
    assert len(C.encode_run(range(511), 0)) <= P.MAX_CMD_PAYLOAD < len(C.encode_run(range(512),
                                                                                  0))
    for bad in (b"", bytes(P.MAX_CMD_PAYLOAD + 1)):
        with pytest.raises(ValueError):
            P.encode_cmd(0, bad)


def test_reply_frames_split():
    for n in (0, 1, 255, 256, 257, 512, 1000):
        data = bytes(range(256)) * 4
        data = data[:n]
        frames = P.FrameParser().feed(P.reply_frames(5, data))
        assert [f.type for f in frames] == [P.FrameType.REPLY] * (n // 256) + [
            P.FrameType.REPLY_END]
        assert [struct.unpack_from("<H", f.payload)[0] for f in frames] == list(
            range(len(frames)))
        assert b"".join(f.payload[2:] for f in frames) == data


# -- the streaming parser ---------------------------------------------------------------------

def random_frame(rng, seq):
    kind = rng.random()
    if kind < 0.4:
        return P.encode_reply(seq, rng.randrange(1 << 16),
                              bytes(rng.randrange(256) for _ in range(rng.randrange(257))),
                              end=rng.random() < 0.5)
    if kind < 0.7:
        return P.encode_nak(seq, rng.choice(list(P.Nak)))
    return P.encode_reply(seq, 0, bytes([P.SOF] * rng.randrange(40)), end=True)  # SOF-laden


def corrupt(rng, frame):
    f = bytearray(frame)
    what = rng.randrange(4)
    if what == 0:                                   # a bit flip anywhere but SOF
        i = rng.randrange(1, len(f))
        f[i] ^= 1 << rng.randrange(8)
    elif what == 1:                                 # a dropped byte
        del f[rng.randrange(1, len(f))]
    elif what == 2:                                 # truncated
        f = f[:rng.randrange(1, len(f))]
    else:                                           # a length past the maximum
        f[4:6] = struct.pack("<H", rng.randrange(P.MAX_REPLY_PAYLOAD + 1, 1 << 16))
    return bytes(f)


def garbage(rng):
    return bytes(P.SOF if rng.random() < 0.25 else rng.randrange(256)
                 for _ in range(rng.randrange(1, 30)))


@pytest.mark.parametrize("seed", range(4))
def test_parser_resyncs_and_never_returns_a_bad_frame(seed):
    rng = random.Random(seed)
    stream, good = bytearray(), []
    for i in range(1500):
        f = random_frame(rng, i & 0xFF)
        r = rng.random()
        if r < 0.15:
            stream += garbage(rng)
        if r < 0.3 or r > 0.5:
            stream += f
            good.append(P.FrameParser().feed(f)[0])
        else:
            stream += corrupt(rng, f)
    parser = P.FrameParser()
    got, pos = [], 0
    while pos < len(stream):
        n = rng.randrange(1, 64)
        got += parser.feed(bytes(stream[pos:pos + n]))
        pos += n
    while parser.buf:
        got += parser.flush()
    assert got == good, "a good frame was lost or a bad one (or a phantom) returned"
    assert parser.bad_crc + parser.bad_length > 0


def test_parser_never_crashes_on_noise():
    rng = random.Random(5)
    parser = P.FrameParser()
    for _ in range(300):
        junk = bytes(rng.choice([P.SOF, 0, 0xFF, rng.randrange(256)])
                     for _ in range(rng.randrange(1, 200)))
        for f in parser.feed(junk) + parser.flush():
            assert isinstance(f, P.Frame)              # a 2^-32 phantom, if ever
    assert parser.wanted() >= 1


def test_reading_what_the_parser_wants_never_reads_past_a_frame():
    """A reader that reads exactly ``wanted()`` bytes stops at every frame's end, so a host
    never blocks on bytes the device has not sent."""
    rng = random.Random(6)
    frames = [random_frame(rng, i) for i in range(300)]
    stream = b"".join(frames)
    ends = set()
    pos = 0
    for f in frames:
        pos += len(f)
        ends.add(pos)
    parser, pos = P.FrameParser(), 0
    while pos < len(stream):
        n = parser.wanted()
        got = parser.feed(stream[pos:pos + n])
        pos += n
        if got:
            assert pos in ends
        assert pos <= len(stream)


# -- command boundaries ----------------------------------------------------------------------

def test_command_size():
    lanes = 32
    cmds = [C.encode_identify(), C.encode_reset_state(), C.encode_counters(),
            C.encode_reset_counters(), C.encode_read(Space.WEIGHTS, 0, 1000),
            C.encode_write(Space.PARAMS, 0, [1, 2, 3]),
            C.encode_write(Space.WEIGHTS, 0, [5] * 7, lanes=lanes),
            C.encode_write(Space.PROGRAM, 0, [1 << 100]),
            C.encode_write_header(len(Space), 0, 99),    # unknown space: no data follows
            C.encode_run([1, 2, 3], 4), C.encode_run([], 1), bytes([0xEE])]
    stream = b"".join(cmds)
    pos = 0
    for c in cmds:
        assert P.command_size(stream[pos:], lanes) == len(c)
        for cut in range(len(c)):                        # incomplete: None
            if cut and P.command_size(c[:cut], lanes) is not None:
                raise AssertionError((c.hex(), cut))
        pos += len(c)
    assert P.command_size(b"", lanes) is None
    with pytest.raises(LookupError):
        P.command_size(C.encode_write_header(Space.WEIGHTS, 0, 1), None)
    with pytest.raises(P.CommandTooBig, match="chunk_bytes=2038"):
        P.command_size(C.encode_write_header(Space.PARAMS, 0, 510), lanes)
    assert P.command_size(C.encode_write(Space.EMBED, 0, [0] * 1019), lanes) == 2048
    with pytest.raises(P.CommandTooBig, match="at most 511 token"):
        P.command_size(C.encode_run(range(512), 0)[:4], lanes)


# -- the device model ----------------------------------------------------------------------------

def echo(command: bytes) -> bytes:
    return bytes([len(command) & 0xFF]) + command


def events(out: bytes):
    """The device's frames as (kind, seq, data): replies reassembled, NAKs by reason."""
    ev, acc = [], {}
    for f in P.FrameParser().feed(out):
        if f.type == P.FrameType.NAK:
            ev.append(("NAK", f.seq, P.parse_nak(f.payload).reason))
        else:
            (idx,) = struct.unpack_from("<H", f.payload)
            buf = acc.setdefault(f.seq, bytearray())
            assert idx == len(buf) // 256
            buf += f.payload[2:]
            if f.type == P.FrameType.REPLY_END:
                ev.append(("REPLY", f.seq, bytes(acc.pop(f.seq))))
    return ev


def test_device_model_every_fault():
    d = P.DeviceFramer(echo)
    good = C.encode_read(Space.PARAMS, 1, 2)
    f = P.encode_cmd(1, good)
    d.receive(f)
    assert events(d.out) == [("REPLY", 1, echo(good))]
    d.out.clear()
    bad = bytearray(f)
    bad[8] ^= 4
    cases = [
        (bytes(bad), (P.Nak.BAD_CRC, 1)),
        (P.encode_frame(P.FrameType.CMD, 2, bytes(2049)), (P.Nak.BAD_LENGTH, 2)),
        (P.encode_frame(P.FrameType.CMD, 3, b""), (P.Nak.BAD_LENGTH, 3)),
        (P.encode_frame(P.FrameType.CMD, 4, good, version=3), (P.Nak.VERSION, 4)),
        (P.encode_frame(P.FrameType.NAK, 5, good), (P.Nak.BAD_TYPE, 5)),
        (f, (P.Nak.REPEAT, 1)),
    ]
    for frame, (reason, seq) in cases:
        d.receive(frame)
        assert events(d.out) == [("NAK", seq, reason)], reason
        d.out.clear()
    d.receive(f[:9])
    d.quiet()
    assert events(d.out) == [("NAK", 1, P.Nak.TRUNCATED)]
    d.out.clear()
    d.quiet()                                            # hunting: nothing to refuse
    assert not d.out
    d.receive(garbage(random.Random(1)) + bytes(2100))  # garbage, resync ...
    d.quiet()
    d.out.clear()
    d.receive(P.encode_cmd(2, good))                     # ... and the next frame is taken
    assert events(d.out) == [("REPLY", 2, echo(good))]
    assert d.accepted == [good, good]
    nak = P.parse_nak(P.FrameParser().feed(P.encode_nak(0, P.Nak.VERSION, 1))[0].payload)
    assert nak == (P.Nak.VERSION, 1, P.MAX_CMD_PAYLOAD)


@pytest.mark.parametrize("seed", range(3))
def test_device_model_fuzz_never_executes_a_bad_frame(seed):
    """Random frames, damaged or not, garbage between them: the device executes only good
    frames of new seqs, each once, in order; after a silence every good frame is taken."""
    rng = random.Random(seed)
    d = P.DeviceFramer(echo)
    intact = []
    last = None
    for _ in range(1000):
        seq = rng.randrange(256)
        command = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        f = P.encode_cmd(seq, command)
        r = rng.random()
        quiet_first = rng.random() < 0.5
        if quiet_first:
            d.quiet()
        if r < 0.4:
            d.receive(corrupt(rng, f) if rng.random() < 0.8 else garbage(rng))
        else:
            before = len(d.accepted)
            d.receive(f)
            if quiet_first and seq != last:
                assert len(d.accepted) == before + 1, "a good frame after a silence was lost"
            if rng.random() < 0.2:
                d.receive(f)                          # a duplicate: never executed twice
            assert len(d.accepted) - before <= 1
            if len(d.accepted) > before:
                intact.append(command)
                last = seq
    assert d.accepted == intact
