"""cocotb regression for the elementwise unit: 4 patterns x 2,500 transactions (10,000),
bit-exact against the golden model on the Verilog that Amaranth emits (``make sim``)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sim"))

from runner import run  # noqa: E402

from mmfree_hw.elementwise import ElementwiseUnit  # noqa: E402

PATTERNS = ["full", "gaps", "backpressure", "both"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_elementwise(pattern):
    tests, failed = run(ElementwiseUnit(), "elementwise", "test_elementwise",
                        {"pattern": pattern, "transactions": 2500, "seed": 1})
    assert tests == 1 and failed == 0
