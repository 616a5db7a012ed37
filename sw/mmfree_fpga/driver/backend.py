"""The accelerator behind the generation loop (``generate.py``): any ``CoreDriver`` — the
simulated accelerator today, a board once a transport reaches one — with a compiled model
loaded into it.

The core returns the top-k candidates of the last token of each run, not every logit:
``step`` gives a vector that holds the candidates' logits (real units) and ``-inf``
elsewhere, so greedy decoding picks exactly the golden model's token and sampling draws
among at most ``topk`` candidates (64 by default, the core's ``max_topk``). A prompt is one
RUN (``prefill``): its tokens skip the lm_head on the device.
"""

from __future__ import annotations

import numpy as np

from .. import numerics as N
from ..compiler import Compiled
from ..generate import BackendError
from ..isa import Space
from .core import CoreDriver


class AcceleratorBackend:
    """Loads ``compiled`` into the core behind ``driver`` and runs tokens on it."""

    def __init__(self, driver: CoreDriver, compiled: Compiled, name: str = "sim",
                 topk: int | None = None):
        self.driver, self.compiled, self.name = driver, compiled, name
        self.config = compiled.config
        ident = driver.identify()
        core = compiled.core
        want = {s: core.size(s) for s in Space}
        if ident.lanes != core.lanes or ident.words != want:
            raise BackendError(
                f"the device is not the core the model was compiled for: it has {ident.lanes} "
                f"lanes and spaces {_sizes(ident.words)}, the compiler's core "
                f"{core.lanes} lanes and {_sizes(want)}")
        self.topk = min(ident.max_topk, self.config.vocab_size) if topk is None else topk
        for space, words in compiled.images().items():
            driver.write(space, 0, words)
        self.counters: dict = {}
        self.cycles = 0
        self.tokens = 0
        self.driver.reset_counters()

    def reset(self) -> None:
        self.driver.reset_state()

    def prefill(self, tokens) -> np.ndarray:
        """Run a prompt (one RUN); the logits (candidates) after its last token."""
        r = self.driver.run(list(tokens), self.topk)
        self.counters = r.counters
        out = np.full(self.config.vocab_size, -np.inf)
        out[r.ids] = r.logits.astype(np.float64) / (1 << N.X_FRAC)
        return out

    def step(self, token: int) -> np.ndarray:
        return self.prefill([token])

    def close(self) -> None:
        self.driver.close()


def _sizes(words: dict) -> str:
    return ", ".join(f"{Space(s).name} {n:,}" for s, n in words.items())
