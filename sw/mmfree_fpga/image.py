"""The exported weight image (``.mmf``): a versioned binary container the host streams to the FPGA.

This docstring is the format specification. It is complete: a parser can be written from it
alone, in any language. The container is generic: it stores named integer arrays and a JSON
object and knows nothing of what they mean (the exporter and the accelerator agree on that
through the names and the JSON).

Format version 1
================

All integers are little-endian and unsigned unless said otherwise. ``u8/u16/u32/u64`` are
unsigned integers of 1/2/4/8 bytes. Offsets are byte offsets from the start of the file.

File layout (as written by :func:`write_image`; what readers must accept is under
"Verification" below)::

    [0, 64)                header (64 bytes)
    [64, 64 + M)           meta: M bytes of UTF-8 JSON
    zero padding to a multiple of 64
    [T, T + 96 * N)        section table: N entries of 96 bytes, T a multiple of 64
    zero padding to a multiple of 64
    section 0 data, zero padding to a multiple of 64,
    section 1 data, ...    each section starts at a multiple of 64, in table order
    ...                    the file ends right after the last section's data

Header (64 bytes at offset 0; every field naturally aligned)::

    off size type     field
      0   4 char[4]   magic          "MMFQ" (4D 4D 46 51)
      4   2 u16       version        1
      6   2 u16       header_nbytes  64 in version 1 (see below)
      8   4 u32       flags          0 (no flags are defined; readers reject any set bit)
     12   4 u32       n_sections     N, number of section table entries
     16   8 u64       meta_offset    offset of the meta JSON (64 as written)
     24   8 u64       meta_nbytes    its length in bytes
     32   8 u64       table_offset   offset of the section table (multiple of 64)
     40   8 u64       file_nbytes    exact length of the whole file
     48   4 u32       meta_crc32     CRC-32 of the meta bytes
     52   4 u32       table_crc32    CRC-32 of the N * 96 table bytes (0 when N = 0)
     56   4 u32       reserved       0
     60   4 u32       header_crc32   CRC-32 of header bytes [0, 60), followed (only when
                                     header_nbytes > 64) by bytes [64, header_nbytes)

Bytes 0..5 (magic and version) keep their meaning in every version of the format, so any reader
can tell "not an .mmf file" and "too new for me" apart from corruption: check magic, then
version, and only then the header CRC. ``header_nbytes`` lets a later version grow the header
without moving the fixed fields above; the bytes in [64, header_nbytes) are then a header
extension, covered by header_crc32. Version 1 writers always write 64.

Meta: ``meta_nbytes`` bytes of UTF-8 encoded JSON whose top-level value is an object. Written
with sorted keys and no whitespace (``json.dumps(meta, sort_keys=True, separators=(",", ":"),
ensure_ascii=False, allow_nan=False)``); readers must not depend on that form. No NUL
terminator. It holds the model configuration and the number formats of the sections.

Section table entry (96 bytes; entry i at table_offset + 96 * i; every field naturally
aligned)::

    off size type     field
      0  48 char[48]  name      printable ASCII 0x21..0x7E (no spaces), 1 to 47 bytes,
                                NUL-padded: at least one NUL, and all bytes after the
                                first NUL are NUL. Unique within the file.
                                Example: "layers.3.attn.i_proj.codes".
     48   8 u64       offset    offset of the data, a multiple of 64
     56   8 u64       nbytes    data length in bytes
     64  16 u32[4]    shape     dims 0..ndim-1; unused dims (ndim..3) are 1, so the
                                element count is always shape[0]*shape[1]*shape[2]*shape[3]
     80   4 u32       crc32     CRC-32 of the nbytes data bytes (0 for empty data)
     84   1 u8        dtype     element type code, below
     85   1 u8        ndim      number of dims, 0..4 (0 = a scalar: one element)
     86  10 u8[10]    reserved  0

dtype codes (element size in bytes)::

    0 uint8 (1)   1 int8 (1)   2 uint16 (2)   3 int16 (2)
    4 uint32 (4)  5 int32 (4)  6 int64 (8)    7 bytes (1): an opaque blob of raw bytes,
                                                always ndim = 1, shape[0] = nbytes

Section data: the elements in C (row-major) order, each little-endian (two's complement for
the signed types), exactly ``nbytes = element_size * shape[0]*shape[1]*shape[2]*shape[3]``
bytes. Empty arrays (a zero dim) have nbytes 0. The data of section i starts at
``offset_i``; padding bytes between regions are zero.

CRC-32 everywhere is the one of zlib's ``crc32()`` (IEEE 802.3 / Ethernet, catalogued as
CRC-32/ISO-HDLC, Amaranth ``lib.crc.catalog.CRC32_ISO_HDLC``): width 32, polynomial
0x04C11DB7 (reflected: 0xEDB88320), init 0xFFFFFFFF, reflected input and output, final XOR
0xFFFFFFFF; crc32("123456789") = 0xCBF43926.

Verification
============

A reader must reject the file (:class:`ImageError` here) unless all of these hold; together
they make every byte of the file covered by a CRC or by a must-be-zero rule, so that any
single changed byte is detected:

1. the file is at least 64 bytes and starts with the magic;
2. 1 <= version <= the reader's version (a newer one is reported as such);
3. 64 <= header_nbytes <= file length, and header_crc32 matches;
4. flags == 0 and reserved == 0;
5. file_nbytes equals the file's length (shorter: truncated; longer: trailing bytes);
6. meta lies inside the file, meta_crc32 matches, it is valid UTF-8 JSON, and an object;
7. the table lies inside the file, table_offset is a multiple of 64, table_crc32 matches;
8. per entry: the name is valid as above and unique; dtype code is 0..7; ndim <= 4; unused
   shape dims are 1; a bytes section has ndim 1; nbytes agrees with dtype and shape; the
   offset is a multiple of 64; offset + nbytes <= file_nbytes; reserved bytes are 0;
9. the header, meta, table and non-empty sections do not overlap one another;
10. every byte not inside one of them (the padding) is zero;
11. each section's crc32 matches its data.

:func:`read_header` does 1-9 (it reads the header, meta and table only); :func:`read_image`
does all of them.

Python API
==========

``write_image(path, meta, tensors)`` writes atomically (a temporary file in the same folder,
then ``os.replace``). ``tensors`` maps names to NumPy arrays of the seven integer dtypes (any
byte order, any memory layout; 0-d and empty arrays allowed) or to ``bytes``/``bytearray``/
``memoryview`` blobs (dtype code 7). Sections are written in the mapping's order.

``read_image(path) -> (meta, tensors)`` returns the meta dict and a dict in table order whose
values are **read-only** NumPy arrays with the exact little-endian dtype and shape that were
written (zero-copy views into one in-memory copy of the file), or ``bytes`` for blob sections.
JSON round-trips the meta (tuples come back as lists).

``read_header(path) -> dict`` is cheap; see its docstring for the keys.
"""

from __future__ import annotations

import json
import os
import secrets
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ALIGN",
    "DTYPE_CODES",
    "ENTRY_NBYTES",
    "HEADER_NBYTES",
    "MAGIC",
    "VERSION",
    "ImageError",
    "read_header",
    "read_image",
    "write_image",
]

MAGIC = b"MMFQ"
VERSION = 1
HEADER_NBYTES = 64
ENTRY_NBYTES = 96
ALIGN = 64
NAME_NBYTES = 48  # including at least one NUL: names are at most 47 bytes
MAX_NDIM = 4

_HEADER = struct.Struct("<4sHHIIQQQQIIII")
_ENTRY = struct.Struct("<48sQQ4IIBB10s")
assert _HEADER.size == HEADER_NBYTES and _ENTRY.size == ENTRY_NBYTES

BYTES_CODE = 7
#: dtype code -> name; the element types are the little-endian NumPy dtypes in ``_NP_DTYPES``.
DTYPE_CODES: dict[int, str] = {
    0: "uint8",
    1: "int8",
    2: "uint16",
    3: "int16",
    4: "uint32",
    5: "int32",
    6: "int64",
    BYTES_CODE: "bytes",
}
_NP_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<u1"),
    1: np.dtype("<i1"),
    2: np.dtype("<u2"),
    3: np.dtype("<i2"),
    4: np.dtype("<u4"),
    5: np.dtype("<i4"),
    6: np.dtype("<i8"),
    BYTES_CODE: np.dtype("<u1"),
}
_CODE_OF_KIND = {(dt.kind, dt.itemsize): code for code, dt in _NP_DTYPES.items() if code != 7}

Tensor = np.ndarray | bytes
PathLike = str | os.PathLike


class ImageError(Exception):
    """A file is not a valid ``.mmf`` image; the message names the file and the problem."""


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _crc(data) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


# --------------------------------------------------------------------------------- writing


def _check_name(name: Any) -> bytes:
    if not isinstance(name, str):
        raise TypeError(f"section name must be a str, got {type(name).__name__}: {name!r}")
    raw = name.encode("utf-8")
    if not raw or not all(0x21 <= b <= 0x7E for b in raw):
        raise ValueError(f"section name {name!r}: must be non-empty printable ASCII without spaces")
    if len(raw) > NAME_NBYTES - 1:
        raise ValueError(
            f"section name {name!r}: {len(raw)} bytes, at most {NAME_NBYTES - 1} allowed"
        )
    return raw


def _prepare(name: str, value: Any) -> tuple[int, tuple[int, ...], np.ndarray]:
    """(dtype code, shape, flat contiguous little-endian uint8 view of the data)."""
    if isinstance(value, bytes | bytearray | memoryview):
        data = np.frombuffer(memoryview(value).tobytes(), dtype=np.uint8)
        return BYTES_CODE, (data.size,), data
    if not isinstance(value, np.ndarray):
        raise TypeError(
            f"section {name!r}: expected a numpy array or bytes, got {type(value).__name__}"
        )
    dt = value.dtype
    if dt.kind in "fc":
        raise ValueError(
            f"section {name!r}: {dt} array not allowed: an image stores integers only "
            "(quantize first, or store the raw bytes as a bytes blob)"
        )
    code = _CODE_OF_KIND.get((dt.kind, dt.itemsize)) if dt.fields is None else None
    if code is None:
        allowed = ", ".join(v for k, v in DTYPE_CODES.items() if k != BYTES_CODE)
        raise ValueError(f"section {name!r}: dtype {dt} not supported (allowed: {allowed})")
    if value.ndim > MAX_NDIM:
        raise ValueError(f"section {name!r}: ndim {value.ndim} > {MAX_NDIM}")
    if any(d >= 1 << 32 for d in value.shape):
        raise ValueError(f"section {name!r}: dim of shape {value.shape} does not fit in u32")
    flat = np.ascontiguousarray(value, dtype=_NP_DTYPES[code]).reshape(-1)
    return code, tuple(int(d) for d in value.shape), flat.view(np.uint8)


def _encode_meta(meta: Any) -> bytes:
    if not isinstance(meta, Mapping):
        raise TypeError(f"meta must be a dict, got {type(meta).__name__}")
    try:
        text = json.dumps(
            dict(meta), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as e:
        raise ValueError(f"meta is not JSON-serializable: {e}") from e
    return text.encode("utf-8")


def write_image(path: PathLike, meta: dict, tensors: Mapping[str, Tensor]) -> None:
    """Write ``meta`` and ``tensors`` as an ``.mmf`` image at ``path``, atomically.

    Raises ``ValueError``/``TypeError`` (before touching the file system) for a bad name,
    duplicate, unsupported dtype (floats included), ndim > 4, or non-JSON meta.
    """
    path = Path(path)
    meta_bytes = _encode_meta(meta)
    plan: list[tuple[bytes, int, tuple[int, ...], np.ndarray]] = []
    seen: set[bytes] = set()
    for name, value in tensors.items():
        raw = _check_name(name)
        if raw in seen:
            raise ValueError(f"duplicate section name {name!r}")
        seen.add(raw)
        plan.append((raw, *_prepare(name, value)))

    meta_offset = HEADER_NBYTES
    table_offset = _align(meta_offset + len(meta_bytes))
    cursor = table_offset + ENTRY_NBYTES * len(plan)
    entries, placed = [], []
    for raw, code, shape, data in plan:
        offset = _align(cursor)
        cursor = offset + data.nbytes
        shape4 = shape + (1,) * (MAX_NDIM - len(shape))
        entries.append(
            _ENTRY.pack(raw, offset, data.nbytes, *shape4, _crc(data), code, len(shape), bytes(10))
        )
        placed.append((offset, data))
    table = b"".join(entries)
    file_nbytes = cursor
    head = _HEADER.pack(
        MAGIC, VERSION, HEADER_NBYTES, 0, len(plan), meta_offset, len(meta_bytes),
        table_offset, file_nbytes, _crc(meta_bytes), _crc(table), 0, 0,
    )  # fmt: skip
    head = head[:60] + struct.pack("<I", _crc(head[:60]))

    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(head)
            f.write(meta_bytes)
            f.write(bytes(table_offset - f.tell()))
            f.write(table)
            for offset, data in placed:
                f.write(bytes(offset - f.tell()))
                f.write(data)
            assert f.tell() == file_nbytes
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _Section:
    name: str
    code: int
    shape: tuple[int, ...]
    offset: int
    nbytes: int
    crc32: int


@dataclass(frozen=True)
class _Parsed:
    version: int
    header_nbytes: int
    flags: int
    file_nbytes: int
    meta_offset: int
    meta_nbytes: int
    meta_crc32: int
    table_offset: int
    table_crc32: int
    meta: dict
    sections: list[_Section]
    gaps: list[tuple[int, int]]  # padding regions [start, end), all must be zero


def _parse(where: str, size: int, read_at: Callable[[int, int], bytes]) -> _Parsed:
    """Checks 1-9 of the spec. ``read_at(offset, n)`` returns n bytes that exist in the file."""

    def fail(msg: str) -> ImageError:
        return ImageError(f"{where}: {msg}")

    # 1, 2: magic and version, before anything else can be trusted.
    start = read_at(0, min(size, HEADER_NBYTES))
    if size == 0:
        raise fail("empty file, not an .mmf image")
    if start[:4] != MAGIC[: len(start)]:
        raise fail(f"not an .mmf image (starts with {bytes(start[:4])!r}, expected {MAGIC!r})")
    if size >= 6:
        (version,) = struct.unpack_from("<H", start, 4)
        if version > VERSION:
            raise fail(
                f"written by a newer mmfree-fpga (version {version}); "
                f"this reader supports up to {VERSION}"
            )
        if version == 0:
            raise fail("bad format version 0 (corrupt file)")
    if size < HEADER_NBYTES:
        raise fail(f"truncated: {size} bytes, shorter than the {HEADER_NBYTES}-byte header")

    # 3, 4: header.
    (_, version, header_nbytes, flags, n_sections, meta_offset, meta_nbytes, table_offset,
     file_nbytes, meta_crc, table_crc, reserved, header_crc) = _HEADER.unpack(start)  # fmt: skip
    if not HEADER_NBYTES <= header_nbytes <= size:
        raise fail(f"bad header size {header_nbytes} (corrupt or truncated file)")
    ext = read_at(HEADER_NBYTES, header_nbytes - HEADER_NBYTES)
    if zlib.crc32(ext, _crc(start[:60])) & 0xFFFFFFFF != header_crc:
        raise fail("header CRC mismatch (corrupt file)")
    if flags:
        raise fail(f"unsupported header flags 0x{flags:08x}")
    if reserved:
        raise fail("reserved header field is not zero")

    # 5: length.
    if size < file_nbytes:
        raise fail(f"truncated: {size} bytes, the header says {file_nbytes}")
    if size > file_nbytes:
        raise fail(f"{size - file_nbytes} unexpected bytes after the end of the image")

    # 6: meta.
    if meta_offset + meta_nbytes > file_nbytes:
        raise fail(f"meta [{meta_offset}, +{meta_nbytes}) runs past the end of the file")
    meta_raw = read_at(meta_offset, meta_nbytes)
    if _crc(meta_raw) != meta_crc:
        raise fail("meta CRC mismatch (corrupt file)")
    try:
        meta = json.loads(bytes(meta_raw).decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as e:
        raise fail(f"meta is not valid UTF-8: {e}") from None
    except ValueError as e:
        raise fail(f"meta is not valid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise fail(f"meta is not a JSON object (got {type(meta).__name__})")

    # 7: table.
    table_nbytes = ENTRY_NBYTES * n_sections
    if table_offset + table_nbytes > file_nbytes:
        raise fail(f"section table [{table_offset}, +{table_nbytes}) runs past the end of the file")
    if table_offset % ALIGN:
        raise fail(f"section table offset {table_offset} is not a multiple of {ALIGN}")
    table = read_at(table_offset, table_nbytes)
    if _crc(table) != table_crc:
        raise fail("section table CRC mismatch (corrupt file)")

    # 8: entries.
    sections: list[_Section] = []
    names: set[str] = set()
    for i in range(n_sections):
        raw_name, offset, nbytes, *shape4, crc, code, ndim, res = _ENTRY.unpack_from(
            table, ENTRY_NBYTES * i
        )
        name = _decode_name(raw_name)
        if name is None:
            raise fail(f"section table entry {i}: bad name {bytes(raw_name)!r}")
        if name in names:
            raise fail(f"duplicate section name {name!r}")
        names.add(name)
        what = f"section {name}"
        if any(res):
            raise fail(f"{what}: reserved bytes are not zero")
        if code not in DTYPE_CODES:
            raise fail(f"{what}: unknown dtype code {code}")
        if ndim > MAX_NDIM:
            raise fail(f"{what}: ndim {ndim} > {MAX_NDIM}")
        if any(d != 1 for d in shape4[ndim:]):
            raise fail(f"{what}: unused shape dims must be 1, got {tuple(shape4)} (ndim {ndim})")
        if code == BYTES_CODE and ndim != 1:
            raise fail(f"{what}: a bytes section must have ndim 1, got {ndim}")
        shape = tuple(shape4[:ndim])
        expect = _NP_DTYPES[code].itemsize * int(np.prod(shape4, dtype=object))
        if nbytes != expect:
            raise fail(
                f"{what}: nbytes {nbytes} disagrees with {DTYPE_CODES[code]} shape {shape} "
                f"({expect} bytes)"
            )
        if offset % ALIGN:
            raise fail(f"{what}: offset {offset} is not a multiple of {ALIGN}")
        if offset + nbytes > file_nbytes:
            raise fail(
                f"{what}: data [{offset}, {offset + nbytes}) runs past the end of the file "
                f"({file_nbytes} bytes; truncated or corrupt)"
            )
        sections.append(_Section(name, code, shape, offset, nbytes, crc))

    # 9: no overlaps; what is left over is padding.
    regions = [(0, header_nbytes, "header"), (meta_offset, meta_nbytes, "meta")]
    regions.append((table_offset, table_nbytes, "section table"))
    regions += [(s.offset, s.nbytes, f"section {s.name}") for s in sections]
    regions = sorted((r for r in regions if r[1]), key=lambda r: r[0])
    gaps, end, prev = [], 0, ""
    for off, n, label in regions:
        if off < end:
            raise fail(f"{prev} and {label} overlap (corrupt file)")
        if off > end:
            gaps.append((end, off))
        end, prev = off + n, label
    if end < file_nbytes:
        gaps.append((end, file_nbytes))

    return _Parsed(
        version, header_nbytes, flags, file_nbytes, meta_offset, meta_nbytes, meta_crc,
        table_offset, table_crc, meta, sections, gaps,
    )  # fmt: skip


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _decode_name(raw: bytes) -> str | None:
    n = raw.find(b"\0")
    if n <= 0 or any(raw[n:]) or not all(0x21 <= b <= 0x7E for b in raw[:n]):
        return None
    return raw[:n].decode("ascii")


def _open(path: PathLike):
    try:
        return open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not an .mmf image") from None
    except OSError as e:
        raise ImageError(f"{path}: cannot open: {e.strerror or e}") from None


def read_header(path: PathLike) -> dict:
    """Read and check the header, meta and section table only (not the section data).

    Returns ``{"path", "version", "flags", "header_nbytes", "file_nbytes", "meta_offset",
    "meta_nbytes", "meta_crc32", "table_offset", "table_crc32", "n_sections", "meta",
    "sections"}`` where ``sections`` is a list, in table order, of ``{"name", "dtype"
    (a DTYPE_CODES name), "shape" (tuple), "offset", "nbytes", "crc32"}``. Raises ImageError.
    """
    with _open(path) as f:
        try:
            size = os.fstat(f.fileno()).st_size

            def read_at(offset: int, n: int) -> bytes:
                f.seek(offset)
                data = f.read(n)
                if len(data) != n:
                    raise ImageError(f"{path}: truncated while reading (file changed?)")
                return data

            p = _parse(str(path), size, read_at)
        except OSError as e:
            raise ImageError(f"{path}: cannot read: {e.strerror or e}") from None
    return {
        "path": str(path),
        "version": p.version,
        "flags": p.flags,
        "header_nbytes": p.header_nbytes,
        "file_nbytes": p.file_nbytes,
        "meta_offset": p.meta_offset,
        "meta_nbytes": p.meta_nbytes,
        "meta_crc32": p.meta_crc32,
        "table_offset": p.table_offset,
        "table_crc32": p.table_crc32,
        "n_sections": len(p.sections),
        "meta": p.meta,
        "sections": [
            {
                "name": s.name,
                "dtype": DTYPE_CODES[s.code],
                "shape": s.shape,
                "offset": s.offset,
                "nbytes": s.nbytes,
                "crc32": s.crc32,
            }
            for s in p.sections
        ],
    }


def read_image(path: PathLike) -> tuple[dict, dict[str, Tensor]]:
    """Read and fully check an image; return ``(meta, tensors)``.

    Arrays are read-only views into one in-memory copy of the file, with the exact
    little-endian dtype and shape written; blob (dtype code 7) sections come back as ``bytes``.
    Raises ImageError for any problem with the file.
    """
    with _open(path) as f:
        try:
            data = f.read()
        except OSError as e:
            raise ImageError(f"{path}: cannot read: {e.strerror or e}") from None
    view = memoryview(data)
    p = _parse(str(path), len(data), lambda offset, n: view[offset : offset + n])

    # 10: padding is zero. 11: section CRCs.
    for a, b in p.gaps:
        if view[a:b] != bytes(b - a):
            nz = a + next(i for i, c in enumerate(view[a:b]) if c)
            raise ImageError(f"{path}: nonzero byte in padding at offset {nz} (corrupt file)")
    tensors: dict[str, Tensor] = {}
    for s in p.sections:
        chunk = view[s.offset : s.offset + s.nbytes]
        if _crc(chunk) != s.crc32:
            raise ImageError(f"{path}: section {s.name}: CRC mismatch (corrupt file)")
        if s.code == BYTES_CODE:
            tensors[s.name] = bytes(chunk)
            continue
        dt = _NP_DTYPES[s.code]
        if s.nbytes:
            arr = np.frombuffer(data, dtype=dt, count=s.nbytes // dt.itemsize, offset=s.offset)
            arr = arr.reshape(s.shape)
        else:
            arr = np.zeros(s.shape, dtype=dt)
            arr.flags.writeable = False
        tensors[s.name] = arr
    return p.meta, tensors
