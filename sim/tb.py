"""cocotb helpers shared by the test benches: clock and reset, stream sources with random
valid gaps, stream sinks with random back-pressure, and struct (un)packing from the very
Amaranth layouts the gateware uses (so a payload's bit layout is defined once).

Handshake timing: drivers change inputs right after a rising edge and sample in the
ReadOnly phase before the next one; a beat transfers at an edge where valid and ready
were both high, as amaranth.lib.stream defines.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
from amaranth.lib import data
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge


def params() -> dict:
    """The parameter set the pytest runner passed (MMF_PARAMS, JSON)."""
    return json.loads(os.environ.get("MMF_PARAMS", "{}"))


async def start(dut, period_ns: int = 10):
    """Start the clock and hold reset for two cycles."""
    cocotb.start_soon(Clock(dut.clk, period_ns, unit="ns").start())
    dut.rst.value = 1
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.rst.value = 0


def to_signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def pack(layout, **fields) -> int:
    """Fields (ints, enum members) -> the payload integer, offsets from the Amaranth layout."""
    layout = data.Layout.cast(layout)
    word = 0
    for name, field in layout:
        value = fields[name]
        value = getattr(value, "value", value)
        word |= (int(value) & ((1 << field.width) - 1)) << field.offset
    return word


def unpack(layout, word: int) -> dict:
    layout = data.Layout.cast(layout)
    out = {}
    for name, field in layout:
        raw = (word >> field.offset) & ((1 << field.width) - 1)
        out[name] = to_signed(raw, field.width) if field.shape.signed else raw
    return out


class _StreamPort:
    """The ``<prefix>__valid/__ready/__payload`` handles of one stream port, and a seeded RNG
    for the random gaps or back-pressure applied to it."""

    def __init__(self, dut, prefix: str, seed: int):
        self.clk = dut.clk
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.rng = random.Random(seed)


class StreamSource(_StreamPort):
    """Drives ``<prefix>__valid/__payload``; ``valid_prob`` < 1 inserts random gaps."""

    def __init__(self, dut, prefix: str, valid_prob: float = 1.0, seed: int = 0):
        super().__init__(dut, prefix, seed)
        self.valid_prob = valid_prob
        self.valid.value = 0

    async def send(self, words):
        for word in words:
            while self.rng.random() >= self.valid_prob:
                self.valid.value = 0
                await RisingEdge(self.clk)
            self.valid.value = 1
            self.payload.value = word
            while True:
                await ReadOnly()
                accepted = bool(self.ready.value)
                await RisingEdge(self.clk)
                if accepted:
                    break
        self.valid.value = 0


class StreamSink(_StreamPort):
    """Collects ``<prefix>__payload`` beats; ``ready_prob`` < 1 applies back-pressure."""

    def __init__(self, dut, prefix: str, ready_prob: float = 1.0, seed: int = 1):
        super().__init__(dut, prefix, seed)
        self.ready_prob = ready_prob
        self.beats: list[int] = []
        self.ready.value = 0
        cocotb.start_soon(self._run())

    async def _run(self):
        while True:
            self.ready.value = int(self.rng.random() < self.ready_prob)
            await ReadOnly()
            if self.valid.value and self.ready.value:
                self.beats.append(int(self.payload.value))
            await RisingEdge(self.clk)

    async def wait_for(self, n: int, timeout_cycles: int = 1_000_000):
        for _ in range(timeout_cycles):
            if len(self.beats) >= n:
                return self.beats
            await RisingEdge(self.clk)
        raise TimeoutError(f"only {len(self.beats)} of {n} beats arrived")


# Back-pressure/gap patterns every bench runs under, as in cocotbext-axi's tests.
PATTERNS = {"full": (1.0, 1.0), "gaps": (0.6, 1.0), "backpressure": (1.0, 0.5),
            "both": (0.7, 0.6)}
