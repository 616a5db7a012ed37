"""cocotb regression for the result unit (hw/mmfree_hw/topk.py) on the Verilog Amaranth
emits, against ``golden.topk``: max_k = 64 under the 4 gap/back-pressure patterns, each
with corner vectors (ties, X_MIN / X_MAX, k > length, k > max_k, k = 0) and random vectors
of 1..300 logits, many from a small range (ties); and the docstring's cycle counts, up to a
vocabulary-sized vector."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sim"))

from runner import check  # noqa: E402

from mmfree_hw.topk import TopK  # noqa: E402

PATTERNS = ["full", "gaps", "backpressure", "both"]
MAX_K = 64


@pytest.mark.parametrize("pattern", PATTERNS)
def test_topk_random(record_property, pattern):
    check(record_property, TopK(MAX_K), "topk", "test_topk",
          {"suite": "random", "max_k": MAX_K, "pattern": pattern, "vectors": 30,
           "seed": 1 + PATTERNS.index(pattern)}, only=["topk"])


def test_topk_timing(record_property):
    check(record_property, TopK(MAX_K), "topk", "test_topk",
          {"suite": "timing", "max_k": MAX_K, "seed": 9}, only=["topk"])
