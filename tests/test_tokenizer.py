"""The byte-level BPE: special ids, round trips, and the shipped tokenizer."""

import pytest

from mmfree_fpga.cli import DEFAULT_MODEL
from mmfree_fpga.tokenizer import (
    TokenizerError,
    encode_documents,
    load_tokenizer,
    paragraphs,
    train_bpe,
)

TEXT = """It is a truth universally acknowledged, that a single man in possession
of a good fortune, must be in want of a wife.

In the beginning, God created the heavens and the earth.

A celebrity is a person who is known for his well-knownness.
"""
SAMPLES = ["Hello, world!", "  leading spaces and\ttabs\n\nnew lines",
           "café naïve — “quotes” 東京 🚀", "", "x" * 1000]


@pytest.fixture(scope="module")
def tok():
    return train_bpe(paragraphs(TEXT * 20), vocab_size=300)


def test_special_ids(tok):
    assert [tok.token_to_id(t) for t in ("<unk>", "<s>", "</s>")] == [0, 1, 2]
    assert tok.encode("a wife").ids[0] == 1            # <s> prepended, as Llama's
    assert tok.encode("a wife", add_special_tokens=False).ids[0] != 1


@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip(tok, text):
    ids = tok.encode(text).ids
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_save_load(tmp_path, tok):
    tok.save(str(tmp_path / "tokenizer.json"))
    again = load_tokenizer(tmp_path)          # a folder finds its tokenizer.json
    assert again.encode(TEXT).ids == tok.encode(TEXT).ids


def test_documents_are_framed(tok):
    ids = encode_documents(tok, ["a wife", "the earth"], bos_id=1, eos_id=2)
    assert ids[0] == 1 and ids[-1] == 2 and ids.count(1) == 2 and ids.count(2) == 2


def test_bad_tokenizer_files(tmp_path):
    with pytest.raises(TokenizerError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{broken")
    with pytest.raises(TokenizerError, match="not a readable"):
        load_tokenizer(tmp_path)


@pytest.mark.parametrize("text", SAMPLES + [TEXT])
def test_shipped_tokenizer_round_trip(text):
    tok = load_tokenizer(DEFAULT_MODEL)
    assert tok.get_vocab_size() == 4096
    assert tok.decode(tok.encode(text).ids, skip_special_tokens=True) == text
