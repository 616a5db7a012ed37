"""Throughput of the software backends on one CPU core (``make bench``).

Pins BLAS and PyTorch to one thread, steps each backend through the same tokens, and
prints a table. Timings are measured here, never asserted in tests.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "sw" / "mmfree_fpga" / "models"


def bench(backend, tokens: list[int], repeat: int) -> float:
    best = 0.0
    for _ in range(repeat):
        backend.reset()
        t0 = time.perf_counter()
        for t in tokens:
            backend.step(t)
        best = max(best, len(tokens) / (time.perf_counter() - t0))
    return best


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--image", default=str(DEFAULT / "default.mmf"))
    p.add_argument("--checkpoint", default=str(DEFAULT / "default"))
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()

    from mmfree_fpga.golden import GoldenBackend

    rng = np.random.default_rng(0)
    golden = GoldenBackend(args.image)
    tokens = rng.integers(0, golden.config.vocab_size, args.tokens).tolist()
    rows = [("golden (fast path: float32 BLAS, exact)", bench(golden, tokens, args.repeat))]
    ref = GoldenBackend(args.image, fast=False)
    rows.append(("golden (reference path: int64 matvec)",
                 bench(ref, tokens[:64], 1)))
    try:
        import torch

        torch.set_num_threads(1)
        from mmfree_fpga.generate import FloatBackend

        rows.append(("float (PyTorch, fp32)", bench(FloatBackend(args.checkpoint), tokens,
                                                    args.repeat)))
    except ImportError:
        rows.append(("float (PyTorch not installed)", float("nan")))
    c = golden.config
    print(f"model: d={c.hidden_size} layers={c.num_hidden_layers} vocab={c.vocab_size}, "
          f"{golden.model.layout.ternary_weights:,} ternary weights; one CPU core")
    print(f"{'backend':<44} {'tokens/s':>9}")
    for name, tps in rows:
        print(f"{name:<44} {tps:9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
