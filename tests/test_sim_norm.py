"""cocotb regression for the RMSNorm / quantize datapath (hw/mmfree_hw/norm.py), bit-exact
against the golden model on the Verilog that Amaranth emits: each unit under the 4
gap/back-pressure patterns, different random data under each, with short vectors
(4 x 3,000 elements per unit; max_k = 64, or 8-bit counts) and 4 x 2,500 vectors of
K = 1 .. 4 that walk every bit length of the peak and of the sum of squares (Dequantize:
every combined scale shift, and count = 0 beats); then a second size (max_k = 1024, or
16-bit counts) with the default model's full-size vectors; RmsRsqrt at max_k = 2^15 with
sums of squares up to 62 bits; and each unit's latency and throughput."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sim"))

from runner import check  # noqa: E402

from mmfree_fpga import numerics as N  # noqa: E402
from mmfree_hw.norm import AbsmaxQuantize, Dequantize, RmsRsqrt  # noqa: E402

PATTERNS = ["full", "gaps", "backpressure", "both"]
UNITS = {"rms": RmsRsqrt, "quant": AbsmaxQuantize}
SWEEP = 2500                # short vectors per pattern: 10,000 per unit


def run_norm(record_property, unit, component, only=("norm_datapath",), **params):
    check(record_property, component, f"norm_{unit}", "test_norm", {"unit": unit, **params},
          only=list(only))


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("unit", ["rms", "quant"])
def test_norm_short_vectors(record_property, unit, pattern):
    run_norm(record_property, unit, UNITS[unit](max_k=64), pattern=pattern,
             transactions=3000, lengths=[16, 64], max_k=64, sweep=SWEEP,
             seed=1 + PATTERNS.index(pattern))


@pytest.mark.parametrize("unit", ["rms", "quant"])
def test_norm_full_size(record_property, unit):
    run_norm(record_property, unit, UNITS[unit](max_k=1024), pattern="both",
             transactions=4000, full=True, lengths=[1, 1024], max_k=1024, seed=2)


def test_rms_long_vectors(record_property):
    """K up to 2^15 (NUMERICS' MAX_K): sums of squares of 50 .. 62 bits."""
    run_norm(record_property, "rms", RmsRsqrt(max_k=N.MAX_K), pattern="backpressure",
             long=True, max_k=N.MAX_K, seed=4)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_dequantize(record_property, pattern):
    run_norm(record_property, "dequant", Dequantize(count_bits=8), pattern=pattern,
             transactions=3000, count_bits=8, count_max=64, sweep=True,
             seed=1 + PATTERNS.index(pattern))


def test_dequantize_full_size(record_property):
    run_norm(record_property, "dequant", Dequantize(count_bits=16), pattern="both",
             transactions=8000, count_bits=16, count_max=700, full=True, seed=2)


@pytest.mark.parametrize("unit", ["rms", "quant", "dequant"])
def test_norm_timing(record_property, unit):
    """The docstrings' latency and throughput figures, at the default model's size."""
    component = Dequantize(count_bits=16) if unit == "dequant" else UNITS[unit](max_k=1024)
    run_norm(record_property, unit, component, only=["timing"], suite="timing", max_k=1024)
