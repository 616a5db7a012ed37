"""``mmfree-fpga bench --backend sim``: tokens/s and cycles/token of the accelerator.

Runs a prompt and then ``tokens`` greedy tokens on the device and, for comparison, on the
golden model in the same process; reports the host's tokens/s for both, the core's own
cycle counters per generated token with their breakdown, the ideal (ternary weights ÷
lanes: every weight streams once per token, one word per cycle), whether the two produced
the same tokens (they must: the golden model is the contract), and, over a framed link,
its frames and bytes per token each way; with ``--board``, tokens/s at the board's core
clock (the simulator is then that board's configuration).
"""

from __future__ import annotations

import time

import numpy as np

from . import golden
from .compiler import Compiled
from .driver.backend import AcceleratorBackend
from .generate import Sampler, generate

PROMPT = "It is a truth universally acknowledged"


def _greedy(backend, ids, n):
    t0 = time.perf_counter()
    out = list(generate(backend, ids, n, Sampler(0.0)))
    return out, time.perf_counter() - t0


def bench_accelerator(backend: AcceleratorBackend, prompt_ids: list[int],
                      tokens: int) -> dict:
    compiled: Compiled = backend.compiled
    # the prompt, then a reset of the counters so they cover the generated tokens only
    backend.reset()
    logits = backend.prefill(prompt_ids)
    first = int(np.argmax(logits))
    backend.driver.reset_counters()
    stats = getattr(backend.driver.transport, "stats", None)    # a framed link's
    before = None if stats is None else (stats.frames_sent, stats.bytes_sent,
                                         stats.bytes_received)
    seq, t0 = [first], time.perf_counter()
    for _ in range(tokens - 1):
        seq.append(int(np.argmax(backend.step(seq[-1]))))
    wall = time.perf_counter() - t0
    link = None
    if stats is not None:
        n = tokens - 1
        frames, sent, received = (stats.frames_sent - before[0], stats.bytes_sent - before[1],
                                  stats.bytes_received - before[2])
        link = {"frames_per_token": frames / n, "bytes_to_device_per_token": sent / n,
                "bytes_from_device_per_token": received / n,
                # what a 3 Mbaud UART (10 bits a byte) would spend per token on these bytes
                "uart_3mbaud_ms_per_token": max(sent, received) / n * 10 / 3e6 * 1e3}
    c = backend.driver.counters()
    steps = c["TOKENS"]
    gold = golden.GoldenBackend(compiled.layout)
    want, gwall = _greedy(gold, prompt_ids, tokens)
    gsteps = len(prompt_ids) + len(want) - 1
    ideal = compiled.layout.ternary_weights / compiled.core.lanes
    per = {k: c[k] / steps for k in ("CYCLES", "ENGINE_BUSY", "ENGINE_WAIT_WEIGHTS",
                                     "WAIT_VECTOR", "SEQUENCER", "INSTRUCTIONS")}
    memory = _memory(backend, c, steps, per["CYCLES"])
    flat = {} if memory is None else {k: memory[k] for k in (
        "sdram_efficiency", "bytes_per_token", "tokens_per_s_at_clock",
        "bandwidth_bound_tokens_per_s") if k in memory}
    board = getattr(backend, "board", None)     # --board: the bitstream's clock
    at_board = {} if board is None else {
        "board": board.name, "core_clock_mhz": board.core_hz / 1e6,
        "tokens_per_s_at_core_clock": board.core_hz / per["CYCLES"]}
    return {
        "backend": backend.name,
        **at_board,
        "lanes": compiled.core.lanes,
        "tokens": steps,
        "tokens_per_s": steps / wall,
        "cycles_per_token": per["CYCLES"],
        "ideal_cycles_per_token": ideal,
        "cycles_over_ideal": per["CYCLES"] / ideal,
        "simulated_cycles_per_s": c["CYCLES"] / wall,
        "breakdown_per_token": {k.lower(): v for k, v in per.items() if k != "CYCLES"},
        "golden_tokens_per_s": gsteps / gwall,
        "identical_to_golden": seq == want,
        "link": link,
        **flat,                # the SDRAM's headline figures, also under "memory"
        "memory": memory,
    }


def _memory(backend, c: dict, steps: int, cycles_per_token: float) -> dict | None:
    """The SDRAM's figures, when the weights stream from one (its counters are there):
    ``sdram_efficiency`` (cycles its data bus carried a beat, over the token's cycles),
    ``bytes_per_token`` (what the token's weight words take in the SDRAM: every word once;
    ``onchip_bytes_per_token``: those read from block RAM instead),
    the bytes it actually read (the read-ahead runs past a token's last word), restarts of
    the weight stream and cycles the prefetch FIFO was full; with the clock, tokens/s there
    and the physical limit (the bus's bytes/s over bytes per token)."""
    from . import commands as C
    from . import numerics as N

    if "MEM_BEATS" not in c:
        return None
    ident = backend.driver.identity
    lanes, beat_bytes = ident.lanes, 2
    beats_per_word = N.word_beats(lanes, ident.packing == C.Packing.BASE3, 8 * beat_bytes)
    words = c["ENGINE_BUSY"] / steps
    onchip = 0
    if backend.compiled.onchip_words:        # a split store: the compiler's placement
        onchip = backend.compiled.weight_words_per_token()["onchip"]
    out = {
        "memory": ident.memory.name.lower(),
        "packing": ident.packing.name.lower(),
        "onchip_words": ident.onchip_words,
        "sdram_efficiency": c["MEM_BEATS"] / c["CYCLES"],
        "bytes_per_token": (words - onchip) * beats_per_word * beat_bytes,
        "onchip_bytes_per_token": onchip * N.CODE_BITS * lanes // 8,
        "bytes_read_per_token": c["MEM_BEATS"] * beat_bytes / steps,
        "beats_per_word": beats_per_word,
        "stream_restarts_per_token": c["MEM_MISSES"] / steps,
        "fifo_full_cycles_per_token": c["MEM_FULL"] / steps,
    }
    sd = getattr(backend, "sdram", None)
    if sd is not None:
        bound = beat_bytes * sd.clock_hz / out["bytes_per_token"]
        out.update(clock_mhz=sd.clock_hz / 1e6,
                   tokens_per_s_at_clock=sd.clock_hz / cycles_per_token,
                   bandwidth_bound_tokens_per_s=bound,
                   fraction_of_bound=sd.clock_hz / cycles_per_token / bound)
    return out


def table(r: dict) -> str:
    b = r["breakdown_per_token"]
    rows = [
        ("tokens/s (this machine)", f"{r['tokens_per_s']:.2f}"),
        ("golden model tokens/s (same run)", f"{r['golden_tokens_per_s']:.0f}"),
        ("cycles/token", f"{r['cycles_per_token']:,.0f}"),
        (f"ideal (ternary weights / {r['lanes']} lanes)", f"{r['ideal_cycles_per_token']:,.0f}"),
        ("cycles / ideal", f"{r['cycles_over_ideal']:.3f}"),
        *([(f"tokens/s at {r['board']}'s {r['core_clock_mhz']:g} MHz core clock",
            f"{r['tokens_per_s_at_core_clock']:.1f}")] if "board" in r else []),
        ("  engine busy", f"{b['engine_busy']:,.0f}"),
        ("  engine waiting for weights", f"{b['engine_wait_weights']:,.0f}"),
        ("  waiting for a vector unit", f"{b['wait_vector']:,.0f}"),
        ("  sequencer overhead", f"{b['sequencer']:,.0f}"),
        ("simulated cycles/s", f"{r['simulated_cycles_per_s']:,.0f}"),
        ("greedy tokens identical to golden", str(r["identical_to_golden"])),
    ]
    if r.get("memory"):
        mm = r["memory"]
        rows += [(f"SDRAM ({mm['packing']}): data bus busy", f"{mm['sdram_efficiency']:.1%}"),
                 ("  bytes/token (weights) / read", f"{mm['bytes_per_token']:,.0f} / "
                                                     f"{mm['bytes_read_per_token']:,.0f}"),
                 ("  stream restarts, FIFO-full cycles per token",
                  f"{mm['stream_restarts_per_token']:.1f}, "
                  f"{mm['fifo_full_cycles_per_token']:,.0f}")]
        if "clock_mhz" in mm:
            rows += [(f"  tokens/s at {mm['clock_mhz']:g} MHz (bandwidth bound)",
                      f"{mm['tokens_per_s_at_clock']:.1f} "
                      f"({mm['bandwidth_bound_tokens_per_s']:.1f}: "
                      f"{mm['fraction_of_bound']:.1%})")]
    if r.get("link"):
        lk = r["link"]
        rows += [("link frames/token (each way)", f"{lk['frames_per_token']:.2f}"),
                 ("link bytes/token to / from device",
                  f"{lk['bytes_to_device_per_token']:.0f} / "
                  f"{lk['bytes_from_device_per_token']:.0f}"),
                 ("  at 3 Mbaud that is (ms/token)", f"{lk['uart_3mbaud_ms_per_token']:.3f}")]
    w = max(len(a) for a, _ in rows)
    return "\n".join(f"{a:<{w}}  {v}" for a, v in rows)
