"""The host link's framed protocol: frames around the command byte stream of ``commands.py``.

This docstring is the specification. The gateware (``hw/mmfree_hw/link.py``), the host
(``link/framed.py``) and the tests import the definitions below; nothing retypes them.
Standard library only.

Why frames
==========

The command stream of ``commands.py`` has no way to resynchronize: one lost byte and the
command processor reads payload bytes as opcodes, and nothing tells a good byte from a
corrupted one. A frame adds a start byte, a length and a CRC-32, so the device checks a whole
command before a single byte of it reaches the command processor (a bad frame never writes
memory), a receiver that lost its step finds the next frame, a sequence number lets the
device refuse a command it has already executed, and a version lets an old host and a new
bitstream refuse each other by name.

Frame layout (both directions)
==============================

Every integer is little-endian, unsigned::

    off      size  field
      0         1  sof       SOF = 0xA5
      1         1  version   PROTOCOL_VERSION = 1
      2         1  type      FrameType
      3         1  seq       sequence number (below)
      4         2  len       payload bytes, u16
      6       len  payload
      6 + len   4  crc       u32, CRC-32 of bytes 1 .. 6 + len - 1 (version through payload)

So a frame is ``len + OVERHEAD`` (10) bytes. CRC-32 is the one of zlib's ``crc32()`` (IEEE
802.3 / Ethernet, catalogued as CRC-32/ISO-HDLC, Amaranth
``lib.crc.catalog.CRC32_ISO_HDLC``, the same object as ``CRC32_ETHERNET``): polynomial
0x04C11DB7 reflected, init and final XOR 0xFFFFFFFF; crc32(b"123456789") = 0xCBF43926
(tests/test_protocol.py checks that Amaranth's and zlib's agree). The SOF byte is not
covered: it only marks where a frame may begin. Nothing is byte-stuffed: SOF may occur
inside a frame; a receiver that hunts for a frame checks length and CRC before it believes
one.

Bytes 0..5 (sof, version, type, seq, len) and the layout of a NAK frame (below) keep their
meaning in every version of this protocol, so that a device and a host of different
versions can tell each other their versions.

Frame types (:class:`FrameType`)
================================

Host -> device:

``CMD`` (0x01): the payload is exactly one whole command of ``commands.py`` (its opcode,
then its payload), 1 to :data:`MAX_CMD_PAYLOAD` (2048) bytes. 2048 because the device keeps
the whole payload in one frame buffer until its CRC is checked, and 2048 bytes are one ECP5
DP16KD block RAM (18 Kbit, configured 2048 x 9); the header fields are registers and the CRC
is computed as the bytes arrive, so only the payload is stored. A WRITE therefore carries at
most :data:`MAX_WRITE_DATA` (2038) bytes of words and a RUN at most
:data:`MAX_RUN_TOKENS_PER_FRAME` (511) token ids; bigger ones are sent as several commands
(``CoreDriver``'s ``chunk_bytes``; ``FramedTransport`` refuses a command that does not fit,
saying so). A WRITE frame is 99 % words: 20 bytes of frame and command header per 2038.
The device does not parse the command: a payload that is not exactly one whole command (a
host bug) would leave the command processor out of step with the frames.

Device -> host:

``REPLY`` (0x02) and ``REPLY_END`` (0x03): the command's reply bytes, in order, as the
command processor produces them, split over frames of at most :data:`MAX_REPLY_CHUNK` (256)
data bytes, the last one typed REPLY_END. ``seq`` is the command's. (256: 12 bytes of
framing per chunk, 4.7 %; the device's reply FIFO of two chunks is one block RAM, and a
chunk goes out while the next one fills.) Payload::

    u16 index    the number of non-empty reply frames of this command before this one
    u8  data[]   0 .. MAX_REPLY_CHUNK reply bytes

``index`` lets the host notice a lost reply frame (a CRC protects each frame, not their
sequence). A REPLY may be empty: while a command runs the device sends a frame at least
every ``heartbeat`` cycles (a gateware parameter), with whatever reply bytes it has,
possibly none, so a host can tell a long RUN from a dead device; an empty frame carries the
index the next data frame will have and does not advance it. A REPLY_END may be empty too
(the reply's length was a multiple of the chunk). A reply always ends with exactly one
REPLY_END.

``NAK`` (0x04): the device refused a frame; nothing of it was executed. Payload
(:data:`NAK_PAYLOAD`, 4 bytes, the same in every protocol version)::

    u8  reason        Nak
    u8  version       the device's PROTOCOL_VERSION
    u16 max_payload   the device's MAX_CMD_PAYLOAD

``seq`` is the refused frame's seq as received (0 if the frame ended before its seq byte).
For BAD_CRC, BAD_LENGTH, TRUNCATED, VERSION and BAD_TYPE that byte is not known to be
right (the frame was bad); for REPEAT and BUSY it is (the frame's CRC was good).

NAK reasons (:class:`Nak`)::

    BAD_CRC     0x01  the CRC does not match
    BAD_LENGTH  0x02  len = 0 or len > max_payload (decided at the header: the rest of the
                      frame is not read as one; the receiver hunts from the next byte)
    TRUNCATED   0x03  the frame stopped: no byte for rx_timeout cycles (a gateware
                      parameter) after its SOF and before its last CRC byte
    VERSION     0x04  version != the device's (decided at the header, before the CRC,
                      since another version may lay its frame out differently)
    REPEAT      0x05  seq equals the seq of the last command the device accepted: it is
                      not executed again
    BAD_TYPE    0x06  a good frame whose type is not CMD
    BUSY        0x07  a good, new command arrived while the frame buffer still held the
                      previous one (a RUN keeps it until its last token id has gone to the
                      command processor): dropped, send it again later

The device (:class:`DeviceFramer` is its behaviour in Python; ``mmfree_hw.link.FrameLink``
the gateware)
==========================================================================================

Receiver: hunts for SOF, reads the 5 header bytes after it, refuses a frame of another
version (NAK VERSION) or of a bad length (NAK BAD_LENGTH) at once, else reads ``len``
payload bytes into the frame buffer and the 4 CRC bytes, and then, in this order: BAD_CRC,
BAD_TYPE, REPEAT, BUSY, or accepts the command: it becomes the last accepted seq and waits
in the buffer for the executor. A frame whose bytes stop for ``rx_timeout`` cycles is
refused (TRUNCATED). After any refusal the receiver hunts again from the next byte (the bytes
of the refused frame are not rescanned). It takes a byte in every cycle (a UART has no flow
control).

Executor: once no reply is in progress, it streams the accepted command's bytes to the
command processor; the buffer is free again after the last one. The reply is complete when,
after that last byte, the command processor's ``busy`` is low (it waits for its next byte
with nothing left to send: ``hw/mmfree_hw/command.py``'s contract).

Framer: sends reply frames as above (a REPLY as soon as MAX_REPLY_CHUNK bytes are there,
the REPLY_END with the last 0 .. MAX_REPLY_CHUNK bytes once the reply is complete, an
earlier partial or empty REPLY when the heartbeat is due), and NAKs only while no reply is
in progress, so a NAK never comes between the frames of a reply: a REPEAT for the command
being executed follows its REPLY_END. It holds one NAK; a newer one replaces an older one
not yet sent.

The device remembers only the last accepted seq (none after reset); the host picks seqs so
that a new command's differs from it, and resends the same seq only when it wants
"execute this unless you already have".

Line efficiency, stop-and-wait: a WRITE of 2038 bytes of words costs 2058 bytes one way and
a 13-byte reply the other, plus the turnaround (the device's ~2 k cycles to hand the
command to the processor, and the host's latency). With no turnaround that is 98.4 % of the
line; with t ms of turnaround at 3 Mbaud (300 bytes/ms) 2038 / (2071 + 300 t): 86 % at
t = 1 ms (set the FTDI latency timer to 1 ms).

Host recovery (``framed.FramedTransport``)
==========================================

The host sends one command frame and reads its reply before it sends the next one
(stop-and-wait; the device's single frame buffer is sized for that). Anything but a whole,
well-indexed reply of its seq is a failed attempt; after ``retries`` attempts the host raises
``LinkError`` naming the command and what went wrong. While it waits it ignores good frames
of other seqs (stale replies, late NAKs), and a NAK of a bad frame (BAD_CRC, BAD_LENGTH,
TRUNCATED, VERSION, BAD_TYPE) unless its seq is the command's and no reply frame of it has
come (garbage makes such NAKs too; one of ours whose seq byte was hit is left to the
timeout). What it does after a failed attempt:

- an *idempotent* command (every command but RUN: IDENTIFY, READ, WRITE of the same data,
  RESET_STATE, COUNTERS, RESET_COUNTERS) is simply sent again with a new seq, whatever
  happened: executing it twice does no harm;
- a RUN is sent again with the same seq while there is no sign that it ran (a NAK of its
  frame, BUSY, silence): the device either runs it now or answers REPEAT. If it ran and its
  reply was lost (REPEAT, or a reply frame of its seq came but not the whole reply), the
  host replays: RESET_STATE, then RUN of every token run since the last RESET_STATE with
  topk = 0 (in frames of at most MAX_RUN_TOKENS_PER_FRAME tokens; their replies are not
  needed, a sign that each ran is enough), then the lost RUN again with a new seq. The core
  is deterministic, so its state and the reply are what they would have been. The counters,
  though, then include the replayed tokens and the lost RUN's first run. The host keeps the
  token history itself (it sees every command and reply); it knows none until the first
  RESET_STATE of the session, and a WRITE, or a RUN that stopped with an ERROR record,
  since the last RESET_STATE make a replay impossible and a lost RUN reply a LinkError.
- REPEAT always means "executed" (frames may be duplicated on the way, so a REPEAT on a
  seq's first sending may be its own copy's). The device's last seq may be an earlier host
  session's and equal a new session's first, so a session's first frame is never a RUN: the
  host sends an IDENTIFY first if need be.
- VERSION naming another device version, or a good frame of another version from the
  device: ``LinkError`` naming both versions, no retry. BAD_LENGTH from a device whose
  max_payload is below the command's size: ``LinkError`` saying so.
- Bounds besides ``retries``: an attempt fails after GARBAGE_LIMIT bytes that are no frame
  (a babbling peer), and an optional ``deadline`` (seconds per command) ends the waiting.
  The raw transport's read timeout is the link's timeout: set it above the heartbeat period.
"""

from __future__ import annotations

import enum
import struct
import zlib
from collections.abc import Callable
from typing import NamedTuple

from .. import commands as C

SOF = 0xA5
PROTOCOL_VERSION = 1

HEADER = struct.Struct("<BBBBH")        # sof, version, type, seq, len
HEADER_BYTES = HEADER.size              # 6
CRC = struct.Struct("<I")
CRC_BYTES = CRC.size                    # 4
OVERHEAD = HEADER_BYTES + CRC_BYTES     # 10 bytes of frame around a payload

#: The Amaranth ``lib.crc.catalog`` entry of the frame CRC (the host's is zlib.crc32).
CRC_ALGORITHM = "CRC32_ISO_HDLC"

MAX_CMD_PAYLOAD = 2048                  # one DP16KD of frame buffer (see above)
MAX_REPLY_CHUNK = 256                   # reply data bytes per REPLY / REPLY_END frame
REPLY_INDEX = struct.Struct("<H")       # a reply frame's payload starts with its index
MAX_REPLY_PAYLOAD = REPLY_INDEX.size + MAX_REPLY_CHUNK
NAK_PAYLOAD = struct.Struct("<BBH")     # reason, device version, device max_payload

#: Data bytes of the largest WRITE, and token ids of the largest RUN, that fit one frame.
MAX_WRITE_DATA = MAX_CMD_PAYLOAD - C.ADDR_HEAD.size
MAX_RUN_TOKENS_PER_FRAME = (MAX_CMD_PAYLOAD - C.RUN_HEAD.size) // 4

#: Gateware defaults, in clock cycles (at 50 MHz: 21 ms and 84 ms). A host's read timeout
#: must be longer than the heartbeat period (plus the link's latency).
DEFAULT_RX_TIMEOUT = 1 << 20
DEFAULT_HEARTBEAT = 1 << 22


class FrameType(enum.IntEnum):
    CMD = 0x01
    REPLY = 0x02
    REPLY_END = 0x03
    NAK = 0x04


class Nak(enum.IntEnum):
    BAD_CRC = 0x01
    BAD_LENGTH = 0x02
    TRUNCATED = 0x03
    VERSION = 0x04
    REPEAT = 0x05
    BAD_TYPE = 0x06
    BUSY = 0x07


#: Commands that must not run twice (Host recovery): every other one is resent freely.
NOT_IDEMPOTENT = frozenset({C.Command.RUN})

#: NAKs whose seq byte is the refused frame's as received, not known to be right.
ANONYMOUS_NAKS = frozenset({Nak.BAD_CRC, Nak.BAD_LENGTH, Nak.TRUNCATED, Nak.VERSION,
                            Nak.BAD_TYPE})


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


# -- encoding --------------------------------------------------------------------------------

def encode_frame(ftype: int, seq: int, payload: bytes = b"",
                 version: int = PROTOCOL_VERSION) -> bytes:
    """One whole frame (any type, any version: tests build bad ones with it too)."""
    if not 0 <= len(payload) <= 0xFFFF:
        raise ValueError(f"a payload of {len(payload)} bytes does not fit len's u16")
    head = HEADER.pack(SOF, version, ftype, seq & 0xFF, len(payload))
    body = head[1:] + bytes(payload)
    return head[:1] + body + CRC.pack(crc32(body))


def encode_cmd(seq: int, command: bytes) -> bytes:
    if not 1 <= len(command) <= MAX_CMD_PAYLOAD:
        raise ValueError(f"a CMD frame carries 1 to {MAX_CMD_PAYLOAD} bytes, not "
                         f"{len(command)}")
    return encode_frame(FrameType.CMD, seq, command)


def encode_reply(seq: int, index: int, data: bytes, end: bool) -> bytes:
    if len(data) > MAX_REPLY_CHUNK:
        raise ValueError(f"a reply frame carries at most {MAX_REPLY_CHUNK} bytes")
    return encode_frame(FrameType.REPLY_END if end else FrameType.REPLY, seq,
                        REPLY_INDEX.pack(index & 0xFFFF) + bytes(data))


def encode_nak(seq: int, reason: int, version: int = PROTOCOL_VERSION,
               max_payload: int = MAX_CMD_PAYLOAD) -> bytes:
    return encode_frame(FrameType.NAK, seq, NAK_PAYLOAD.pack(reason, version, max_payload),
                        version=version)


def reply_frames(seq: int, reply: bytes, chunk: int = MAX_REPLY_CHUNK) -> bytes:
    """A whole reply as the device sends it without heartbeats: full REPLY frames, then a
    REPLY_END with the rest (empty if the reply is a multiple of ``chunk``)."""
    out, index, pos = bytearray(), 0, 0
    while len(reply) - pos >= chunk:
        out += encode_reply(seq, index, reply[pos:pos + chunk], False)
        index, pos = index + 1, pos + chunk
    out += encode_reply(seq, index, reply[pos:], True)
    return bytes(out)


# -- decoding --------------------------------------------------------------------------------

class Frame(NamedTuple):
    version: int
    type: int            # a FrameType, or the raw int of an unknown one
    seq: int
    payload: bytes


class NakInfo(NamedTuple):
    reason: int          # a Nak, or the raw int of an unknown one
    version: int         # the device's protocol version
    max_payload: int


def parse_nak(payload: bytes) -> NakInfo | None:
    """A NAK's payload, or None if it is not NAK_PAYLOAD's size."""
    if len(payload) != NAK_PAYLOAD.size:
        return None
    reason, version, max_payload = NAK_PAYLOAD.unpack(payload)
    if reason in Nak._value2member_map_:
        reason = Nak(reason)
    return NakInfo(reason, version, max_payload)


class FrameParser:
    """A streaming frame parser that never raises on what it is fed.

    ``feed(data)`` returns the frames completed by ``data``, each a :class:`Frame` whose CRC
    matched (of any version and type: the caller judges those). A candidate whose len
    exceeds ``max_payload`` or whose CRC does not match is dropped and the bytes after its
    SOF are searched again, so a frame that follows garbage (or sits inside a corrupted
    frame's supposed length) is still found. ``wanted()`` is how many more bytes the parser
    needs before it can decide anything (exact: a reader that reads that many never reads
    past the end of a frame); ``flush()`` gives up on the candidate in progress (the bytes
    stopped) and returns any frames found in what it held. Counters: ``garbage`` bytes
    skipped, ``bad_crc`` and ``bad_length`` candidates dropped, ``frames`` returned.
    """

    def __init__(self, max_payload: int = MAX_REPLY_PAYLOAD):
        self.max_payload = max_payload
        self.buf = bytearray()
        self.garbage = self.bad_crc = self.bad_length = self.frames = 0

    def wanted(self) -> int:
        if not self.buf:
            return 1
        if len(self.buf) < HEADER_BYTES:
            return HEADER_BYTES - len(self.buf)
        n = HEADER_BYTES + self._len() + CRC_BYTES
        return max(1, n - len(self.buf))

    def _len(self) -> int:
        return self.buf[4] | self.buf[5] << 8

    def _drop(self, n: int) -> None:
        del self.buf[:n]

    def _hunt(self) -> None:
        i = self.buf.find(SOF)
        if i < 0:
            self.garbage += len(self.buf)
            self.buf.clear()
        elif i:
            self.garbage += i
            self._drop(i)

    def feed(self, data: bytes) -> list[Frame]:
        self.buf += data
        out = []
        while True:
            self._hunt()
            if len(self.buf) < HEADER_BYTES:
                return out
            n = self._len()
            if n > self.max_payload:
                self.bad_length += 1
                self.garbage += 1
                self._drop(1)
                continue
            total = HEADER_BYTES + n + CRC_BYTES
            if len(self.buf) < total:
                return out
            body = bytes(self.buf[1:HEADER_BYTES + n])
            (crc,) = CRC.unpack_from(self.buf, HEADER_BYTES + n)
            if crc != crc32(body):
                self.bad_crc += 1
                self.garbage += 1
                self._drop(1)
                continue
            ftype = self.buf[2]
            if ftype in FrameType._value2member_map_:
                ftype = FrameType(ftype)
            out.append(Frame(self.buf[1], ftype, self.buf[3], body[HEADER_BYTES - 1:]))
            self.frames += 1
            self._drop(total)

    def flush(self) -> list[Frame]:
        """The bytes stopped: drop the candidate in progress, search the rest again."""
        if not self.buf:
            return []
        self.garbage += 1
        self._drop(1)
        return self.feed(b"")


# -- where one command ends in a command byte stream -----------------------------------------

class CommandError(ValueError):
    """A command the framed link cannot carry."""


class CommandTooBig(CommandError):
    """A whole command that does not fit one CMD frame."""


def command_size(buf: bytes, lanes: int | None) -> int | None:
    """Bytes of the first whole command of ``commands.py`` at the start of ``buf``, or None
    if ``buf`` does not hold all of it yet. Follows the command processor: an unknown opcode
    is one byte (the processor answers BAD_COMMAND and reads the next byte as an opcode), a
    WRITE to a space the core does not have has no data bytes. ``lanes`` (IDENTIFY's) gives
    the width of WEIGHTS words; a WEIGHTS WRITE with ``lanes`` None raises LookupError.
    Raises :class:`CommandTooBig` as soon as a header says the command exceeds
    MAX_CMD_PAYLOAD (:class:`CommandError` for an opcode without HEADER_BYTES). A command
    whose only variable part is not WRITE's words or RUN's ids needs a rule here."""
    if not buf:
        return None
    op = buf[0]
    if op not in C.Command._value2member_map_:
        return 1
    op = C.Command(op)
    if op not in C.HEADER_BYTES:
        raise CommandError(f"{op.name}: commands.HEADER_BYTES does not say its size")
    head = 1 + C.HEADER_BYTES[op]
    if len(buf) < head:
        return None
    size = head
    if op == C.Command.WRITE:
        _, space, _, count = C.ADDR_HEAD.unpack_from(buf)
        if space in C.Space._value2member_map_:
            if space == C.Space.WEIGHTS and lanes is None:
                raise LookupError("the width of WEIGHTS words needs the core's lanes")
            nb = C.word_bytes(space, lanes or 4)
            size += count * nb
            if size > MAX_CMD_PAYLOAD:
                raise CommandTooBig(
                    f"WRITE of {count} {C.Space(space).name} words ({count * nb} bytes) does "
                    f"not fit one frame: a frame takes at most {MAX_WRITE_DATA} bytes of "
                    f"words (use CoreDriver(..., chunk_bytes={MAX_WRITE_DATA}))")
    elif op == C.Command.RUN:
        _, _, count = C.RUN_HEAD.unpack_from(buf)
        size += 4 * count
        if size > MAX_CMD_PAYLOAD:
            raise CommandTooBig(
                f"RUN of {count} tokens does not fit one frame: a frame takes at most "
                f"{MAX_RUN_TOKENS_PER_FRAME} token ids (send longer prompts as several RUNs)")
    return size if len(buf) >= size else None


# -- the device side, in Python ---------------------------------------------------------------

class DeviceFramer:
    """The device's behaviour (this docstring's "The device") as a byte-level model, the
    reference the gateware is tested against and the peer of host tests.

    ``processor(command) -> reply``: executes one whole command and returns its whole
    reply (a command-set model). Executing is instantaneous here, so a frame never finds
    the buffer busy (no BUSY) and no heartbeat is ever due. ``receive(data)`` takes bytes
    from the host; ``quiet()`` says the line stayed silent for the rx timeout; what the
    device sends accumulates in ``out``. ``accepted`` lists the commands executed, in order;
    ``naks`` the reasons of the NAKs sent.
    """

    def __init__(self, processor: Callable[[bytes], bytes], max_payload: int = MAX_CMD_PAYLOAD,
                 max_chunk: int = MAX_REPLY_CHUNK, version: int = PROTOCOL_VERSION):
        self.processor = processor
        self.max_payload, self.max_chunk, self.version = max_payload, max_chunk, version
        self.out = bytearray()
        self.accepted: list[bytes] = []
        self.naks: list[Nak] = []
        self.last_seq: int | None = None
        self._state = "HUNT"
        self._head = bytearray()
        self._body = bytearray()
        self._seq = 0

    def _nak(self, reason: Nak, seq: int) -> None:
        self.naks.append(reason)
        self.out += encode_nak(seq, reason, self.version, self.max_payload)

    def receive(self, data: bytes) -> None:
        for b in data:
            self._byte(b)

    def _byte(self, b: int) -> None:
        if self._state == "HUNT":
            if b == SOF:
                self._state, self._seq = "HEADER", 0
                self._head = bytearray()
            return
        if self._state == "HEADER":
            self._head.append(b)
            if len(self._head) == 3:
                self._seq = self._head[2]
            if len(self._head) < 5:
                return
            version, _, seq, n = struct.unpack("<BBBH", self._head)
            if version != self.version:
                self._nak(Nak.VERSION, seq)
                self._state = "HUNT"
            elif not 1 <= n <= self.max_payload:
                self._nak(Nak.BAD_LENGTH, seq)
                self._state = "HUNT"
            else:
                self._len, self._body = n, bytearray()
                self._state = "BODY"
            return
        self._body.append(b)                   # BODY: payload, then the 4 CRC bytes
        if len(self._body) < self._len + CRC_BYTES:
            return
        self._state = "HUNT"
        _, ftype, seq, _ = struct.unpack("<BBBH", self._head)
        payload = bytes(self._body[:self._len])
        (crc,) = CRC.unpack_from(self._body, self._len)
        if crc != crc32(bytes(self._head) + payload):
            self._nak(Nak.BAD_CRC, seq)
        elif ftype != FrameType.CMD:
            self._nak(Nak.BAD_TYPE, seq)
        elif seq == self.last_seq:
            self._nak(Nak.REPEAT, seq)
        else:
            self.last_seq = seq
            self.accepted.append(payload)
            self.out += reply_frames(seq, self.processor(payload), self.max_chunk)

    def quiet(self) -> None:
        if self._state != "HUNT":
            self._nak(Nak.TRUNCATED, self._seq)
            self._state = "HUNT"
