"""Validation loss and perplexity of a checkpoint on a text file, as training measures it.

    mmfree-fpga eval --text data/val.txt.gz       # the shipped model on its held-out text

The text is framed exactly as for training (``<s> paragraph </s>``) and scored in
consecutive windows of ``seq_len`` tokens, each starting from a zero recurrent state.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_checkpoint
from .tokenizer import encode_documents, load_tokenizer, paragraphs
from .train import TrainError, evaluate


def read_text(path: str | Path) -> str:
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8") as f:
                return f.read()
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise TrainError(f"{path}: cannot read as UTF-8 text ({e})") from None


def evaluate_text(model_dir: str | Path, text_path: str | Path, seq_len: int = 256,
                  max_tokens: int | None = None) -> dict:
    model = load_checkpoint(model_dir).freeze()
    tok = load_tokenizer(model_dir)
    cfg = model.config
    ids = encode_documents(tok, list(paragraphs(read_text(text_path))),
                           cfg.bos_token_id, cfg.eos_token_id)
    tokens = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    loss, count = evaluate(model, tokens, seq_len, max_tokens)
    return {"val_loss": loss, "val_ppl": math.exp(loss), "tokens": count,
            "seq_len": seq_len, "model": str(model_dir), "text": str(text_path)}
