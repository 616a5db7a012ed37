"""Drive the core (hw/mmfree_hw/core.py) in Amaranth's simulator: host writes, run beats,
record bytes back, parsed. Shared by the core's tests."""

from __future__ import annotations

import struct

import numpy as np
from amaranth.sim import Simulator

from mmfree_fpga.commands import COUNTERS, RecordType
from mmfree_fpga.isa import Space
from mmfree_hw.command import port_name
from mmfree_hw.core import Core

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


def run_core(cfg, compiled, runs, max_cycles=2_000_000):
    """``runs``: list of ("reset",) or ("run", token, k_run). Returns per run the parsed
    records and the ok flag, and the counters at the end."""
    dut = Core(cfg)
    out = {"runs": [], "counters": None}

    async def bench(ctx):
        images = compiled.images()
        for space, words in images.items():
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
            raw = bytearray()
            for _ in range(max_cycles):
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
        out["counters"] = dict(zip(COUNTERS, [ctx.get(dut.counters[i]) for i in
                                              range(len(COUNTERS))], strict=True))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out
