"""The .mmf weight image container: round trips, and every corruption is caught."""

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mmfree_fpga import image
from mmfree_fpga.image import (
    ALIGN,
    ENTRY_NBYTES,
    HEADER_NBYTES,
    MAGIC,
    VERSION,
    ImageError,
    read_header,
    read_image,
    write_image,
)

INT_DTYPES = ["uint8", "int8", "uint16", "int16", "uint32", "int32", "int64"]
META = {"model": {"d": 32, "layers": [1, 2]}, "formats": {"codes": "2-bit"}, "name": "tïny"}


def small_tensors() -> dict:
    rng = np.random.default_rng(0)
    return {
        "layers.0.attn.i_proj.codes": rng.integers(-1, 2, size=(3, 5), dtype=np.int8),
        "scale": np.array(7, dtype=np.int32),  # 0-d
        "empty": np.zeros((0, 4), dtype=np.uint16),
        "blob": b"\x01\x02\x03hello",
        "big": np.arange(-3, 3, dtype=np.int64).reshape(2, 1, 3),
    }


def assert_same(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for k, w in want.items():
        g = got[k]
        if isinstance(w, bytes | bytearray):
            assert isinstance(g, bytes) and g == bytes(w)
        else:
            assert g.dtype == w.dtype.newbyteorder("<") and g.shape == w.shape, k
            np.testing.assert_array_equal(g, w)


def test_round_trip_all_dtypes_and_shapes(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    tensors: dict = {}
    shapes = [(), (0,), (1,), (7,), (2, 3), (3, 0, 2), (2, 3, 4), (1, 2, 3, 5)]
    for dt in INT_DTYPES:
        info = np.iinfo(dt)
        for shape in shapes:
            a = rng.integers(info.min, info.max, size=shape, dtype=dt, endpoint=True)
            tensors[f"t.{dt}.{len(shape)}.{'x'.join(map(str, shape))}"] = a
    tensors["blob"] = bytes(range(256)) * 3
    tensors["blob.empty"] = b""
    tensors["blob.ba"] = bytearray(b"xyz")
    tensors["noncontig"] = np.arange(24, dtype=np.int16).reshape(4, 6)[:, ::2].T
    tensors["bigendian"] = np.arange(5, dtype=">u4")
    path = tmp_path / "m.mmf"
    write_image(path, META, tensors)
    meta, got = read_image(path)
    assert meta == META
    assert_same(got, tensors)
    for a in got.values():
        if isinstance(a, np.ndarray):
            assert not a.flags.writeable
    # layout: sections 64-aligned, file ends at the last section's end
    hdr = read_header(path)
    assert all(s["offset"] % ALIGN == 0 for s in hdr["sections"])
    assert hdr["file_nbytes"] == path.stat().st_size


def test_no_sections_and_empty_meta(tmp_path: Path) -> None:
    path = tmp_path / "e.mmf"
    write_image(path, {}, {})
    assert read_image(path) == ({}, {})
    assert read_header(path)["n_sections"] == 0


def test_read_header_agrees_with_read_image(tmp_path: Path) -> None:
    path = tmp_path / "m.mmf"
    tensors = small_tensors()
    write_image(path, META, tensors)
    hdr = read_header(path)
    meta, got = read_image(path)
    assert hdr["meta"] == meta == META
    assert hdr["version"] == VERSION and hdr["header_nbytes"] == HEADER_NBYTES
    assert [s["name"] for s in hdr["sections"]] == list(got)
    for s in hdr["sections"]:
        a = got[s["name"]]
        if isinstance(a, bytes):
            assert s["dtype"] == "bytes" and s["shape"] == (len(a),)
            assert s["nbytes"] == len(a) and s["crc32"] == zlib.crc32(a)
        else:
            assert s["dtype"] == a.dtype.name and s["shape"] == a.shape
            assert s["nbytes"] == a.nbytes and s["crc32"] == zlib.crc32(a.tobytes())


def test_header_layout_is_as_documented(tmp_path: Path) -> None:
    """Parse the header and table by hand, the way a C reader would."""
    path = tmp_path / "m.mmf"
    write_image(path, META, small_tensors())
    b = path.read_bytes()
    assert b[:4] == MAGIC
    version, hsize, flags, n = struct.unpack_from("<HHII", b, 4)
    meta_off, meta_n, table_off, file_n = struct.unpack_from("<4Q", b, 16)
    meta_crc, table_crc, reserved, head_crc = struct.unpack_from("<4I", b, 48)
    assert (version, hsize, flags, n, reserved) == (1, 64, 0, 5, 0)
    assert head_crc == zlib.crc32(b[:60]) and file_n == len(b)
    meta = b[meta_off : meta_off + meta_n]
    assert zlib.crc32(meta) == meta_crc
    assert (
        meta == json.dumps(META, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )
    table = b[table_off : table_off + n * ENTRY_NBYTES]
    assert zlib.crc32(table) == table_crc and table_off % 64 == 0
    e = table[ENTRY_NBYTES : 2 * ENTRY_NBYTES]  # "scale", 0-d int32
    assert e[:48].rstrip(b"\0") == b"scale"
    off, nbytes = struct.unpack_from("<QQ", e, 48)
    assert struct.unpack_from("<4I", e, 64) == (1, 1, 1, 1)
    assert struct.unpack_from("<IBB", e, 80) == (zlib.crc32(b[off : off + 4]), 5, 0)
    assert nbytes == 4 and struct.unpack_from("<i", b, off) == (7,)
    assert zlib.crc32(b"123456789") == 0xCBF43926  # the check value the docstring quotes


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    arrays=st.lists(
        hnp.arrays(
            dtype=st.sampled_from(INT_DTYPES),
            shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=3),
        ),
        max_size=4,
    ),
    blob=st.binary(max_size=70),
)
def test_round_trip_random(tmp_path: Path, arrays: list, blob: bytes) -> None:
    tensors = {f"a{i}": a for i, a in enumerate(arrays)} | {"blob": blob}
    path = tmp_path / "r.mmf"
    write_image(path, {"n": len(arrays)}, tensors)
    meta, got = read_image(path)
    assert meta == {"n": len(arrays)}
    assert_same(got, tensors)


# ---------------------------------------------------------------------------- corruption


def _tiny_image(tmp_path: Path) -> bytes:
    """Small image with meta, table, padding gaps, a 0-d, an empty and a blob section."""
    path = tmp_path / "tiny.mmf"
    write_image(
        path,
        {"k": 12345},
        {
            "w": np.array([[1, -1, 0]], dtype=np.int8),
            "s": np.array(3, dtype=np.uint16),
            "e": np.zeros(0, dtype=np.int32),
            "b": b"ab",
        },
    )
    return path.read_bytes()


def test_every_single_byte_flip_is_caught(tmp_path: Path) -> None:
    good = _tiny_image(tmp_path)
    path = tmp_path / "bad.mmf"
    assert len(good) < 1024  # keep the exhaustive loop fast
    buf = bytearray(good)
    checked = 0
    with path.open("w+b") as f:
        for i in range(len(good)):
            for x in (0x01, 0xFF):
                buf[i] = good[i] ^ x
                f.seek(0)
                f.write(buf)
                f.truncate()
                f.flush()
                with pytest.raises(ImageError):
                    read_image(path)
                buf[i] = good[i]
                checked += 1
    assert checked == 2 * len(good)


def test_header_only_flips_caught_by_read_header(tmp_path: Path) -> None:
    good = _tiny_image(tmp_path)
    hdr = read_header(tmp_path / "tiny.mmf")
    end = hdr["table_offset"] + ENTRY_NBYTES * hdr["n_sections"]
    path = tmp_path / "bad.mmf"
    for i in range(0, end):
        if hdr["meta_offset"] + hdr["meta_nbytes"] <= i < hdr["table_offset"]:
            continue  # padding: only read_image looks at it
        buf = bytearray(good)
        buf[i] ^= 0x80
        path.write_bytes(buf)
        with pytest.raises(ImageError):
            read_header(path)


def test_truncation(tmp_path: Path) -> None:
    good = _tiny_image(tmp_path)
    path = tmp_path / "t.mmf"
    for n in [0, 1, 3, 4, 5, 6, 30, 63, 64, 65, 100, len(good) // 2, len(good) - 1]:
        path.write_bytes(good[:n])
        with pytest.raises(ImageError) as ei:
            read_image(path)
        assert str(path) in str(ei.value)
        assert "truncated" in str(ei.value) or "empty" in str(ei.value), (n, ei.value)
    path.write_bytes(good + b"\0")
    with pytest.raises(ImageError, match="unexpected bytes after the end"):
        read_image(path)


def test_wrong_magic(tmp_path: Path) -> None:
    path = tmp_path / "x.mmf"
    path.write_bytes(b"GGUF" + _tiny_image(tmp_path)[4:])
    with pytest.raises(ImageError, match=r"not an \.mmf image"):
        read_image(path)
    path.write_text("hello, this is a text file\n" * 10)
    with pytest.raises(ImageError, match=r"not an \.mmf image"):
        read_header(path)
    path.write_bytes(b"MZ")
    with pytest.raises(ImageError, match=r"not an \.mmf image"):
        read_image(path)


def _patch_header(good: bytes, offset: int, fmt: str, value: int) -> bytes:
    b = bytearray(good)
    struct.pack_into(fmt, b, offset, value)
    struct.pack_into("<I", b, 60, zlib.crc32(bytes(b[:60])))
    return bytes(b)


def test_newer_version(tmp_path: Path) -> None:
    path = tmp_path / "v.mmf"
    path.write_bytes(_patch_header(_tiny_image(tmp_path), 4, "<H", VERSION + 1))
    msg = (
        f"written by a newer mmfree-fpga \\(version {VERSION + 1}\\); this reader supports up to 1"
    )
    with pytest.raises(ImageError, match=msg):
        read_image(path)
    with pytest.raises(ImageError, match=msg):
        read_header(path)
    # also when the rest of the (future) header is laid out differently: no CRC message
    b = bytearray(path.read_bytes())
    b[8:64] = b"\xaa" * 56
    path.write_bytes(b)
    with pytest.raises(ImageError, match="newer mmfree-fpga"):
        read_image(path)


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "message"),
    [
        (4, "<H", 0, "bad format version 0"),
        (8, "<I", 1, "unsupported header flags"),
        (56, "<I", 5, "reserved header field"),
        (6, "<H", 32, "bad header size"),
        (40, "<Q", 10**6, "truncated"),
    ],
)
def test_header_field_checks(tmp_path: Path, offset, fmt, value, message) -> None:
    path = tmp_path / "h.mmf"
    path.write_bytes(_patch_header(_tiny_image(tmp_path), offset, fmt, value))
    with pytest.raises(ImageError, match=message):
        read_image(path)


def test_crc_messages(tmp_path: Path) -> None:
    good = _tiny_image(tmp_path)
    hdr = read_header(tmp_path / "tiny.mmf")
    path = tmp_path / "c.mmf"

    def flip(i: int) -> str:
        b = bytearray(good)
        b[i] ^= 0x10
        path.write_bytes(b)
        with pytest.raises(ImageError) as ei:
            read_image(path)
        return str(ei.value)

    assert "header CRC mismatch" in flip(20)
    assert "meta CRC mismatch" in flip(hdr["meta_offset"] + 1)
    assert "section table CRC mismatch" in flip(hdr["table_offset"] + 3)
    w = hdr["sections"][0]
    assert f"section {w['name']}: CRC mismatch (corrupt file)" in flip(w["offset"])
    assert "nonzero byte in padding" in flip(w["offset"] + w["nbytes"])


def _rewrite_table(good: bytes, edit) -> bytes:
    """Apply edit(table: bytearray) and fix up the table and header CRCs."""
    b = bytearray(good)
    (n,) = struct.unpack_from("<I", b, 12)
    (table_off,) = struct.unpack_from("<Q", b, 32)
    table = bytearray(b[table_off : table_off + n * ENTRY_NBYTES])
    edit(table)
    b[table_off : table_off + len(table)] = table
    struct.pack_into("<I", b, 52, zlib.crc32(bytes(table)))
    struct.pack_into("<I", b, 60, zlib.crc32(bytes(b[:60])))
    return bytes(b)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: struct.pack_into("<B", t, 84, 9), "unknown dtype code 9"),
        (lambda t: struct.pack_into("<B", t, 85, 5), "ndim 5 > 4"),
        (lambda t: struct.pack_into("<I", t, 64, 4), "nbytes 3 disagrees"),
        (lambda t: struct.pack_into("<I", t, 76, 0), "unused shape dims must be 1"),
        (lambda t: struct.pack_into("<B", t, 90, 1), "reserved bytes"),
        (lambda t: t.__setitem__(slice(96, 144), t[0:48]), "duplicate section name 'w'"),
        (lambda t: t.__setitem__(slice(0, 48), b"a b" + bytes(45)), "bad name"),
        (lambda t: t.__setitem__(slice(0, 48), b"x" * 48), "bad name"),
        (lambda t: struct.pack_into("<Q", t, 48, 10**6), "runs past the end"),
        (lambda t: struct.pack_into("<Q", t, 48, 65), "not a multiple of 64"),
        (
            lambda t: struct.pack_into("<Q", t, 48 + 96, struct.unpack_from("<Q", t, 48)[0]),
            "overlap",
        ),
        (lambda t: struct.pack_into("<Q", t, 48, 0), "overlap"),
    ],
)
def test_table_checks(tmp_path: Path, edit, message) -> None:
    path = tmp_path / "t.mmf"
    path.write_bytes(_rewrite_table(_tiny_image(tmp_path), edit))
    with pytest.raises(ImageError, match=message):
        read_image(path)
    with pytest.raises(ImageError, match=message):
        read_header(path)


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        (b'{"a":', "not valid JSON"),
        (b"[1,2]", "not a JSON object"),
        (b'{"a":NaN}', "not valid JSON"),
        (b'{"\xff":1}', "not valid UTF-8"),
    ],
)
def test_bad_meta(tmp_path: Path, meta: bytes, message: str) -> None:
    b = bytearray(_tiny_image(tmp_path))
    meta_off, meta_n = struct.unpack_from("<QQ", b, 16)
    assert meta_n >= len(meta)
    b[meta_off : meta_off + meta_n] = meta.ljust(meta_n)  # spaces keep the layout
    struct.pack_into("<I", b, 48, zlib.crc32(meta.ljust(meta_n)))
    struct.pack_into("<I", b, 60, zlib.crc32(bytes(b[:60])))
    path = tmp_path / "m.mmf"
    path.write_bytes(b)
    with pytest.raises(ImageError, match=message):
        read_image(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "nope.mmf")
    with pytest.raises(ImageError, match="no such file"):
        read_header(tmp_path / "nope.mmf")
    with pytest.raises(ImageError, match="is a directory"):
        read_image(tmp_path)
    with pytest.raises(ImageError, match="is a directory"):
        read_header(tmp_path)


# ---------------------------------------------------------------------------- writing


@pytest.mark.parametrize(
    ("tensors", "error", "message"),
    [
        ({"x" * 48: np.zeros(1, np.uint8)}, ValueError, "48 bytes, at most 47"),
        ({"": np.zeros(1, np.uint8)}, ValueError, "non-empty printable ASCII"),
        ({"a b": np.zeros(1, np.uint8)}, ValueError, "non-empty printable ASCII"),
        ({"é": np.zeros(1, np.uint8)}, ValueError, "non-empty printable ASCII"),
        ({3: np.zeros(1, np.uint8)}, TypeError, "must be a str"),
        ({"f": np.zeros(2, np.float32)}, ValueError, "float32 array not allowed"),
        ({"f": np.zeros(2, np.float16)}, ValueError, "float16 array not allowed"),
        ({"f": np.zeros(2, np.uint64)}, ValueError, "dtype uint64 not supported"),
        ({"f": np.zeros(2, bool)}, ValueError, "dtype bool not supported"),
        ({"f": np.zeros((1,) * 5, np.int8)}, ValueError, "ndim 5 > 4"),
        ({"f": [1, 2]}, TypeError, "expected a numpy array or bytes"),
    ],
)
def test_write_rejects(tmp_path: Path, tensors, error, message) -> None:
    path = tmp_path / "w.mmf"
    with pytest.raises(error, match=message):
        write_image(path, {}, tensors)
    assert list(tmp_path.iterdir()) == []  # nothing written, no temp file left


def test_write_rejects_duplicates_and_bad_meta(tmp_path: Path) -> None:
    class Name(str):  # two keys that compare different but encode the same
        def __hash__(self) -> int:
            return 1

        def __eq__(self, other) -> bool:
            return self is other

    dup = {Name("a"): np.zeros(1, np.uint8), Name("a"): np.zeros(1, np.uint8)}
    assert len(dup) == 2
    with pytest.raises(ValueError, match="duplicate section name 'a'"):
        write_image(tmp_path / "d.mmf", {}, dup)
    with pytest.raises(ValueError, match="not JSON-serializable"):
        write_image(tmp_path / "d.mmf", {"x": float("nan")}, {})
    with pytest.raises(ValueError, match="not JSON-serializable"):
        write_image(tmp_path / "d.mmf", {"x": object()}, {})
    with pytest.raises(TypeError, match="meta must be a dict"):
        write_image(tmp_path / "d.mmf", [1], {})
    assert list(tmp_path.iterdir()) == []


def test_write_is_atomic_replace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.mmf"
    write_image(path, {"v": 1}, {"x": np.ones(3, np.uint8)})
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk on fire")

    monkeypatch.setattr(image.os, "replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        write_image(path, {"v": 2}, {"x": np.zeros(3, np.uint8)})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.mmf"]  # temp file cleaned up
