"""Drive the core (hw/mmfree_hw/core.py) in Amaranth's simulator: host writes, run beats,
record bytes back, parsed. Shared by the core's tests.

The core reads its weights through ``weight_req`` / ``weight_words`` only: the bench puts
a ``WeightMemory`` behind them (as ``top.Accelerator`` does), and, given ``slow``, a
``weight_stubs.SlowWeights`` between the two (a slow, gappy store)."""

from __future__ import annotations

import struct

import numpy as np
from amaranth import Elaboratable, Module
from amaranth.lib import wiring
from amaranth.sim import Simulator
from weight_stubs import SlowWeights

from mmfree_fpga.commands import COUNTERS, RecordType
from mmfree_fpga.isa import Space
from mmfree_hw.command import port_name
from mmfree_hw.core import Core
from mmfree_hw.weights import WeightMemory

REC_TRACE, REC_RESULT, REC_ERROR = RecordType.TRACE, RecordType.RESULT, RecordType.ERROR


def parse_records(raw: bytes):
    """-> (traces [(tag, int64 array)], result (ids, logits) or None, error (code, pc) or None)."""
    traces, result, error, i = [], None, None, 0
    while i < len(raw):
        t = raw[i]
        if t == REC_TRACE:
            tag, n = struct.unpack_from("<HH", raw, i + 1)
            vals = np.frombuffer(raw, dtype="<i4", count=n, offset=i + 5).astype(np.int64)
            traces.append((tag, vals))
            i += 5 + 4 * n
        elif t == REC_RESULT:
            n = raw[i + 1]
            pairs = np.frombuffer(raw, dtype="<u4", count=2 * n, offset=i + 2).reshape(n, 2)
            result = (pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int32).astype(np.int64))
            i += 2 + 8 * n
        elif t == REC_ERROR:
            error = (raw[i + 1], struct.unpack_from("<H", raw, i + 2)[0])
            i += 4
        else:
            raise AssertionError(f"unknown record type {t} at {i}: {raw[i:i + 8].hex()}")
    return traces, result, error


class CoreWithWeights(Elaboratable):
    """The core, its ``WeightMemory`` and, given ``slow`` (``SlowWeights``' keyword
    arguments: ``latency``, ``gap_per_256``, ``seed``), a ``SlowWeights`` between them."""

    def __init__(self, cfg, slow=None):
        self.core = Core(cfg)
        self.wmem = WeightMemory(cfg.lanes, cfg.weight_words,
                                 addr_bits=self.core.weight_addr_bits,
                                 count_bits=self.core.weight_count_bits, host_read=True)
        self.stub = None if slow is None else SlowWeights(
            cfg.word_bits, self.core.weight_addr_bits, self.core.weight_count_bits, **slow)

    def elaborate(self, platform):
        m = Module()
        m.submodules.core, m.submodules.weights = self.core, self.wmem
        if self.stub is None:
            wiring.connect(m, self.core.weight_req, self.wmem.req)
            wiring.connect(m, self.wmem.words, self.core.weight_words)
        else:
            m.submodules.stub = stub = self.stub
            wiring.connect(m, self.core.weight_req, stub.req)
            wiring.connect(m, stub.mem_req, self.wmem.req)
            wiring.connect(m, self.wmem.words, stub.mem_words)
            wiring.connect(m, stub.words, self.core.weight_words)
        return m


def run_core(cfg, compiled, runs, max_cycles=2_000_000, slow=None):
    """``runs``: list of ("reset",) or ("run", token, k_run). Returns per run the parsed
    records and the ok flag, the counters at the end, the cycles each run took from its
    run beat to its token_done beat (``"cycles"``), the weight store's ``error`` and, with
    ``slow``, the stub's ``gaps``."""
    top = CoreWithWeights(cfg, slow)
    dut, stub = top.core, top.stub
    out = {"runs": [], "counters": None, "cycles": []}

    async def bench(ctx):
        images = compiled.images()
        for space, words in images.items():
            if space == Space.WEIGHTS:
                port = top.wmem.write
            else:
                port = getattr(dut, port_name(space)).write
            if space == Space.WEIGHTS:
                words = [int.from_bytes(w.tobytes(), "little") for w in words]
            for addr, w in enumerate(words):
                ctx.set(port.payload.addr, addr)
                ctx.set(port.payload.data, int(w) & ((1 << cfg.word_width(space)) - 1))
                ctx.set(port.valid, 1)
                await ctx.tick()
            ctx.set(port.valid, 0)
        ctx.set(dut.records.ready, 1)
        ctx.set(dut.token_done.ready, 1)
        for item in runs:
            if item[0] == "reset":
                ctx.set(dut.reset_state.valid, 1)
                await ctx.tick()
                ctx.set(dut.reset_state.valid, 0)
                continue
            _, tok, k = item
            ctx.set(dut.run.payload.token, tok)
            ctx.set(dut.run.payload.k_run, k)
            ctx.set(dut.run.payload.last, 1)
            ctx.set(dut.run.payload.first, 1)
            ctx.set(dut.run.valid, 1)
            await ctx.tick()
            ctx.set(dut.run.valid, 0)
            raw, cycles = bytearray(), 0
            for _ in range(max_cycles):
                cycles += 1
                if ctx.get(dut.records.valid):
                    raw.append(ctx.get(dut.records.payload))
                if ctx.get(dut.token_done.valid):
                    ok = ctx.get(dut.token_done.payload.ok)
                    await ctx.tick()
                    break
                await ctx.tick()
            else:
                raise TimeoutError("the token did not finish")
            out["runs"].append((parse_records(bytes(raw)), ok))
            out["cycles"].append(cycles)
        out["counters"] = dict(zip(COUNTERS, [ctx.get(dut.counters[i]) for i in
                                              range(len(COUNTERS))], strict=True))
        out["weights_error"] = ctx.get(top.wmem.error)
        if stub is not None:
            out["gaps"] = ctx.get(stub.gaps)

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out
