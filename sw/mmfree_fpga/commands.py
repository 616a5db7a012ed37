"""The core's command interface: the byte stream the host speaks to the command processor.

This docstring is the specification (the gateware, ``hw/mmfree_hw/command.py``, the driver,
``driver/core.py``, and the tests import the definitions below; nothing retypes them).
Standard library and NumPy only.

Issue 9 wraps these bytes in frames (start of frame, sequence number, length, CRC) carried by
a UART; here they go to the command processor as they are. Without framing nothing can
resynchronize a stream that lost its step (a dropped byte, an unknown opcode): the host's
only recovery is a reset of the device. The frames of issue 9 add that.

Conventions
===========

Every integer is little-endian; ``u8/u16/u32`` unsigned, ``i32`` two's complement. The host
sends a command (an opcode byte, :class:`Command`, then its payload) and reads its reply,
which always starts with a status byte (:class:`Status`). A host may send the next command
before it has read a reply (the processor takes it when it is done), but it must read
replies in order.

A *word* is one entry of a memory space (:class:`isa.Space`); on the stream it takes
``ceil(width / 8)`` bytes, little-endian (:func:`word_bytes`):

========  =============  ==============  ==========================================
space     width (bits)   bytes per word  NumPy view the driver uses
========  =============  ==============  ==========================================
WEIGHTS   2 x lanes      lanes / 4       uint8 ``[count, lanes / 4]`` (engine_words)
PARAMS    32             4               int32
EMBED     16             2               int16
SCRATCH   32             4               int32
STATE     32             4               int32
PROGRAM   128            16              uint8 ``[count, 16]`` or Python ints
========  =============  ==============  ==========================================

Commands (host -> core)
=======================

``IDENTIFY`` (0x01), no payload. Reply (:data:`IDENTIFY_BYTES` = 46 bytes)::

    u8  status        OK
    4   magic         b"MMFC"
    u16 version       VERSION (the command set's; a host refuses any other)
    u16 lanes
    u32 words[6]      the word count of every space, in isa.Space order
    u8  max_topk
    u8  n_counters    how many u32 counters DONE and COUNTERS carry
    u32 build_id      which gateware build answers (0: not given)
    u8  memory        where the weights live (:class:`MemoryKind`)
    u8  packing       how they are stored there (:class:`Packing`)
    u32 onchip_words  SDRAM: the WEIGHTS words [0, onchip_words) kept in block RAM (the
                      compiler places weights by it; 0: all in SDRAM); on chip: the size
    u8  mem_status    :class:`MemoryStatus` flags, read when IDENTIFY is answered: 0 is a
                      memory ready for use; INITIALIZING while an SDRAM controller runs its
                      init sequence and power-up check; ERROR (sticky) when the controller
                      reported an init error or the memory failed that check. A host
                      refuses to use a core whose memory is not ready.

Everything up to ``packing`` is a constant of the build; ``mem_status`` is the only byte
that can change while the core runs.

The build id is a constant of the bitstream or simulator build, chosen by whoever builds it
(``CommandProcessor(..., build_id=)``): :func:`build_id_of` of the core configuration and
the design (e.g. the Verilog generated with build id 0) is the suggested one. A host may
compare it with the id it recorded when it last loaded the device (issue 9: a model already
on the device is not uploaded again); it is never checked against anything here. Magic and
version come first in every version, so a host of any version can refuse a core of another.

``WRITE`` (0x02): ``u8 space, u32 addr, u32 count``, then ``count`` words. Reply: status.
``OK`` once every word is written. ``BAD_RANGE`` when ``addr + count`` exceeds the space's
size: the data bytes are still taken (so the stream stays in step) but nothing is written.
``BAD_SPACE`` for a space number the core does not have: such a space has no words, so no
data bytes follow (a host learns the spaces from IDENTIFY and sends only those).

``READ`` (0x03): ``u8 space, u32 addr, u32 count``. Reply: status, then (only if OK) the
``count`` words. ``BAD_SPACE``/``BAD_RANGE`` as for WRITE.

``RESET_STATE`` (0x04), no payload. Reply: status. The next token is a sequence's first:
its MLGRU takes h = 0 (no memory is cleared; it costs no cycles).

``RUN`` (0x05): ``u8 topk, u16 count``, then ``count`` token ids (``u32`` each). The core
runs the tokens one after another; the last one with ``k_run = topk`` candidates, the ones
before it (the prompt) with ``k_run = 0``. Reply: status (``BAD_ARG`` when ``topk >
max_topk`` or ``count = 0``: the token ids are taken and none runs, nothing follows), then,
when OK, the records of the run, in the order the core makes them, ending with DONE::

    TRACE   u8 0x01, u16 tag, u16 len, i32 values[len]     (a TRACE instruction)
    RESULT  u8 0x02, u8 n, n x (u32 id, i32 logit)         (the last token's candidates,
                                                            best first; none when topk = 0)
    ERROR   u8 0x03, u8 code, u16 pc                       (:class:`isa.ErrorCode`)
    DONE    u8 0x04, u32 counters[n_counters]              (:data:`COUNTERS` order)

ERROR means the sequencer stopped (an unknown opcode, an out-of-range address, queue misuse,
a token out of range: ``isa``'s refusals): no further token runs (their ids are still
taken) and DONE follows. The error codes are ``isa.ErrorCode`` (re-exported here as
:data:`ErrorCode`): the sequencer, the executor and this interface share one table.

``COUNTERS`` (0x06), no payload. Reply: status OK, ``u32 counters[n_counters]``.

``RESET_COUNTERS`` (0x07), no payload. Reply: status OK; every counter restarts at 0.

``CRC`` (0x08): ``u8 space, u32 addr, u32 count``. Reply: status, then (only if OK) ``u32
crc``: the CRC-32 of exactly the bytes a READ of the same range would send after its status
(the ``count`` words in address order, each its ``ceil(width / 8)`` bytes little-endian),
computed by the core from its memory (no word crosses the link). The CRC is zlib's
(``zlib.crc32``; "CRC-32/ISO-HDLC", Ethernet's: polynomial 0x04C11DB7, reflected in and out,
initial value and final XOR 0xFFFFFFFF, check value 0xCBF43926 for b"123456789";
``amaranth.lib.crc.catalog.CRC32_ISO_HDLC`` in the gateware); ``count`` = 0 gives 0.
``BAD_SPACE``/``BAD_RANGE`` as for READ (nothing follows the status). :func:`words_crc`
computes on the host what the core answers for words it was sent, so a host verifies an
upload with one CRC per range instead of reading it back. The status comes as soon as the
range is checked, the u32 once the last word is in: a few cycles a word
(``CommandProcessor``'s docstring: 3 per 32-byte WEIGHTS word, 1 per word of the other
spaces in ``top.Accelerator``), the host link idle meanwhile.

Any other opcode: reply ``BAD_COMMAND``, and the processor reads the next byte as an opcode.
(The bytes of the payload that the host meant to follow are then read as commands: the
stream is out of step and only a reset recovers it; see above.)

Counters (:class:`Counter`, u32, wrapping) count since the last RESET_COUNTERS (or reset):
``CYCLES`` clock cycles while a token runs, ``ENGINE_BUSY`` cycles the engine took a weight
word, ``ENGINE_WAIT_WEIGHTS`` cycles it waited for one, ``WAIT_VECTOR`` cycles the sequencer
waited for a vector unit, ``SEQUENCER`` cycles of sequencer overhead (issuing, no unit busy),
``INSTRUCTIONS`` instructions issued, ``TOKENS`` tokens completed. Their exact definitions
belong to the core (hw/mmfree_hw/core.py); a core may add counters after these (IDENTIFY's
``n_counters`` says how many). A core whose weights stream from SDRAM adds
:class:`MemoryCounter`'s, counted while a token runs: ``MEM_BEATS`` read beats the memory
returned (its data bus busy), ``MEM_MISSES`` weight requests that restarted the weight
stream (hw/mmfree_hw/sdram/weight_store.py), ``MEM_FULL`` cycles its read-ahead stopped
because the prefetch FIFO was full. A host names any others ``counter_<i>``.
"""

from __future__ import annotations

import enum
import hashlib
import struct
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import numpy as np

from . import isa
from .isa import ErrorCode, Space

__all__ = ["MAGIC", "VERSION", "Command", "Status", "RecordType", "ErrorCode", "Counter",
           "COUNTERS", "Space", "word_bits", "word_bytes", "identify_reply", "Identity",
           "MemoryCounter", "MemoryKind", "Packing", "MemoryStatus", "MEMORY_COUNTERS",
           "default_counters",
           "words_crc", "build_id_of"]

MAGIC = b"MMFC"
#: 2: IDENTIFY's build_id, the CRC command. 3: IDENTIFY's memory, packing and mem_status.
VERSION = 3


class Command(enum.IntEnum):
    IDENTIFY = 0x01
    WRITE = 0x02
    READ = 0x03
    RESET_STATE = 0x04
    RUN = 0x05
    COUNTERS = 0x06
    RESET_COUNTERS = 0x07
    CRC = 0x08


#: Payload bytes that follow a command's opcode before any data (WRITE's words and RUN's
#: token ids come after these).
HEADER_BYTES = {Command.IDENTIFY: 0, Command.WRITE: 9, Command.READ: 9,
                Command.RESET_STATE: 0, Command.RUN: 3, Command.COUNTERS: 0,
                Command.RESET_COUNTERS: 0, Command.CRC: 9}


class Status(enum.IntEnum):
    OK = 0x00
    BAD_COMMAND = 0x01    # unknown opcode
    BAD_SPACE = 0x02      # no such memory space
    BAD_RANGE = 0x03      # addr + count past the space's end
    BAD_ARG = 0x04        # RUN: topk > max_topk or count = 0


class RecordType(enum.IntEnum):
    TRACE = 0x01
    RESULT = 0x02
    ERROR = 0x03
    DONE = 0x04


class Counter(enum.IntEnum):
    """The core's counters, in the order DONE and COUNTERS carry them."""

    CYCLES = 0
    ENGINE_BUSY = 1
    ENGINE_WAIT_WEIGHTS = 2
    WAIT_VECTOR = 3
    SEQUENCER = 4
    INSTRUCTIONS = 5
    TOKENS = 6


class MemoryCounter(enum.IntEnum):
    """The counters an SDRAM weight store adds after :class:`Counter`'s."""

    MEM_BEATS = 7
    MEM_MISSES = 8
    MEM_FULL = 9


class MemoryKind(enum.IntEnum):
    ON_CHIP = 0     # block RAM (hw/mmfree_hw/weights.py)
    SDRAM = 1       # behind an SDRAM controller (hw/mmfree_hw/sdram/)


class Packing(enum.IntEnum):
    CODES_2BIT = 0  # numerics.pack_code_bytes: 4 codes a byte
    BASE3 = 1       # numerics' 1.6-bit format: 5 codes a byte


class MemoryStatus(enum.IntFlag):
    READY = 0
    INITIALIZING = 1
    ERROR = 2


COUNTERS: tuple[str, ...] = tuple(c.name for c in Counter)
MEMORY_COUNTERS: tuple[str, ...] = tuple(c.name for c in MemoryCounter)
MAX_RUN_TOKENS = 0xFFFF          # RUN's count is a u16
IDENTIFY_BYTES = 1 + 4 + 2 + 2 + 4 * len(Space) + 1 + 1 + 4 + 2 + 4 + 1
TRACE_HEAD = struct.Struct("<BHH")      # type, tag, len
RESULT_HEAD = struct.Struct("<BB")      # type, n
ERROR_RECORD = struct.Struct("<BBH")    # type, code, pc
ADDR_HEAD = struct.Struct("<BBII")      # opcode, space, addr, count (WRITE, READ, CRC)
CRC_VALUE = struct.Struct("<I")         # CRC's reply after its OK status
RUN_HEAD = struct.Struct("<BBH")        # opcode, topk, count
_IDENT = struct.Struct(f"<B4sHH{len(Space)}IBBIBBIB")
assert _IDENT.size == IDENTIFY_BYTES


def word_bits(space: Space, lanes: int) -> int:
    """Bits of one word of a space (``CoreConfig.word_width``, from the lanes alone)."""
    space = Space(space)
    if space == Space.WEIGHTS:
        return 2 * lanes
    return {Space.PARAMS: 32, Space.EMBED: 16, Space.SCRATCH: 32, Space.STATE: 32,
            Space.PROGRAM: isa.WORD_BITS}[space]


def word_bytes(space: Space, lanes: int) -> int:
    """Bytes one word of a space takes on the stream: ``ceil(width / 8)``."""
    return -(-word_bits(space, lanes) // 8)


#: The NumPy dtype of the spaces whose words are integers NumPy holds (others: uint8 rows).
NARROW_DTYPES = {Space.PARAMS: np.dtype("<i4"), Space.EMBED: np.dtype("<i2"),
                 Space.SCRATCH: np.dtype("<i4"), Space.STATE: np.dtype("<i4")}


# -- words <-> bytes -------------------------------------------------------------------------

def words_to_bytes(space: Space, words, lanes: int) -> bytes:
    """The stream bytes of ``words`` of a space, without any header.

    ``words`` is a uint8 array ``[count, word_bytes]`` (each row one word's bytes, as
    ``numerics.engine_words`` and the compiler's images give WEIGHTS), or a 1-D sequence of
    integers: each must fit the word as a signed or an unsigned value (two's complement is
    sent: int16 embedding entries and int32 values go as they are), or a NumPy integer
    array for the 16/32-bit spaces (converted in one go).
    """
    space = Space(space)
    nb, bits = word_bytes(space, lanes), word_bits(space, lanes)
    if isinstance(words, np.ndarray) and words.ndim == 2:
        if words.dtype != np.uint8 or words.shape[1] != nb:
            raise ValueError(f"{space.name} words as rows must be uint8 [count, {nb}], got "
                             f"{words.dtype} {list(words.shape)}")
        return np.ascontiguousarray(words).tobytes()
    if isinstance(words, np.ndarray) and words.ndim == 1 and words.dtype.kind in "iu" \
            and bits <= 64:
        if words.size:
            lo, hi = int(words.min()), int(words.max())
            if lo < -(1 << (bits - 1)) or hi >= 1 << bits:
                raise ValueError(f"{space.name} values {lo} .. {hi} do not fit {bits} bits")
        unsigned = np.dtype(f"<u{nb}")
        return words.astype(np.int64).astype(unsigned).tobytes() if words.dtype.kind == "i" \
            else words.astype(unsigned).tobytes()
    if isinstance(words, np.ndarray) and words.ndim != 1:
        raise ValueError(f"words must be 1-D or [count, {nb}] uint8, got shape {words.shape}")
    out = bytearray()
    mask = (1 << (8 * nb)) - 1
    for i, w in enumerate(words):
        w = int(w)
        if not -(1 << (bits - 1)) <= w < 1 << bits:
            raise ValueError(f"{space.name} word {i} = {w} does not fit {bits} bits")
        out += (w & mask).to_bytes(nb, "little")
    return bytes(out)


def bytes_to_words(space: Space, data: bytes, lanes: int) -> np.ndarray:
    """Words from their stream bytes: :data:`NARROW_DTYPES` for the 16/32-bit spaces
    (signed: the values as the core holds them), uint8 ``[count, word_bytes]`` for WEIGHTS
    and PROGRAM (:func:`rows_to_ints` turns rows into Python ints)."""
    space = Space(space)
    nb = word_bytes(space, lanes)
    if len(data) % nb:
        raise ValueError(f"{len(data)} bytes are not whole {space.name} words of {nb} bytes")
    if space in NARROW_DTYPES:
        return np.frombuffer(data, dtype=NARROW_DTYPES[space]).copy()
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, nb).copy()


def rows_to_ints(rows: np.ndarray) -> list[int]:
    """uint8 word rows -> one unsigned Python int per word (little-endian)."""
    return [int.from_bytes(r.tobytes(), "little") for r in rows]


def words_crc(space: Space, words, lanes: int) -> int:
    """What CRC answers for a range holding ``words`` (any form :func:`words_to_bytes`
    takes): ``zlib.crc32`` of their stream bytes."""
    return zlib.crc32(words_to_bytes(space, words, lanes))


def build_id_of(*parts: bytes) -> int:
    """A build id from what makes the build (e.g. ``repr(core_config).encode()`` and the
    generated Verilog): the first 4 bytes of their SHA-256, little-endian; never 0 (0 says
    "not given")."""
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little") + p)
    return int.from_bytes(h.digest()[:4], "little") or 1


# -- host -> core ----------------------------------------------------------------------------

def encode_identify() -> bytes:
    return bytes([Command.IDENTIFY])


def encode_write(space: Space, addr: int, words, lanes: int | None = None) -> bytes:
    """A whole WRITE command. ``lanes`` is needed only for WEIGHTS given as integers (rows
    carry their width)."""
    space = Space(space)
    if lanes is None:
        if space == Space.WEIGHTS and isinstance(words, np.ndarray) and words.ndim == 2:
            lanes = 4 * words.shape[1]
        elif space == Space.WEIGHTS:
            raise ValueError("WEIGHTS words as integers need lanes (their width)")
        else:
            lanes = 4                   # unused: the other spaces' widths are fixed
    data = words_to_bytes(space, words, lanes)
    count = len(data) // word_bytes(space, lanes)
    return encode_write_header(space, addr, count) + data


def encode_write_header(space: int, addr: int, count: int) -> bytes:
    """WRITE's opcode and header alone (the words follow); any space number, for tests."""
    return ADDR_HEAD.pack(Command.WRITE, space, addr, count)


def encode_read(space: int, addr: int, count: int) -> bytes:
    return ADDR_HEAD.pack(Command.READ, space, addr, count)


def encode_crc(space: int, addr: int, count: int) -> bytes:
    return ADDR_HEAD.pack(Command.CRC, space, addr, count)


def encode_reset_state() -> bytes:
    return bytes([Command.RESET_STATE])


def encode_run(tokens: Sequence[int], topk: int) -> bytes:
    tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
    if not 0 <= topk <= 0xFF:
        raise ValueError(f"topk = {topk} does not fit its u8")
    if len(tokens) > MAX_RUN_TOKENS:
        raise ValueError(f"{len(tokens)} tokens: one RUN takes at most {MAX_RUN_TOKENS}")
    if len(tokens) and (tokens.min() < 0 or tokens.max() >= 1 << 32):
        raise ValueError("token ids must fit a u32")
    return RUN_HEAD.pack(Command.RUN, topk, len(tokens)) + tokens.astype("<u4").tobytes()


def encode_counters() -> bytes:
    return bytes([Command.COUNTERS])


def encode_reset_counters() -> bytes:
    return bytes([Command.RESET_COUNTERS])


# -- core -> host: what the core sends (gateware ROM, fake cores, tests) ---------------------

def identify_reply(core, build_id: int = 0, memory: MemoryKind = MemoryKind.ON_CHIP,
                   packing: Packing = Packing.CODES_2BIT,
                   mem_status: MemoryStatus = MemoryStatus.READY,
                   n_counters: int | None = None, onchip_words: int | None = None) -> bytes:
    """The IDENTIFY reply (:data:`IDENTIFY_BYTES`, status included) of a core (a
    ``CoreConfig``) built with ``build_id`` (a u32), its weights in ``memory`` stored as
    ``packing``, ``n_counters`` counters (default: :class:`Counter`'s, plus
    :class:`MemoryCounter`'s for SDRAM). The gateware sends exactly these bytes with
    ``mem_status`` = its memory's status (its ROM is built from this function, the last
    byte ORed in as it answers)."""
    if not 0 <= build_id < 1 << 32:
        raise ValueError(f"build_id = {build_id} does not fit its u32")
    if n_counters is None:
        n_counters = default_counters(memory)
    if onchip_words is None:
        onchip_words = core.weight_words if memory == MemoryKind.ON_CHIP else 0
    return _IDENT.pack(Status.OK, MAGIC, VERSION, core.lanes,
                       *(core.size(s) for s in Space), core.max_topk, n_counters, build_id,
                       MemoryKind(memory), Packing(packing), onchip_words,
                       MemoryStatus(mem_status))


def default_counters(memory: MemoryKind = MemoryKind.ON_CHIP) -> int:
    """How many counters a core with weights in ``memory`` carries."""
    return len(Counter) + (len(MemoryCounter) if memory == MemoryKind.SDRAM else 0)


def encode_crc_reply(crc: int) -> bytes:
    """CRC's whole reply when OK: status and the u32."""
    return bytes([Status.OK]) + CRC_VALUE.pack(crc)


def encode_trace(tag: int, values) -> bytes:
    values = np.asarray(values, dtype=np.int64)
    return TRACE_HEAD.pack(RecordType.TRACE, tag, len(values)) + values.astype("<i4").tobytes()


def encode_result(ids, logits) -> bytes:
    ids, logits = np.asarray(ids, dtype=np.int64), np.asarray(logits, dtype=np.int64)
    pairs = np.empty(len(ids), dtype=[("id", "<u4"), ("logit", "<i4")])
    pairs["id"], pairs["logit"] = ids, logits
    return RESULT_HEAD.pack(RecordType.RESULT, len(ids)) + pairs.tobytes()


def encode_error(code: int, pc: int) -> bytes:
    return ERROR_RECORD.pack(RecordType.ERROR, code, pc)


def encode_done(counters: Iterable[int]) -> bytes:
    return bytes([RecordType.DONE]) + encode_counter_values(counters)


def encode_counter_values(counters: Iterable[int]) -> bytes:
    return np.asarray(list(counters), dtype=np.int64).astype("<u4").tobytes()


# -- parsing replies from a byte reader -------------------------------------------------------

Reader = Callable[[int], bytes]   # reader(n) -> exactly n bytes (or raises)


class Identity(NamedTuple):
    version: int
    lanes: int
    words: dict          # Space -> word count
    max_topk: int
    n_counters: int
    build_id: int = 0
    memory: MemoryKind = MemoryKind.ON_CHIP
    packing: Packing = Packing.CODES_2BIT
    mem_status: MemoryStatus = MemoryStatus.READY
    onchip_words: int = 0

    @property
    def counter_names(self) -> tuple[str, ...]:
        return counter_names(self.n_counters)


class Trace(NamedTuple):
    tag: int
    values: np.ndarray   # int64


class Result(NamedTuple):
    ids: np.ndarray      # int64, best first
    logits: np.ndarray   # int64


class Error(NamedTuple):
    code: int            # ErrorCode value (an unknown one stays an int)
    pc: int


class Done(NamedTuple):
    counters: tuple[int, ...]


class ProtocolError(ValueError):
    """Bytes from the core that do not follow this specification."""


class VersionMismatch(ProtocolError):
    def __init__(self, device: int, host: int = VERSION):
        self.device, self.host = device, host
        super().__init__(f"the core speaks command-set version {device}, this host version "
                         f"{host}: use a host and a bitstream (or simulator build) of the "
                         f"same version")


def counter_names(n: int) -> tuple[str, ...]:
    known = COUNTERS + MEMORY_COUNTERS
    return known[:n] + tuple(f"counter_{i}" for i in range(len(known), n))


def bytes_reader(data: bytes) -> Reader:
    """A reader over a bytes object (raises EOFError past its end)."""
    pos = [0]

    def read(n: int) -> bytes:
        if pos[0] + n > len(data):
            raise EOFError(f"wanted {n} bytes at offset {pos[0]}, {len(data) - pos[0]} left")
        out = data[pos[0]:pos[0] + n]
        pos[0] += n
        return out
    return read


def read_status(read: Reader) -> Status | int:
    """The status byte (a :class:`Status`, or the raw int if the core sent an unknown one)."""
    s = read(1)[0]
    return Status(s) if s in Status._value2member_map_ else s


def read_identify(read: Reader) -> Identity:
    """IDENTIFY's reply after its status byte. Checks the magic, then the version (before
    anything that a later version might lay out differently)."""
    magic = read(4)
    if magic != MAGIC:
        raise ProtocolError(f"IDENTIFY answered magic {magic!r}, not {MAGIC!r}: not an "
                            f"mmfree-fpga core (or a link out of step)")
    version = struct.unpack("<H", read(2))[0]
    if version != VERSION:
        raise VersionMismatch(version)
    rest = _IDENT.size - 7
    vals = struct.unpack(f"<H{len(Space)}IBBIBBIB", read(rest))
    try:
        memory, packing = MemoryKind(vals[-4]), Packing(vals[-3])
    except ValueError:
        raise ProtocolError(f"IDENTIFY names an unknown weight memory ({vals[-4]}) or "
                            f"packing ({vals[-3]})") from None
    return Identity(version=version, lanes=vals[0],
                    words={s: vals[1 + i] for i, s in enumerate(Space)},
                    max_topk=vals[-7], n_counters=vals[-6], build_id=vals[-5],
                    memory=memory, packing=packing, onchip_words=vals[-2],
                    mem_status=MemoryStatus(vals[-1]))


def read_crc(read: Reader) -> int:
    """CRC's u32 after its OK status."""
    return CRC_VALUE.unpack(read(CRC_VALUE.size))[0]


def read_counter_values(read: Reader, n_counters: int) -> tuple[int, ...]:
    return tuple(int(v) for v in np.frombuffer(read(4 * n_counters), dtype="<u4"))


def read_record(read: Reader, n_counters: int) -> Trace | Result | Error | Done:
    kind = read(1)[0]
    if kind == RecordType.TRACE:
        tag, n = struct.unpack("<HH", read(4))
        return Trace(tag, np.frombuffer(read(4 * n), dtype="<i4").astype(np.int64))
    if kind == RecordType.RESULT:
        n = read(1)[0]
        pairs = np.frombuffer(read(8 * n), dtype=[("id", "<u4"), ("logit", "<i4")])
        return Result(pairs["id"].astype(np.int64), pairs["logit"].astype(np.int64))
    if kind == RecordType.ERROR:
        code, pc = struct.unpack("<BH", read(3))
        return Error(ErrorCode(code) if code in ErrorCode._value2member_map_ else code, pc)
    if kind == RecordType.DONE:
        return Done(read_counter_values(read, n_counters))
    raise ProtocolError(f"record type 0x{kind:02x} is none of {[t.name for t in RecordType]}")


def read_run_records(read: Reader, n_counters: int) -> list:
    """RUN's records after an OK status, DONE included (always the last)."""
    out = []
    while True:
        rec = read_record(read, n_counters)
        out.append(rec)
        if isinstance(rec, Done):
            return out
