"""cocotb regression for the RMSNorm / quantize datapath (hw/mmfree_hw/norm.py), bit-exact
against the golden model on the Verilog that Amaranth emits: each unit under the 4
gap/back-pressure patterns, different random data under each, with short vectors
(4 x 3,000 elements per unit; max_k = 64, or 8-bit counts), then a second size
(max_k = 1024, or 16-bit counts) with the default model's full-size vectors."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sim"))

from runner import run  # noqa: E402

from mmfree_hw.norm import AbsmaxQuantize, Dequantize, RmsRsqrt  # noqa: E402

PATTERNS = ["full", "gaps", "backpressure", "both"]
UNITS = {"rms": RmsRsqrt, "quant": AbsmaxQuantize}


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("unit", ["rms", "quant"])
def test_norm_short_vectors(unit, pattern):
    tests, failed = run(UNITS[unit](max_k=64), f"norm_{unit}", "test_norm",
                        {"unit": unit, "pattern": pattern, "transactions": 3000,
                         "lengths": [16, 64], "max_k": 64,
                         "seed": 1 + PATTERNS.index(pattern)})
    assert tests == 1 and failed == 0


@pytest.mark.parametrize("unit", ["rms", "quant"])
def test_norm_full_size(unit):
    tests, failed = run(UNITS[unit](max_k=1024), f"norm_{unit}", "test_norm",
                        {"unit": unit, "pattern": "both", "transactions": 4000, "full": True,
                         "lengths": [1, 1024], "max_k": 1024, "seed": 2})
    assert tests == 1 and failed == 0


@pytest.mark.parametrize("pattern", PATTERNS)
def test_dequantize(pattern):
    tests, failed = run(Dequantize(count_bits=8), "norm_dequant", "test_norm",
                        {"unit": "dequant", "pattern": pattern, "transactions": 3000,
                         "count_bits": 8, "count_max": 64,
                         "seed": 1 + PATTERNS.index(pattern)})
    assert tests == 1 and failed == 0


def test_dequantize_full_size():
    tests, failed = run(Dequantize(count_bits=16), "norm_dequant", "test_norm",
                        {"unit": "dequant", "pattern": "both", "transactions": 8000,
                         "count_bits": 16, "count_max": 700, "full": True, "seed": 2})
    assert tests == 1 and failed == 0
