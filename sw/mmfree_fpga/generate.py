"""Text generation over any backend that steps one token at a time.

A backend is anything with ``reset()`` (forget the recurrent state) and ``step(token) ->
logits`` (a NumPy float vector over the vocabulary), and optionally ``prefill(tokens) ->
logits`` (a whole prompt at once, as a device's run command takes it). The float model is
one; the golden model, the simulated accelerator and a board are others, and they all share
this loop, the sampler and the tokenizer handling, so their outputs can be compared token
for token.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np


class BackendError(Exception):
    """A backend that cannot run here (missing dependency, device, or model it cannot hold)."""


class Backend(Protocol):
    name: str

    def reset(self) -> None: ...

    def step(self, token: int) -> np.ndarray: ...


class FloatBackend:
    """The PyTorch float model (``model.py``) on the CPU."""

    name = "float"

    def __init__(self, checkpoint: str | Path):
        try:
            import torch  # noqa: F401
        except ImportError:
            raise BackendError("the float backend needs PyTorch: "
                               "pip install 'mmfree-fpga[torch]'") from None
        from .checkpoint import load_checkpoint

        self.model = load_checkpoint(checkpoint).freeze()
        self.config = self.model.config
        self.state = None

    def reset(self) -> None:
        self.state = None

    def step(self, token: int) -> np.ndarray:
        logits, self.state = self.model.step(token, self.state)
        return logits.numpy()


@dataclass
class Sampler:
    """Greedy when ``temperature == 0``; else softmax(logits / T) within top-k and top-p."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self):
        self.rng = np.random.default_rng(self.seed)

    def __call__(self, logits: np.ndarray) -> int:
        logits = np.asarray(logits, dtype=np.float64)
        if self.temperature <= 0:
            return int(np.argmax(logits))
        z = logits / self.temperature
        if 0 < self.top_k < len(z):
            kth = np.partition(z, -self.top_k)[-self.top_k]
            z = np.where(z < kth, -np.inf, z)
        p = np.exp(z - z.max())
        p /= p.sum()
        if self.top_p < 1.0:
            order = np.argsort(-p)
            keep = np.cumsum(p[order]) - p[order] < self.top_p  # always keeps the top token
            mask = np.zeros_like(p, dtype=bool)
            mask[order[keep]] = True
            p = np.where(mask, p, 0.0)
            p /= p.sum()
        return int(self.rng.choice(len(p), p=p))


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    new_tokens: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    stopped_at_eos: bool = False

    @property
    def tokens_per_s(self) -> float:
        steps = self.prompt_tokens + self.new_tokens
        total = self.prefill_s + self.decode_s
        return steps / total if total > 0 else float("nan")


def generate(backend: Backend, prompt_ids: list[int], max_new_tokens: int,
             sample: Callable[[np.ndarray], int], eos_id: int | None = None,
             stats: GenerationStats | None = None) -> Iterator[int]:
    """Feed the prompt, then yield up to ``max_new_tokens`` new tokens (stops after EOS)."""
    if not prompt_ids:
        raise ValueError("empty prompt")
    stats = stats if stats is not None else GenerationStats()
    backend.reset()
    t0 = time.perf_counter()
    if hasattr(backend, "prefill"):      # a device runs a whole prompt in one command
        logits = backend.prefill(prompt_ids)
    else:
        for tok in prompt_ids:
            logits = backend.step(tok)
    stats.prompt_tokens = len(prompt_ids)
    stats.prefill_s = time.perf_counter() - t0
    for i in range(max_new_tokens):
        t0 = time.perf_counter()
        tok = sample(logits)
        stats.decode_s += time.perf_counter() - t0
        stats.new_tokens += 1
        yield tok
        if tok == eos_id:
            stats.stopped_at_eos = True
            break
        if i + 1 < max_new_tokens:
            t0 = time.perf_counter()
            logits = backend.step(tok)
            stats.decode_s += time.perf_counter() - t0


class TextStream:
    """Turns a growing list of token ids into new text as it becomes printable.

    Byte-level BPE tokens can end inside a UTF-8 character, so decode the whole tail each
    time and emit only what is complete (no U+FFFD at the end).
    """

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.ids: list[int] = []
        self.emitted = ""

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self.tok.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        new = text[len(self.emitted):] if text.startswith(self.emitted) else text
        self.emitted = text
        return new
