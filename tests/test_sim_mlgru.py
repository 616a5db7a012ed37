"""cocotb regression for the MLGRU state unit on the Verilog that Amaranth emits: two widths
x the 4 stream patterns x at least 1,300 channel-transactions (about 11,000 in all), the
state hazard at n = 1 and 3 (the input interlock), and the default model's size (n = 256,
6 layers in one 1,536-deep state memory). The settings travel on the ``cfg`` stream, one
beat per vector, with its own random gaps and, in the patterns with gaps, long waits before
some beats (so vectors wait for them). Each run also resets the unit mid-vector with cfg
beats queued. One more run asserts the docstring's latency and throughput."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sim"))

from runner import check  # noqa: E402

from mmfree_hw.mlgru import MLGRUUnit  # noqa: E402

PATTERNS = ["full", "gaps", "backpressure", "both"]


def run_mlgru(record_property, only=("sequences", "reset_mid_vector"), **params):
    check(record_property, MLGRUUnit(params["max_channels"]), "mlgru", "test_mlgru", params,
          only=list(only))


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize(("n", "max_channels"), [(16, 64), (64, 256)])
def test_mlgru(record_property, pattern, n, max_channels):
    """Up to 4 layers interleaved in the memory, 1 .. 4 tokens per sequence; each run also
    asserts that every corner case of the bench's list occurred (with gaps: a cfg beat
    arriving after the previous vector's last beat, too)."""
    run_mlgru(record_property, pattern=pattern, n=n, max_channels=max_channels,
              transactions=1300, seed=PATTERNS.index(pattern) + n, check_coverage=True)


@pytest.mark.parametrize("pattern", ["full", "both"])
@pytest.mark.parametrize(("n", "layers"), [(1, 1), (3, 2)])
def test_mlgru_small_n(record_property, pattern, n, layers):
    """The same address recurs sooner than MIN_DISTANCE (8) beats later: n = 1; n = 3 with
    one layer or two interleaved. The input interlock holds those beats."""
    run_mlgru(record_property, pattern=pattern, n=n, max_channels=8, layers=layers,
              max_tokens=12, transactions=300, seed=2 + PATTERNS.index(pattern))


def test_mlgru_default_model_size(record_property):
    run_mlgru(record_property, pattern="both", n=256, max_channels=1536, layers=6,
              all_layers=True, max_tokens=3, transactions=4000, seed=3)


def test_mlgru_timing(record_property):
    """LATENCY (35) per beat; one channel per cycle at n = 16 with the cfg beats costing
    no cycle, one vector per n + MIN_DISTANCE - 1 cycles at n = 3."""
    run_mlgru(record_property, only=["timing"], max_channels=64, suite="timing")
