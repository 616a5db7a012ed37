"""cocotb regression for the ternary accumulate engine on the Verilog Amaranth emits:
4 patterns x 2 lane counts x 1,250 random row groups (10,000, plus corner products; K from
1 to 64, a third of the products on the shipped model's codes, 30 % of the cfg beats
late), a sustained run of the 128-lane engine (the headline configuration) under gaps and
back-pressure, the default model's full-size matrices with the 256 x 256 throughput
measurement, and the docstring's latency and throughput figures."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sim"))

from runner import check  # noqa: E402

from mmfree_hw.engine import TernaryEngine  # noqa: E402

PATTERNS = ["full", "gaps", "backpressure", "both"]


def run_engine(record_property, lanes, max_k, only=("engine",), **params):
    check(record_property, TernaryEngine(lanes, max_k), "engine", "test_engine",
          {"lanes": lanes, "max_k": max_k, **params}, only=list(only))


@pytest.mark.parametrize("lanes", [8, 32])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_engine_random(record_property, pattern, lanes):
    run_engine(record_property, lanes, 64, suite="random", pattern=pattern, groups=1250,
               seed=1)


@pytest.mark.parametrize("pattern", ["backpressure", "both"])
def test_engine_128_sustained(record_property, pattern):
    """Hundreds of acc beats of 128 lanes, vectors back to back, random K and groups."""
    run_engine(record_property, 128, 64, suite="random", pattern=pattern, groups=300,
               seed=5 + PATTERNS.index(pattern))


@pytest.mark.parametrize("lanes", [32, 128])
def test_engine_full_size(record_property, lanes):
    run_engine(record_property, lanes, 1024, suite="full", seed=2)


def test_engine_timing(record_property):
    run_engine(record_property, 8, 64, only=["timing"], suite="timing")
