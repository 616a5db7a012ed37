"""cocotb regression for the on-chip weight store (hw/mmfree_hw/weights.py) on the Verilog
Amaranth emits: random runs under the 4 gap/back-pressure patterns (8 lanes, a depth that
is not a power of two), 128-lane words (256 bits) in block RAM, the sustained rate and
latency (N words in N + LATENCY cycles), and the refusal of out-of-range requests and
writes."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sim"))

from runner import check  # noqa: E402

from mmfree_hw.weights import WeightMemory  # noqa: E402

PATTERNS = ["full", "gaps", "backpressure", "both"]


def run(record_property, lanes, depth, name, **params):
    check(record_property, WeightMemory(lanes, depth), name, "test_weights",
          {"lanes": lanes, "depth": depth, **params}, only=["weights"])


@pytest.mark.parametrize("pattern", PATTERNS)
def test_weights_random(record_property, pattern):
    run(record_property, 8, 300, "weights8", suite="random", pattern=pattern, requests=60,
        seed=1 + PATTERNS.index(pattern))


def test_weights_128_lanes(record_property):
    run(record_property, 128, 512, "weights128", suite="random", pattern="both",
        requests=40, batches=2, seed=5)


def test_weights_timing(record_property):
    run(record_property, 8, 300, "weights8", suite="timing", seed=6)


def test_weights_refuse(record_property):
    run(record_property, 8, 300, "weights8", suite="refuse", seed=7)
