"""The command set's host-side encoders and parsers: byte layouts, round trips, refusals."""

import re
import struct
import zlib

import numpy as np
import pytest

from mmfree_fpga import commands as C
from mmfree_fpga import isa
from mmfree_fpga.core_config import SIM, CoreConfig
from mmfree_fpga.isa import Space


def test_word_widths_match_core_config():
    for lanes in (4, 32, 128):
        cfg = CoreConfig(lanes=lanes)
        for s in Space:
            assert C.word_bits(s, lanes) == cfg.word_width(s)
            assert C.word_bytes(s, lanes) * 8 == cfg.word_width(s)
    assert [C.word_bytes(s, 128) for s in Space] == [32, 4, 2, 4, 4, 16]


def test_enums_are_distinct_bytes_and_shared():
    for e in (C.Command, C.Status, C.RecordType, C.Counter):
        values = [int(v) for v in e]
        assert len(set(values)) == len(values) and all(0 <= v < 256 for v in values)
    assert 0 not in [int(c) for c in C.Command]            # an all-zero stream is no command
    assert set(C.HEADER_BYTES) == set(C.Command)           # the link sizes every command
    assert C.ErrorCode is isa.ErrorCode                    # one table for sequencer and host
    assert C.COUNTERS[:7] == ("CYCLES", "ENGINE_BUSY", "ENGINE_WAIT_WEIGHTS", "WAIT_VECTOR",
                              "SEQUENCER", "INSTRUCTIONS", "TOKENS")


def test_identify_round_trip():
    cfg = CoreConfig(lanes=64, weight_words=1000, max_topk=17)
    reply = C.identify_reply(cfg, build_id=0xDEADBEEF)
    assert len(reply) == C.IDENTIFY_BYTES == 46
    assert reply[:5] == b"\x00MMFC" and reply[5:7] == struct.pack("<H", C.VERSION)
    assert reply[-11:-7] == struct.pack("<I", 0xDEADBEEF)   # the build id, then the memory
    assert reply[-7:] == bytes([C.MemoryKind.ON_CHIP, C.Packing.CODES_2BIT]) + \
        struct.pack("<I", 1000) + b"\x00"                   # all 1000 words on chip, ready
    r = C.bytes_reader(reply)
    assert C.read_status(r) == C.Status.OK
    ident = C.read_identify(r)
    assert ident.version == C.VERSION == 3 and ident.lanes == 64 and ident.max_topk == 17
    assert ident.words == {s: cfg.size(s) for s in Space}
    assert ident.n_counters == len(C.Counter)
    assert ident.counter_names == C.COUNTERS
    assert ident.build_id == 0xDEADBEEF
    assert (ident.memory, ident.packing, ident.mem_status) == (
        C.MemoryKind.ON_CHIP, C.Packing.CODES_2BIT, C.MemoryStatus.READY)
    with pytest.raises(EOFError):
        r(1)
    # an SDRAM core: its memory counters are named, its status read back as flags
    sd = C.identify_reply(cfg, memory=C.MemoryKind.SDRAM, packing=C.Packing.BASE3,
                          mem_status=C.MemoryStatus.ERROR | C.MemoryStatus.INITIALIZING,
                          onchip_words=256)
    ident = C.read_identify(C.bytes_reader(sd[1:]))
    assert (ident.memory, ident.packing) == (C.MemoryKind.SDRAM, C.Packing.BASE3)
    assert ident.onchip_words == 256
    assert ident.mem_status & C.MemoryStatus.ERROR and \
        ident.mem_status & C.MemoryStatus.INITIALIZING
    assert ident.counter_names == C.COUNTERS + ("MEM_BEATS", "MEM_MISSES", "MEM_FULL")
    bad = bytearray(sd)
    bad[-7] = 9
    with pytest.raises(C.ProtocolError, match="unknown weight memory"):
        C.read_identify(C.bytes_reader(bytes(bad[1:])))
    assert C.read_identify(C.bytes_reader(C.identify_reply(cfg)[1:])).build_id == 0
    for bad in (-1, 1 << 32):
        with pytest.raises(ValueError, match="u32"):
            C.identify_reply(cfg, bad)


def test_build_id_of():
    a = C.build_id_of(repr(SIM).encode(), b"module top; endmodule")
    assert 0 < a < 1 << 32 and a == C.build_id_of(repr(SIM).encode(), b"module top; endmodule")
    assert a != C.build_id_of(repr(SIM).encode(), b"module top ; endmodule")
    assert C.build_id_of(b"ab", b"c") != C.build_id_of(b"a", b"bc")     # parts are delimited


def test_identify_refuses_magic_and_version():
    reply = bytearray(C.identify_reply(SIM))
    bad_magic = bytes(reply[:1]) + b"XXXX" + bytes(reply[5:])
    with pytest.raises(C.ProtocolError, match="magic"):
        C.read_identify(C.bytes_reader(bad_magic[1:]))
    for other in (C.VERSION + 1, C.VERSION - 1):
        reply[5:7] = struct.pack("<H", other)
        with pytest.raises(C.VersionMismatch) as e:
            C.read_identify(C.bytes_reader(bytes(reply[1:])))
        assert f"version {other}," in str(e.value) and f"host version {C.VERSION}:" in \
            str(e.value)
        assert (e.value.device, e.value.host) == (other, C.VERSION)
    # a version-1 core's reply (35 bytes, no build id) is refused at its version, before
    # its shorter layout could be misread
    old = bytearray(C.identify_reply(SIM)[:35])
    old[5:7] = struct.pack("<H", 1)
    with pytest.raises(C.VersionMismatch, match=f"version 1, this host version {C.VERSION}"):
        C.read_identify(C.bytes_reader(bytes(old[1:])))


@pytest.mark.parametrize("space", list(Space))
def test_write_layout_and_round_trip(space):
    lanes = 32
    nb = C.word_bytes(space, lanes)
    rng = np.random.default_rng(int(space))
    bits = C.word_bits(space, lanes)
    ints = [int(rng.integers(0, 1 << min(bits, 62))) << max(0, bits - 62) for _ in range(5)]
    ints[0] = (1 << bits) - 1
    cmd = C.encode_write(space, 7, ints, lanes=lanes)
    assert cmd[:10] == struct.pack("<BBII", C.Command.WRITE, space, 7, 5)
    data = cmd[10:]
    assert len(data) == 5 * nb
    assert [int.from_bytes(data[i * nb:(i + 1) * nb], "little") for i in range(5)] == ints
    back = C.bytes_to_words(space, data, lanes)
    if space in C.NARROW_DTYPES:
        # the narrow spaces read back signed: the same bits
        assert [int(v) & ((1 << bits) - 1) for v in back] == ints
        assert C.encode_write(space, 7, back, lanes=lanes) == cmd
    else:
        assert back.shape == (5, nb) and C.rows_to_ints(back) == ints
        assert C.encode_write(space, 7, back) == cmd          # rows carry their width


def test_narrow_arrays_signed_and_unsigned():
    v = np.array([-32768, -1, 0, 1, 32767], dtype=np.int16)
    b = C.words_to_bytes(Space.EMBED, v, 8)
    assert b == v.astype("<i2").tobytes()
    assert list(C.bytes_to_words(Space.EMBED, b, 8)) == list(v)
    u = np.array([0, 65535], dtype=np.int64)
    assert C.words_to_bytes(Space.EMBED, u, 8) == b"\x00\x00\xff\xff"
    p = np.array([-(1 << 31), (1 << 32) - 1], dtype=np.int64)
    assert C.words_to_bytes(Space.PARAMS, p, 8) == b"\x00\x00\x00\x80\xff\xff\xff\xff"
    assert C.words_to_bytes(Space.PARAMS, [-(1 << 31), (1 << 32) - 1], 8) == \
        C.words_to_bytes(Space.PARAMS, p, 8)


def test_words_out_of_range_refused():
    with pytest.raises(ValueError, match="do not fit 16"):
        C.words_to_bytes(Space.EMBED, np.array([65536]), 8)
    with pytest.raises(ValueError, match="do not fit 32"):
        C.words_to_bytes(Space.SCRATCH, np.array([-(1 << 31) - 1]), 8)
    with pytest.raises(ValueError, match="does not fit 128"):
        C.words_to_bytes(Space.PROGRAM, [1 << 128], 8)
    with pytest.raises(ValueError, match=r"uint8 \[count, 8\]"):
        C.words_to_bytes(Space.WEIGHTS, np.zeros((2, 4), np.uint8), 32)
    with pytest.raises(ValueError, match="need lanes"):
        C.encode_write(Space.WEIGHTS, 0, [1, 2])


def test_program_words_from_the_isa():
    ins = [isa.Instruction(isa.Opcode.TRACE, src=1, len=2, tag=3),
           isa.Instruction(isa.Opcode.END)]
    words = [isa.encode(i) for i in ins]
    cmd = C.encode_write(Space.PROGRAM, 0, words)
    assert cmd[10:] == b"".join(isa.word_bytes(w) for w in words)


def test_read_run_and_small_commands():
    assert C.encode_read(Space.STATE, 3, 4) == struct.pack("<BBII", 3, 4, 3, 4)
    assert C.encode_crc(Space.WEIGHTS, 7, 2**32 - 1) == struct.pack("<BBII", 8, 0, 7,
                                                                     2**32 - 1)
    assert len(C.encode_crc(0, 0, 0)) == 1 + C.HEADER_BYTES[C.Command.CRC]
    assert C.encode_run([1, 2**32 - 1], 5) == struct.pack("<BBHII", 5, 5, 2, 1, 2**32 - 1)
    assert C.encode_reset_state() == b"\x04"
    assert C.encode_counters() == b"\x06" and C.encode_reset_counters() == b"\x07"
    with pytest.raises(ValueError):
        C.encode_run([-1], 1)
    with pytest.raises(ValueError):
        C.encode_run(range(C.MAX_RUN_TOKENS + 1), 1)
    with pytest.raises(ValueError):
        C.encode_run([1], 256)


def test_records_round_trip():
    counters = [1, 2**32 - 1, 0, 5, 6, 7, 8]
    stream = (C.encode_trace(9, [-(1 << 31), 0, (1 << 31) - 1])
              + C.encode_trace(0xFFFF, [])
              + C.encode_result([3, 2**32 - 1], [-5, 1 << 30])
              + C.encode_error(C.ErrorCode.ADDRESS, 0x1234)
              + C.encode_error(200, 1)
              + C.encode_done(counters))
    assert stream[:5] == struct.pack("<BHH", C.RecordType.TRACE, 9, 3)
    recs = C.read_run_records(C.bytes_reader(stream), len(counters))
    assert [type(r).__name__ for r in recs] == ["Trace", "Trace", "Result", "Error", "Error",
                                                "Done"]
    assert recs[0].tag == 9 and list(recs[0].values) == [-(1 << 31), 0, (1 << 31) - 1]
    assert recs[0].values.dtype == np.int64
    assert recs[1].values.size == 0
    assert list(recs[2].ids) == [3, 2**32 - 1] and list(recs[2].logits) == [-5, 1 << 30]
    assert recs[3] == (C.ErrorCode.ADDRESS, 0x1234) and recs[4].code == 200
    assert recs[5].counters == tuple(counters)


def test_crc_reply_and_words_crc():
    reply = C.encode_crc_reply(0xCBF43926)
    assert reply == b"\x00" + struct.pack("<I", 0xCBF43926)
    r = C.bytes_reader(reply)
    assert C.read_status(r) == C.Status.OK and C.read_crc(r) == 0xCBF43926
    # words_crc is zlib.crc32 of exactly the bytes WRITE sends (and READ returns)
    lanes = 128
    rng = np.random.default_rng(3)
    rows = rng.integers(0, 256, (5, C.word_bytes(Space.WEIGHTS, lanes)), dtype=np.uint8)
    assert C.words_crc(Space.WEIGHTS, rows, lanes) == zlib.crc32(rows.tobytes())
    emb = np.array([-1, 2, -32768], dtype=np.int16)
    assert C.words_crc(Space.EMBED, emb, lanes) == zlib.crc32(emb.astype("<i2").tobytes())
    assert C.words_crc(Space.EMBED, emb, lanes) == C.words_crc(Space.EMBED, [65535, 2, 32768],
                                                               lanes)
    prog = [(1 << 128) - 1, 5]
    assert C.words_crc(Space.PROGRAM, prog, lanes) == \
        zlib.crc32(C.encode_write(Space.PROGRAM, 0, prog)[10:])
    assert C.words_crc(Space.PARAMS, [], lanes) == 0


def test_unknown_record_and_status():
    with pytest.raises(C.ProtocolError, match="record type 0x09"):
        C.read_record(C.bytes_reader(b"\x09"), 7)
    assert C.read_status(C.bytes_reader(b"\x03")) == C.Status.BAD_RANGE
    assert C.read_status(C.bytes_reader(b"\x77")) == 0x77
    assert C.counter_names(9)[-2:] == ("MEM_BEATS", "MEM_MISSES")
    assert C.counter_names(12)[-2:] == ("counter_10", "counter_11")


def test_docstring_names_every_command_record_and_counter():
    doc = C.__doc__
    for v in C.Command:
        assert f"``{v.name}`` (0x{int(v):02x})" in doc, v
    for v in C.RecordType:
        assert re.search(rf"^    {v.name}\s+u8 0x{int(v):02x},", doc, re.M), v
    for v in [*C.Status, *C.Counter]:
        assert f"``{v.name}``" in doc, v
