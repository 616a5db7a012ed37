"""cocotb helpers shared by the test benches: clock and reset, stream sources with random
valid gaps, stream sinks with random back-pressure and a protocol monitor on every output
stream, cycle stamps for latency measurements, struct (un)packing from the very Amaranth
layouts the gateware uses (so a payload's bit layout is defined once), and the results
count each bench reports.

Handshake timing: drivers change inputs right after a rising edge and sample in the
ReadOnly phase before the next one; a beat transfers at an edge where valid and ready
were both high, as amaranth.lib.stream defines. Cycle numbers (:func:`cycle`) count rising
edges: a beat "at cycle c" was sampled valid (and ready) in the ReadOnly phase after edge
c, and transfers at edge c + 1. So a unit whose docstring says "valid L cycles after the
cycle whose edge accepted the input" shows its output L cycle numbers after the input's.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
from amaranth.lib import data
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

_PERIOD_NS = 10


def params() -> dict:
    """The parameter set the pytest runner passed (MMF_PARAMS, JSON)."""
    return json.loads(os.environ.get("MMF_PARAMS", "{}"))


async def start(dut, period_ns: int = 10):
    """Start the clock and hold reset for two cycles."""
    global _PERIOD_NS
    _PERIOD_NS = period_ns
    cocotb.start_soon(Clock(dut.clk, period_ns, unit="ns").start())
    dut.rst.value = 1
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.rst.value = 0


def cycle() -> int:
    """The number of the clock cycle now (rising edges since time 0)."""
    return round(get_sim_time("ns") / _PERIOD_NS)


async def idle(dut, cycles: int):
    for _ in range(cycles):
        await RisingEdge(dut.clk)


def report(dut, unit: str, results: int, detail: str = ""):
    """Log how many results (vectors, scalars, output beats: whatever the unit produces per
    operation) a bench checked against the golden model, and hand the count to the pytest
    runner (``MMF_REPORT``), which sums it per unit for ``make sim``'s summary."""
    dut._log.info("%s: %d results checked%s", unit, results, f" ({detail})" if detail else "")
    path = os.environ.get("MMF_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"unit": unit, "results": results}) + "\n")


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
        self.dut, self.prefix = dut, prefix
        self.clk = dut.clk
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.rng = random.Random(seed)


def _fmt(value) -> str:
    return hex(int(value)) if value.is_resolvable else str(value)


class StreamMonitor:
    """The stream rules of amaranth.lib.stream, checked once per cycle on one stream.

    A beat that is valid at an edge where ``ready`` is low has not transferred: at the next
    sample ``valid`` must still be high and the payload unchanged. A violation raises
    ``AssertionError`` (which fails the test at once) unless ``strict`` is False; either way
    it is kept in ``violations``. Cycles with ``rst`` high are not checked (a reset may
    drop a stalled beat). Also records when each beat transferred (``transfers``), when it
    was first presented (``presented``) and the last cycle ``valid`` was high.

    :meth:`sample` is meant to be called in the ReadOnly phase of every cycle, by a sink
    (:class:`StreamSink` does) or by :meth:`run` for a stream the bench does not own.
    """

    def __init__(self, port: _StreamPort, name: str | None = None, strict: bool = True):
        self.port = port
        self.name = name or port.prefix
        self.strict = strict
        self.rst = getattr(port.dut, "rst", None)
        self.violations: list[str] = []
        self.transfers: list[int] = []
        self.presented: list[int] = []
        self.last_valid = -1
        self._stalled = None            # the payload of a beat that did not transfer
        self._since = None              # the cycle that beat was first presented

    def _fail(self, what: str):
        msg = f"stream {self.name}: {what} at cycle {cycle()}"
        self.violations.append(msg)
        if self.strict:
            raise AssertionError(msg)

    def sample(self):
        """Check this cycle against the last; returns the payload (int) if a beat transfers
        at the coming edge, else None."""
        p = self.port
        if self.rst is not None and str(self.rst.value) != "0":
            self._stalled = self._since = None
            return None
        valid = str(p.valid.value) == "1"
        payload = p.payload.value if valid else None
        if self._stalled is not None:
            if not valid:
                self._fail("valid fell without a transfer")
            elif payload != self._stalled:
                self._fail(f"payload changed while stalled ({_fmt(self._stalled)} -> "
                           f"{_fmt(payload)})")
        self._stalled = None
        if not valid:
            self._since = None
            return None
        now = cycle()
        self.last_valid = now
        if self._since is None:
            self._since = now
        if str(p.ready.value) == "1":
            self.transfers.append(now)
            self.presented.append(self._since)
            self._since = None
            return int(payload)
        self._stalled = payload
        return None

    async def run(self):
        while True:
            await ReadOnly()
            self.sample()
            await RisingEdge(self.port.clk)


class StreamSource(_StreamPort):
    """Drives ``<prefix>__valid/__payload``; ``valid_prob`` < 1 inserts random gaps.

    ``accepted`` holds the cycle number of every beat that transferred. ``drive``, if
    given, is called every cycle right after the beat's payload (or a gap) is set up, with
    the index of the beat presented (None in a gap): to note when a beat is first offered,
    or to drive garbage on the payload while ``valid`` is low."""

    def __init__(self, dut, prefix: str, valid_prob: float = 1.0, seed: int = 0):
        super().__init__(dut, prefix, seed)
        self.valid_prob = valid_prob
        self.valid.value = 0
        self.accepted: list[int] = []

    async def send(self, words, drive=None):
        for i, word in enumerate(words):
            while self.rng.random() >= self.valid_prob:
                self.valid.value = 0
                if drive:
                    drive(None)
                await RisingEdge(self.clk)
            self.valid.value = 1
            self.payload.value = word
            while True:
                if drive:
                    drive(i)
                await ReadOnly()
                accepted = bool(self.ready.value)
                if accepted:
                    self.accepted.append(cycle())
                await RisingEdge(self.clk)
                if accepted:
                    break
        self.valid.value = 0
        if drive:
            drive(None)


class StreamSink(_StreamPort):
    """Collects ``<prefix>__payload`` beats; ``ready_prob`` < 1 applies back-pressure.
    Every sink carries a :class:`StreamMonitor` (``monitor``): the protocol is checked on
    every output stream of every bench, and its ``transfers`` / ``presented`` give the
    cycle numbers of the beats."""

    def __init__(self, dut, prefix: str, ready_prob: float = 1.0, seed: int = 1):
        super().__init__(dut, prefix, seed)
        self.ready_prob = ready_prob
        self.beats: list[int] = []
        self.monitor = StreamMonitor(self)
        self.ready.value = 0
        cocotb.start_soon(self._run())

    async def _run(self):
        while True:
            self.ready.value = int(self.rng.random() < self.ready_prob)
            await ReadOnly()
            beat = self.monitor.sample()
            if beat is not None:
                self.beats.append(beat)
            await RisingEdge(self.clk)

    async def wait_for(self, n: int, timeout_cycles: int = 1_000_000):
        for _ in range(timeout_cycles):
            if len(self.beats) >= n:
                return self.beats
            await RisingEdge(self.clk)
        raise TimeoutError(f"{self.prefix}: only {len(self.beats)} of {n} beats arrived")

    async def expect_no_more(self, n: int, cycles: int):
        """After the ``n`` expected beats arrived: ``cycles`` more cycles in which ``valid``
        never rises (so no extra beat, transferred or not)."""
        await self.wait_for(n)
        await idle(self.dut, cycles)
        assert len(self.beats) == n, f"{self.prefix}: {len(self.beats) - n} extra beats"
        last = self.monitor.transfers[n - 1] if n else -1
        assert self.monitor.last_valid == last, \
            f"{self.prefix}: valid at cycle {self.monitor.last_valid}, after the last beat ({last})"


# Back-pressure/gap patterns every bench runs under, as in cocotbext-axi's tests.
PATTERNS = {"full": (1.0, 1.0), "gaps": (0.6, 1.0), "backpressure": (1.0, 0.5),
            "both": (0.7, 0.6)}
