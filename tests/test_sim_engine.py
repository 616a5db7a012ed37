"""cocotb regression for the ternary accumulate engine on the Verilog Amaranth emits:
4 patterns x 2 lane counts x 1,250 random row groups (10,000, plus corner products), and
the default model's full-size shapes with the 256 x 256 throughput measurement."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sim"))

from runner import run  # noqa: E402

from mmfree_hw.engine import TernaryEngine  # noqa: E402

PATTERNS = ["full", "gaps", "backpressure", "both"]


@pytest.mark.parametrize("lanes", [8, 32])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_engine_random(pattern, lanes):
    params = {"suite": "random", "lanes": lanes, "max_k": 64, "pattern": pattern,
              "groups": 1250, "seed": 1}
    tests, failed = run(TernaryEngine(lanes, 64), "engine", "test_engine", params)
    assert tests == 1 and failed == 0


@pytest.mark.parametrize("lanes", [32, 128])
def test_engine_full_size(lanes):
    params = {"suite": "full", "lanes": lanes, "max_k": 1024, "seed": 2}
    tests, failed = run(TernaryEngine(lanes, 1024), "engine", "test_engine", params)
    assert tests == 1 and failed == 0
