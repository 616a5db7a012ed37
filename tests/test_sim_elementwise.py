"""cocotb regression for the elementwise unit: 4 patterns x 2,500 transactions (10,000),
bit-exact against the golden model on the Verilog that Amaranth emits (``make sim``); its
latency and throughput at full rate; and the self-test of the bench's stream protocol
monitor."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sim"))

from runner import check  # noqa: E402

from mmfree_hw.elementwise import ElementwiseUnit  # noqa: E402

PATTERNS = ["full", "gaps", "backpressure", "both"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_elementwise(record_property, pattern):
    check(record_property, ElementwiseUnit(), "elementwise", "test_elementwise",
          {"pattern": pattern, "transactions": 2500, "seed": 1},
          only=["random_and_corners"])


def test_elementwise_timing_and_monitor(record_property):
    check(record_property, ElementwiseUnit(), "elementwise", "test_elementwise",
          {"suite": "timing"}, only=["timing", "protocol_monitor"])
