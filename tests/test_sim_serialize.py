"""cocotb regression for the lanes -> rows adapter (hw/mmfree_hw/serialize.py) on the
Verilog Amaranth emits: LaneSerializer at 4 and 128 lanes under the 4 gap/back-pressure
patterns (rows below, at and past multiples of lanes; padding dropped; rows = 0), its
latency and throughput, and TernaryEngine -> LaneSerializer against golden.ternary_matvec
(weight words from numerics.engine_word_ints), including the no-stall check for K >= lanes.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sim"))

from runner import check  # noqa: E402
from test_serialize_amaranth import EngineSerializer  # noqa: E402

from mmfree_hw.serialize import LaneSerializer  # noqa: E402

PATTERNS = ["full", "gaps", "backpressure", "both"]


def run(record_property, component, name, **params):
    check(record_property, component, name, "test_serialize", params, only=["serialize"])


@pytest.mark.parametrize("pattern", PATTERNS)
def test_serialize_4(record_property, pattern):
    run(record_property, LaneSerializer(4), "serialize4", suite="random", lanes=4,
        pattern=pattern, products=150, seed=1 + PATTERNS.index(pattern))


def test_serialize_128(record_property):
    run(record_property, LaneSerializer(128), "serialize128", suite="random", lanes=128,
        pattern="both", products=16, seed=5)


@pytest.mark.parametrize("lanes", [4, 128])
def test_serialize_timing(record_property, lanes):
    run(record_property, LaneSerializer(lanes), f"serialize{lanes}", suite="timing",
        lanes=lanes, seed=7)


def test_engine_to_serializer_8(record_property):
    run(record_property, EngineSerializer(8, 64), "engine_serialize8", suite="engine",
        lanes=8, max_k=64, pattern="both", products=50, seed=11)


def test_engine_to_serializer_128_no_stall(record_property):
    """K >= lanes at full rate: the engine takes a weight word every cycle."""
    run(record_property, EngineSerializer(128, 256), "engine_serialize128", suite="engine",
        lanes=128, max_k=160, engine_max_k=256, min_k=128, pattern="full", products=4,
        no_stall=True, seed=13)


def test_engine_to_serializer_128_short_k(record_property):
    """K < lanes under gaps and back-pressure: the pair runs at the serializer's rate."""
    run(record_property, EngineSerializer(128, 64), "engine_serialize128", suite="engine",
        lanes=128, max_k=64, pattern="both", products=4, seed=14)
