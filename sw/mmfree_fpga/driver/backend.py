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

import sys
import time

import numpy as np

from .. import commands as C
from .. import numerics as N
from ..compiler import Compiled
from ..generate import BackendError
from ..isa import Space
from .core import CoreDriver


class AcceleratorBackend:
    """Loads ``compiled`` into the core behind ``driver`` (:func:`upload`; ``progress`` and
    ``fresh`` as there) and runs tokens on it."""

    def __init__(self, driver: CoreDriver, compiled: Compiled, name: str = "sim",
                 topk: int | None = None, progress=None, fresh: bool = False):
        self.driver, self.compiled, self.name = driver, compiled, name
        self.config = compiled.config
        ident = driver.wait_memory()
        core = compiled.core
        want = {s: core.size(s) for s in Space}
        if ident.lanes != core.lanes or ident.words != want:
            raise BackendError(
                f"the device is not the core the model was compiled for: it has {ident.lanes} "
                f"lanes and spaces {_sizes(ident.words)}, the compiler's core "
                f"{core.lanes} lanes and {_sizes(want)}")
        self.topk = min(ident.max_topk, self.config.vocab_size) if topk is None else topk
        self.upload = upload(driver, compiled.images(), progress, fresh=fresh)
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


#: Words per WRITE call of an upload: progress is reported between them.
UPLOAD_SLICE_BYTES = 1 << 16


def upload(driver: CoreDriver, images: dict, progress=None, fresh: bool = False) -> dict:
    """Put every memory image (``{space: words}``, each from address 0) on the device and
    verify it with the core's CRC before the first token.

    A space that already holds its image (its CRC is the host's: the same model loaded
    earlier, e.g. on a board between two runs, or an upload that a link error broke off
    after that space) is not written again; ``fresh=True`` (a device just started, like a
    new simulator) skips that check. Every space written is then checked with one CRC
    (``VerifyError`` if it does not hold what was sent). ``progress(done_bytes,
    total_bytes, elapsed_s)`` is called after every slice; None draws a bar on stderr when
    it is a terminal. Returns ``{"bytes", "seconds", "bytes_per_s", "skipped"}`` (skipped:
    the spaces already there); a line on stderr says it.
    """
    lanes = driver.identity.lanes
    want = {s: (len(w), C.words_crc(s, w, lanes)) for s, w in images.items()}
    t0 = time.perf_counter()
    there = [] if fresh else [s for s, (n, crc) in want.items() if driver.crc(s, 0, n) == crc]
    todo = {s: w for s, w in images.items() if s not in there}
    if not todo:
        dt = time.perf_counter() - t0
        print(f"the model is already on the device (every memory's CRC matches; checked "
              f"in {dt:.1f} s): not uploaded again", file=sys.stderr)
        return {"bytes": 0, "seconds": dt, "bytes_per_s": 0.0, "skipped": there}
    total = sum(len(w) * driver.word_bytes(s) for s, w in todo.items())
    if progress is None and sys.stderr.isatty():
        progress = _bar
    done = 0
    for space, words in todo.items():
        per_word = driver.word_bytes(space)
        step = max(1, UPLOAD_SLICE_BYTES // per_word)
        for a in range(0, len(words), step):
            chunk = words[a:a + step]
            driver.write(space, a, chunk)
            done += len(chunk) * per_word
            if progress:
                progress(done, total, time.perf_counter() - t0)
        n, crc = want[space]
        driver.check_crc(space, 0, n, crc)
    dt = time.perf_counter() - t0
    if progress is _bar:
        print(file=sys.stderr)
    rate = total / dt if dt > 0 else float("inf")
    kept = f"; {', '.join(Space(s).name for s in there)} already there" if there else ""
    print(f"loaded the model: {total:,} bytes in {dt:.1f} s ({rate / 1e6:.2f} MB/s), "
          f"verified by CRC{kept}", file=sys.stderr)
    return {"bytes": total, "seconds": dt, "bytes_per_s": rate, "skipped": there}


def _bar(done: int, total: int, elapsed: float) -> None:
    frac = done / total if total else 1.0
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (total - done) / rate if rate > 0 else 0.0
    bar = "#" * int(30 * frac)
    print(f"\rloading [{bar:<30}] {done / 1e6:6.2f}/{total / 1e6:.2f} MB "
          f"{rate / 1e6:5.2f} MB/s ETA {eta:4.0f} s", end="", file=sys.stderr, flush=True)
