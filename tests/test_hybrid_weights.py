"""HybridWeightStore in Amaranth's simulator: the block RAM part and an SdramWeightStore on
test_sdram_weight_store's behavioural native port (random latency, random command
back-pressure). Host writes to both regions in random order and reads back across the
boundary, runs alternating between the regions in random order under consumer
back-pressure (every word in request order, none extra), back-to-back requests across the
regions (a switch costs no cycle once the SDRAM read-ahead has the words), and refusals:
a straddling request, one past the end, a write past the end."""

import gc
import random
import warnings

import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator
from test_sdram_weight_store import (
    NativePort,
    host_reads,
    host_writes,
    random_code_word,
    send_requests,
    take_words,
)

from mmfree_hw.hybrid_weights import HybridWeightStore
from mmfree_hw.sdram.weight_store import SdramWeightStore

LANES, DEPTH, ONCHIP = 16, 64, 24


def make(prefetch=4, packing=0, route_depth=HybridWeightStore.ROUTE_DEPTH, lanes=LANES):
    sd = SdramWeightStore(lanes, DEPTH - ONCHIP, addr_bits=8, count_bits=8, mem_addr_bits=12,
                          prefetch_words=prefetch, base=3, packing=packing)
    return HybridWeightStore(lanes, DEPTH, ONCHIP, sd, addr_bits=8, count_bits=8,
                             route_depth=route_depth)


def run(dut, words, requests, host_reads_=(), bad_writes=(), seed=0, ready_prob=1.0,
        gaps=True, **port_args):
    """Host writes (``words``, in random order, then ``bad_writes``), host reads, then the
    requests (random gaps unless ``gaps`` is false) against a sink with ``words.ready``
    high with probability ``ready_prob``. Returns the words, the host's words and marks:
    ``error``, ``cycles`` (the sink's cycle of each word)."""
    rng = random.Random(seed)
    port = NativePort(dut.sdram, random.Random(seed + 7), **port_args)
    n = sum(c for a, c in requests if _valid(a, c))
    out, host_out, marks = [], [], {"cycles": []}
    order = list(words.items())
    rng.shuffle(order)

    async def host(ctx):
        await host_writes(ctx, dut.write, order + [(a, 0) for a in bad_writes])
        await host_reads(ctx, dut.read_addr, dut.read_data, host_reads_, host_out)
        marks["filled"] = True
        await send_requests(ctx, dut.req, requests, rng, gaps)

    async def sink(ctx):
        while "filled" not in marks:
            await ctx.tick()
        await take_words(ctx, dut.words, n, out, random.Random(seed + 1), ready_prob,
                         marks["cycles"])
        marks["error"] = ctx.get(dut.error)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(port.process, background=True)
    sim.add_testbench(host)
    sim.add_testbench(sink)
    sim.run()
    return out, host_out, marks


def _valid(addr, count):
    if isinstance(addr, str):
        return False
    return addr + count <= DEPTH and not (addr < ONCHIP < addr + count)


def expected(words, requests):
    return [words[a] for addr, count in requests if _valid(addr, count)
            for a in range(addr, addr + count)]


def _words(seed, lanes=LANES):
    rng = random.Random(seed)
    return {a: random_code_word(rng, lanes) for a in range(DEPTH)}


@pytest.mark.parametrize("packing,lanes", [(0, 16), (1, 40)])
def test_host_write_and_read_back_both_regions(packing, lanes):
    words = _words(1, lanes)
    dut = make(packing=packing, lanes=lanes)
    reads = [0, ONCHIP - 1, ONCHIP, DEPTH - 1, 5, 40, 40, 7, ONCHIP, 3]
    requests = [(2, 6), (ONCHIP + 1, 4)]
    out, host_out, marks = run(dut, words, requests, host_reads_=reads)
    assert host_out == [words[a] for a in reads]
    assert out == expected(words, requests)
    assert not marks["error"]


def _random_requests(rng, n):
    """Runs in either region: SDRAM runs mostly contiguous (hits, as the compiler lays
    them out), now and then a jump (a miss); block RAM runs anywhere in their region."""
    reqs, sd_next = [], ONCHIP
    for _ in range(n):
        if rng.random() < 0.5:
            a = rng.randrange(ONCHIP)
            reqs.append((a, rng.randrange(1, ONCHIP - a + 1)))
        else:
            if rng.random() < 0.25 or sd_next >= DEPTH:
                sd_next = rng.randrange(ONCHIP, DEPTH)
            c = rng.randrange(1, min(8, DEPTH - sd_next) + 1)
            reqs.append((sd_next, c))
            sd_next += c
    return reqs


@pytest.mark.parametrize("seed,ready_prob,prefetch,route_depth", [
    (0, 1.0, 4, 4), (1, 0.5, 4, 4), (2, 0.3, 2, 1), (3, 0.7, 8, 2), (4, 0.5, 3, 4)])
def test_runs_alternating_in_random_order(seed, ready_prob, prefetch, route_depth):
    words = _words(seed)
    dut = make(prefetch=prefetch, route_depth=route_depth)
    requests = _random_requests(random.Random(seed + 100), 40)
    out, _, marks = run(dut, words, requests, seed=seed, ready_prob=ready_prob)
    assert out == expected(words, requests)
    assert not marks["error"]


@pytest.mark.parametrize("seed", [5, 6])
def test_back_to_back_across_regions(seed):
    words = _words(seed)
    dut = make(prefetch=4)
    requests = _random_requests(random.Random(seed), 30)
    out, _, marks = run(dut, words, requests, seed=seed, ready_prob=0.8, gaps=False)
    assert out == expected(words, requests)
    assert not marks["error"]


def test_region_switch_costs_no_cycle():
    """The SDRAM's first run primes the read-ahead; then block RAM and SDRAM runs (hits)
    alternate back to back with no back-pressure anywhere: a word every cycle."""
    words = _words(8)
    dut = make(prefetch=8)
    burst = [(0, 6), (ONCHIP + 2, 4), (6, 5), (ONCHIP + 6, 3), (11, 1), (12, 4),
             (ONCHIP + 9, 5), (20, 4)]
    requests = [(ONCHIP, 2), ("wait", 80)] + burst
    out, _, marks = run(dut, words, requests, gaps=False, cmd_prob=1.0, jitter=0)
    assert out == expected(words, requests)
    cyc = marks["cycles"][2:]
    assert cyc[-1] - cyc[0] == len(cyc) - 1


def test_refusals_set_error_and_emit_nothing():
    words = _words(9)
    dut = make()
    requests = [(0, 4), (ONCHIP - 3, 5), (ONCHIP + 4, 3), (DEPTH - 2, 3), (10, 0),
                (ONCHIP - 1, 1), (ONCHIP, 2), (ONCHIP - 1, 2), (4, 4)]
    out, _, marks = run(dut, words, requests)
    assert out == expected(words, requests)
    assert len(out) == 4 + 3 + 1 + 2 + 4
    assert marks["error"]


def test_write_past_the_end_is_refused():
    words = _words(10)
    dut = make()
    out, host_out, marks = run(dut, words, [(ONCHIP - 2, 2), (DEPTH - 2, 2)],
                               host_reads_=[DEPTH - 1, 0], bad_writes=[DEPTH, 200])
    assert host_out == [words[DEPTH - 1], words[0]]
    assert out == expected(words, [(ONCHIP - 2, 2), (DEPTH - 2, 2)])
    assert marks["error"]


def test_construction_checks():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        sd = SdramWeightStore(LANES, DEPTH - ONCHIP, addr_bits=8, count_bits=8,
                              mem_addr_bits=12)
        with pytest.raises(ValueError, match="depth"):
            HybridWeightStore(LANES, DEPTH, ONCHIP + 1, sd, addr_bits=8, count_bits=8)
        with pytest.raises(ValueError, match="count_bits"):
            HybridWeightStore(LANES, DEPTH, ONCHIP, sd, addr_bits=8, count_bits=9)
        with pytest.raises(ValueError, match="onchip_words"):
            HybridWeightStore(LANES, DEPTH, 0, sd, addr_bits=8, count_bits=8)
        del sd                         # never elaborated: refused, or built to be refused
        gc.collect()
