"""How closely the integer pipeline (golden model) tracks the float model.

    make fidelity          # = mmfree-fpga fidelity --model <default> --text data/val.txt.gz

Both models score the same held-out positions: windows of ``seq_len`` tokens spread
evenly over the text, each from a zero recurrent state (the float model in one parallel
forward, the golden model token by token from the exported image). Reports both
perplexities and how often their greedy next tokens agree, ending with one line::

    fidelity: ppl_float=<x> ppl_int=<y> ppl_ratio=<y/x> top1=<agreement> positions=<n>
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np


class FidelityError(Exception):
    """Text too short to measure on."""


def _nll(logits: np.ndarray, target: int) -> float:
    z = logits - logits.max()
    return float(np.log(np.exp(z).sum()) - z[target])


def measure(model_dir: str | Path, text: str | Path, positions: int = 4096,
            seq_len: int = 256, progress=None) -> dict:
    import torch

    from .checkpoint import load_checkpoint
    from .evaluate import read_text
    from .export import export_model
    from .golden import GoldenModel
    from .numerics import X_FRAC
    from .tokenizer import encode_documents, load_tokenizer, paragraphs

    model_dir = Path(model_dir)
    fm = load_checkpoint(model_dir).freeze()
    tok = load_tokenizer(model_dir)
    golden = GoldenModel(export_model(fm, (model_dir / "tokenizer.json").read_bytes()))
    cfg = fm.config
    ids = encode_documents(tok, list(paragraphs(read_text(text))), cfg.bos_token_id,
                           cfg.eos_token_id)
    available = (len(ids) - 1) // seq_len
    windows = min(math.ceil(positions / seq_len), available)
    if windows == 0:
        raise FidelityError(f"{text}: fewer than {seq_len + 1} tokens")
    # spread over the whole text: the sources differ in difficulty and sit in blocks
    starts = np.linspace(0, available - 1, windows).round().astype(int) * seq_len
    nll_f = nll_i = 0.0
    agree = n = 0
    t0 = time.perf_counter()
    golden_s = 0.0
    for w, start in enumerate(starts):
        win = ids[start:start + seq_len + 1]
        with torch.no_grad():
            lf = fm(torch.tensor(win[:-1])[None])[0][0].double().numpy()
        golden.reset()
        for t in range(seq_len):
            g0 = time.perf_counter()
            li = golden.step(win[t]).astype(np.float64) / (1 << X_FRAC)
            golden_s += time.perf_counter() - g0
            target = win[t + 1]
            nll_f += _nll(lf[t], target)
            nll_i += _nll(li, target)
            agree += int(np.argmax(lf[t]) == np.argmax(li))
            n += 1
        if progress:
            progress(w + 1, windows)
    ppl_f, ppl_i = math.exp(nll_f / n), math.exp(nll_i / n)
    return {"ppl_float": ppl_f, "ppl_int": ppl_i, "ppl_ratio": ppl_i / ppl_f,
            "top1": agree / n, "positions": n, "seq_len": seq_len,
            "golden_tokens_per_s": n / golden_s, "wall_s": time.perf_counter() - t0}


def summary_line(r: dict) -> str:
    return (f"fidelity: ppl_float={r['ppl_float']:.4f} ppl_int={r['ppl_int']:.4f} "
            f"ppl_ratio={r['ppl_ratio']:.4f} top1={r['top1']:.4f} positions={r['positions']}")
