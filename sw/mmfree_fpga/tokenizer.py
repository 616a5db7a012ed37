"""Tokenizers: train a small byte-level BPE, or load a checkpoint's own ``tokenizer.json``.

Our BPE reserves ids 0, 1, 2 for ``<unk>``, ``<s>`` and ``</s>`` so that the hgrn_bit
config defaults (``bos_token_id=1``, ``eos_token_id=2``) hold, as for the Llama tokenizer
of the released MMfreeLM models. Encoding with special tokens prepends ``<s>``, again as
the Llama tokenizer's post-processor does, so prompts look the same to both.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]
BOS, EOS = "<s>", "</s>"


class TokenizerError(Exception):
    """A tokenizer file that is missing or unreadable."""


def train_bpe(texts: Iterable[str], vocab_size: int = 4096) -> Tokenizer:
    """Train a byte-level BPE on an iterator of texts (e.g. paragraphs)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos)])
    return tok


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load ``tokenizer.json`` from a file or a checkpoint folder."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.exists():
        raise TokenizerError(
            f"{path}: no tokenizer.json (a checkpoint folder needs one; give --tokenizer FILE)")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception for a bad file
        raise TokenizerError(f"{path}: not a readable tokenizer.json ({e})") from None


def paragraphs(text: str) -> Iterator[str]:
    """Split a corpus file into its paragraphs (blocks separated by blank lines)."""
    for block in text.split("\n\n"):
        block = block.strip("\n")
        if block.strip():
            yield block


def encode_documents(tok: Tokenizer, docs: list[str], bos_id: int, eos_id: int) -> list[int]:
    """One token stream: ``<s> doc </s>`` for each document, in order.

    The model sees ``<s>`` before every paragraph, as it sees it before every prompt, and
    learns to end a paragraph with ``</s>``.
    """
    out: list[int] = []
    for enc in tok.encode_batch(docs, add_special_tokens=False):
        out.append(bos_id)
        out.extend(enc.ids)
        out.append(eos_id)
    return out
