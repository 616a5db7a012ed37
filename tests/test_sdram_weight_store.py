"""SdramWeightStore in Amaranth's simulator against a behavioural native port (in order,
a random read latency and random command back-pressure, read data pushed whatever
``rdata.ready`` says, as LiteDRAM's port does): host writes and reads, runs in request
order under consumer back-pressure, hits (a run that starts where the last ended) and
misses, the read-ahead bounded by the FIFO (a beat with no room would be lost: checked at
every return), refused requests and writes, and the counters. The controller and the
timing-checked chip model run in test_sdram_controller and the whole-token tests."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from mmfree_fpga import numerics as N
from mmfree_hw.sdram.weight_store import SdramWeightStore


class NativePort:
    """The memory behind the port: a dict of beats, commands taken with probability
    ``cmd_prob``, read data returned ``latency`` .. ``latency + jitter`` cycles later but
    never out of order, write data taken with probability ``wdata_prob``."""

    def __init__(self, dut, rng, cmd_prob=0.8, wdata_prob=0.7, latency=6, jitter=4):
        self.dut, self.rng = dut, rng
        self.cmd_prob, self.wdata_prob = cmd_prob, wdata_prob
        self.latency, self.jitter = latency, jitter
        self.mem = {}
        self.reads = 0            # read commands taken
        self.max_inflight = 0

    async def process(self, ctx):
        dut, rng = self.dut, self.rng
        pending_w = []            # write commands awaiting data
        returns = []              # (due cycle, data)
        cycle = 0
        while True:
            c_ready = int(rng.random() < self.cmd_prob)
            w_ready = int(bool(pending_w) and rng.random() < self.wdata_prob)
            ctx.set(dut.cmd.ready, c_ready)
            ctx.set(dut.wdata.ready, w_ready)
            due = returns and returns[0][0] <= cycle
            ctx.set(dut.rdata.valid, int(bool(due)))
            if due:
                ctx.set(dut.rdata.payload, returns[0][1])
            *_, cv, cp, wv, wp, rr = await ctx.tick().sample(
                dut.cmd.valid, dut.cmd.payload, dut.wdata.valid, dut.wdata.payload,
                dut.rdata.ready)
            if due:
                assert rr, "rdata.ready low while a beat returned"
                returns.pop(0)
            if cv and c_ready:
                addr = int(cp.addr)
                if cp.we:
                    pending_w.append(addr)
                else:
                    self.reads += 1
                    t = max(cycle + self.latency + rng.randrange(self.jitter + 1),
                            returns[-1][0] if returns else 0)
                    returns.append((t, self.mem.get(addr, 0xDEAD)))
            if wv and w_ready:
                assert int(wp.we) == 3
                self.mem[pending_w.pop(0)] = int(wp.data)
            self.max_inflight = max(self.max_inflight, len(returns))
            cycle += 1


async def put(ctx, stream, payload):
    """One beat on an In stream of the DUT, held until taken."""
    ctx.set(stream.valid, 1)
    ctx.set(stream.payload, payload)
    while not (await ctx.tick().sample(stream.ready))[-1]:
        pass
    ctx.set(stream.valid, 0)


async def host_writes(ctx, write, items):
    """``(addr, data)`` writes through a ``mem_access_signature`` write stream."""
    for addr, data in items:
        await put(ctx, write, {"addr": addr, "data": data})


async def host_reads(ctx, read_addr, read_data, addrs, out):
    """One read at a time, as the command processor reads: the words go to ``out``."""
    for addr in addrs:
        await put(ctx, read_addr, addr)
        ctx.set(read_data.ready, 1)
        while True:
            *_, valid, data = await ctx.tick().sample(read_data.valid, read_data.payload)
            if valid:
                out.append(int(data))
                break
        ctx.set(read_data.ready, 0)


async def send_requests(ctx, req, requests, rng, gaps=True):
    """Weight requests, a random gap after each unless ``gaps`` is false; an entry
    ``("wait", n)`` waits n cycles."""
    for addr, count in requests:
        if isinstance(addr, str):
            for _ in range(count):
                await ctx.tick()
            continue
        await put(ctx, req, {"addr": addr, "count": count})
        if gaps:
            for _ in range(rng.randrange(3) * rng.randrange(40)):
                await ctx.tick()


async def take_words(ctx, words, n, out, rng, ready_prob=1.0, cycles=None, settle=60):
    """``n`` words from an Out stream with random back-pressure, then ``settle`` cycles in
    which no extra word may come; ``cycles``: a list for the cycle each word came."""
    t = 0
    while len(out) < n:
        ready = int(rng.random() < ready_prob)
        ctx.set(words.ready, ready)
        *_, valid, payload = await ctx.tick().sample(words.valid, words.payload)
        if valid and ready:
            out.append(int(payload))
            if cycles is not None:
                cycles.append(t)
        t += 1
        assert t < 200_000, "no progress"
    ctx.set(words.ready, 1)
    for _ in range(settle):
        *_, valid = await ctx.tick().sample(words.valid)
        assert not valid, "an extra word"


def run_store(dut, words, requests, host_reads_=(), seed=0, ready_prob=1.0, **port_args):
    rng = random.Random(seed)
    port = NativePort(dut, random.Random(seed + 7), **port_args)
    n = sum(c for a, c in requests if a + c <= dut.depth)
    out, host_out, marks = [], [], {}

    async def host(ctx):
        await host_writes(ctx, dut.write, words.items())
        await host_reads(ctx, dut.read_addr, dut.read_data, host_reads_, host_out)
        marks["filled"] = True
        ctx.set(dut.count_en, 1)
        await send_requests(ctx, dut.req, requests, rng)

    async def sink(ctx):
        while "filled" not in marks:
            await ctx.tick()
        await take_words(ctx, dut.words, n, out, random.Random(seed + 1), ready_prob)
        marks["beats"] = ctx.get(dut.beats)
        marks["misses"] = ctx.get(dut.misses)
        marks["error"] = ctx.get(dut.error)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(port.process, background=True)
    sim.add_testbench(host)
    sim.add_testbench(sink)
    sim.run()
    return out, host_out, marks, port


def expected(words, requests, depth):
    return [words.get(a, None) for addr, count in requests if addr + count <= depth
            for a in range(addr, addr + count)]


@pytest.mark.parametrize("lanes,prefetch,seed,packing", [
    (16, 2, 0, 0), (16, 5, 1, 0), (64, 8, 2, 0), (64, 3, 3, 0), (40, 3, 4, 1), (16, 6, 5, 1)])
def test_runs_in_order_with_hits_and_misses(lanes, prefetch, seed, packing):
    rng = random.Random(seed)
    depth = 48
    dut = SdramWeightStore(lanes, depth, addr_bits=8, count_bits=8, mem_addr_bits=12,
                           prefetch_words=prefetch, base=5, packing=packing)
    words = {a: random_code_word(rng, lanes) for a in range(depth)}
    # contiguous runs (hits) broken by jumps (misses), like a program's token after token
    requests = [(0, 5), (5, 3), (8, 10), (18, 1), (19, 29), (0, 4), (4, 4), (30, 6),
                (36, 2), (0, 48), (10, 2)]
    out, _, marks, port = run_store(dut, words, requests, seed=seed, ready_prob=0.6)
    assert out == expected(words, requests, depth)
    # each jump restarts the stream once: the first request, 30, 0 (twice) and 10
    assert marks["misses"] == 5
    assert not marks["error"]
    # the read-ahead never has more beats out than the FIFO can take
    assert port.max_inflight <= prefetch * dut.beats_per_word


def random_code_word(rng, lanes):
    """A word of valid 2-bit codes (0b10 never: the base-3 store packs it as zero)."""
    return sum(rng.choice((N.CODE_ZERO, N.CODE_POS, N.CODE_NEG)) << (2 * i)
               for i in range(lanes))


@pytest.mark.parametrize("lanes,packing", [(32, 0), (32, 1), (40, 1), (128, 1)])
def test_host_write_and_read_back(lanes, packing):
    rng = random.Random(5)
    depth = 20
    dut = SdramWeightStore(lanes, depth, addr_bits=6, count_bits=6, mem_addr_bits=12,
                           prefetch_words=4, packing=packing)
    words = {a: random_code_word(rng, lanes) for a in range(depth)}
    reads = [3, 0, 19, 7, 7]
    out, host_out, marks, port = run_store(dut, words, [(2, 6), (8, 4)], host_reads_=reads)
    assert host_out == [words[a] for a in reads]
    assert out == expected(words, [(2, 6), (8, 4)], depth)
    # in memory a word is the numerics' layout of it, beat 0 at its base address
    beats = dut.beats_per_word
    for a, w in words.items():
        stored = np.array([port.mem[a * beats + i] for i in range(beats)], dtype="<u2")
        codes = np.array([(w >> (2 * i)) & 3 for i in range(lanes)], dtype=np.uint8)
        if packing:
            want = N.pack_words_base3(codes[None, :], lanes)
        else:
            want = N.pack_code_bytes(codes[None, :]).reshape(-1)
        assert stored.view(np.uint8).tolist() == want.tolist()


def test_refusals_set_error_and_emit_nothing():
    rng = random.Random(9)
    lanes, depth = 16, 16
    dut = SdramWeightStore(lanes, depth, addr_bits=6, count_bits=6, mem_addr_bits=10,
                           prefetch_words=4)
    words = {a: rng.getrandbits(2 * lanes) for a in range(depth)}
    requests = [(0, 4), (14, 3), (4, 0), (4, 4)]
    out, _, marks, _ = run_store(dut, words, requests)
    assert out == expected(words, requests, depth)
    assert marks["error"]


def test_streaming_rate_is_the_ports():
    """No back-pressure anywhere, a fixed latency: a long run moves a beat every cycle
    after the first, so N words take N x beats_per_word + the pipeline's cycles."""
    lanes, depth = 16, 64
    dut = SdramWeightStore(lanes, depth, addr_bits=8, count_bits=8, mem_addr_bits=12,
                           prefetch_words=8)
    words = {a: a * 0x01010101 for a in range(depth)}
    out, _, marks, port = run_store(dut, words, [(0, 64)], cmd_prob=1.0, jitter=0)
    assert out == [words[a] for a in range(64)]
    assert marks["misses"] == 1
    # every read the port took returned and was counted; read-ahead past the run included
    assert marks["beats"] == port.reads >= 64 * dut.beats_per_word


def test_embedding_rows_pause_the_read_ahead():
    """The embedding after the weights: host writes and reads of entries, and the core's
    rows fetched while a run's words are still owed (the read-ahead pauses, then resumes
    where it stopped: the run has a single miss)."""
    rng = random.Random(11)
    lanes, depth, ne = 16, 40, 48
    dut = SdramWeightStore(lanes, depth, addr_bits=6, count_bits=7, mem_addr_bits=10,
                           prefetch_words=4, embed_words=ne, embed_addr_bits=6,
                           embed_count_bits=6)
    words = {a: random_code_word(rng, lanes) for a in range(depth)}
    entries = [rng.getrandbits(16) for _ in range(ne)]
    port = NativePort(dut, random.Random(3))
    rows = [(10, 8), (0, 1), (40, 8), (47, 1)]
    got, host_got, row_got, marks = [], [], [], {}

    async def host(ctx):
        await host_writes(ctx, dut.write, words.items())
        await host_writes(ctx, dut.embed_write, enumerate(entries))
        await host_reads(ctx, dut.embed_read_addr, dut.embed_read_data, (5, 0, 47, 5),
                         host_got)
        marks["filled"] = True
        ctx.set(dut.count_en, 1)
        await put(ctx, dut.req, {"addr": 0, "count": 40})
        for addr, count in rows:
            for _ in range(rng.randrange(30)):
                await ctx.tick()
            await put(ctx, dut.embed_req, {"addr": addr, "count": count})

    async def rows_sink(ctx):
        while len(row_got) < sum(c for _, c in rows):
            *_, v, d = await ctx.tick().sample(dut.embed_data.valid, dut.embed_data.payload)
            if v:
                row_got.append(int(d))

    async def sink(ctx):
        while "filled" not in marks:
            await ctx.tick()
        # slow: rows arrive while words are owed
        await take_words(ctx, dut.words, depth, got, random.Random(2), ready_prob=0.3)
        for _ in range(300):
            await ctx.tick()
        marks["misses"] = ctx.get(dut.misses)
        marks["error"] = ctx.get(dut.error)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(port.process, background=True)
    sim.add_testbench(host)
    sim.add_testbench(rows_sink, background=True)
    sim.add_testbench(sink)
    sim.run()
    assert host_got == [entries[a] for a in (5, 0, 47, 5)]
    assert got == [words[a] for a in range(depth)]
    assert row_got == [entries[a] for addr, count in rows for a in range(addr, addr + count)]
    assert marks["misses"] == 1 and not marks["error"]     # the run's first word only
    # every entry is its own beat, after the weights' beats
    for a, e in enumerate(entries):
        assert port.mem[dut.embed_base + a] == e


@pytest.mark.parametrize("pattern,misses", [
    ([(0, 10), (10, 6), (16, 8)], 2),           # a token's weights, token after token:
    ([(4, 10), (14, 6)], 2),                    # the cold start and the lesson only
    ([(0, 10), (20, 5)], 8),                    # two jumps a loop: one register, thrashes
    ([(0, 6), (6, 2), (0, 6), (6, 2), (8, 4)], None)])
def test_the_read_ahead_learns_the_loop(pattern, misses):
    """A miss teaches the read-ahead its jump (where the stream ended, where it went on);
    at the next pass it jumps there by itself, so the next loop's words are prefetched
    and its first request is a hit. Every word stays in order whatever the guess."""
    rng = random.Random(len(pattern))
    lanes, depth = 16, 32
    dut = SdramWeightStore(lanes, depth, addr_bits=6, count_bits=6, mem_addr_bits=10,
                           prefetch_words=6)
    words = {a: random_code_word(rng, lanes) for a in range(depth)}
    requests = pattern * 4
    out, _, marks, _ = run_store(dut, words, requests, seed=3, ready_prob=0.7)
    assert out == expected(words, requests, depth)
    if misses is not None:
        assert marks["misses"] == misses


def test_requests_a_loop_ahead_of_the_stream_wait_for_its_jump():
    """With a slow consumer, the requests run a whole loop ahead of the read-ahead: the
    jump for the first is pending when the second loop's first request comes. That one
    waits for the jump (one is kept), so the stream never goes on linearly at the
    source while a request for the jump's target was taken (it did, once: wrong words)."""
    rng = random.Random(5)
    lanes, depth = 16, 32
    dut = SdramWeightStore(lanes, depth, addr_bits=6, count_bits=6, mem_addr_bits=10,
                           prefetch_words=6)
    words = {a: random_code_word(rng, lanes) for a in range(depth)}
    requests = [(4, 10), (14, 6)] * 6
    for seed in range(4):
        out, _, marks, _ = run_store(dut, words, requests, seed=seed, ready_prob=0.2)
        assert out == expected(words, requests, depth)
        assert marks["misses"] == 2 and not marks["error"]
