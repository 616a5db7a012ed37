"""WeightMemory in Amaranth's simulator: runs of words in request order under gaps and
back-pressure, the sustained rate (N words in N + LATENCY cycles), back-to-back requests
with no gap, the refusal of out-of-range requests and writes (sticky ``error``, nothing
emitted, never wrapped), and the host read path (``host_read=True``: latency, holding, its
arbitration with runs). The long regression is the cocotb bench (test_sim_weights), on the
store without the host read path."""

import random

import pytest
from amaranth.sim import Simulator

from mmfree_hw.weights import WeightMemory


def run_memory(dut, contents, requests, valid_prob=1.0, ready_prob=1.0, seed=0,
               writes=(), settle=30):
    """Fill the memory through ``write`` (``contents``: addr -> word, then ``writes``: extra
    (addr, data) beats, possibly out of range), then stream ``requests`` ((addr, count)).
    Returns (words, log, error after the writes, error at the end)."""
    rng = random.Random(seed)
    n = sum(c for a, c in requests if a + c <= dut.depth)
    out, log, flags = [], {"req": [], "words": []}, {}
    filled = []

    async def bench(ctx):
        edge = 0
        for addr, word in [*contents.items(), *writes]:
            ctx.set(dut.write.valid, 1)
            ctx.set(dut.write.payload, {"addr": addr, "data": word})
            await ctx.tick()
            edge += 1
        ctx.set(dut.write.valid, 0)
        await ctx.tick()
        edge += 1
        flags["after_writes"] = ctx.get(dut.error)
        filled.append(edge)
        for addr, count in requests:
            while rng.random() >= valid_prob:
                ctx.set(dut.req.valid, 0)
                await ctx.tick()
                edge += 1
            ctx.set(dut.req.valid, 1)
            ctx.set(dut.req.payload, {"addr": addr, "count": count})
            while True:
                *_, ready = await ctx.tick().sample(dut.req.ready)
                edge += 1
                if ready:
                    log["req"].append(edge)
                    break
        ctx.set(dut.req.valid, 0)

    async def sink(ctx):
        orng = random.Random(seed + 1)
        edge = 0
        while not filled:
            await ctx.tick()
            edge += 1
        while len(out) < n:
            ready = int(orng.random() < ready_prob)
            ctx.set(dut.words.ready, ready)
            *_, valid, payload = await ctx.tick().sample(dut.words.valid, dut.words.payload)
            edge += 1
            if valid and ready:
                out.append(int(payload))
                log["words"].append(edge)
            assert edge < 100_000, "no progress"
        ctx.set(dut.words.ready, 1)
        for _ in range(settle):
            *_, valid = await ctx.tick().sample(dut.words.valid)
            assert not valid, "an extra word"
        flags["end"] = ctx.get(dut.error)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench, background=True)
    sim.add_testbench(sink)
    sim.run()
    return out, log, flags.get("after_writes"), flags.get("end")


def random_contents(rng, dut):
    return {a: rng.getrandbits(dut.word_bits) for a in range(dut.depth)}


def random_requests(rng, depth, n):
    out = []
    for _ in range(n):
        addr = rng.randrange(depth)
        out.append((addr, rng.randint(0, min(depth - addr, 12))))
    return out


@pytest.mark.parametrize("valid_prob,ready_prob", [(1.0, 1.0), (0.6, 1.0), (1.0, 0.5),
                                                   (0.7, 0.3)])
def test_runs_in_order(valid_prob, ready_prob):
    rng = random.Random(1)
    dut = WeightMemory(lanes=8, depth=40)
    contents = random_contents(rng, dut)
    requests = random_requests(rng, dut.depth, 40) + [(0, 40), (39, 1), (40, 0)]
    out, _, err0, err1 = run_memory(dut, contents, requests, valid_prob, ready_prob, seed=2)
    assert out == [contents[a + i] for a, c in requests for i in range(c)]
    assert (err0, err1) == (0, 0)


def test_sustained_rate_and_latency():
    """Full rate: the first word LATENCY (4) cycles after its request, then one word per
    cycle, across back-to-back requests: N words in N + LATENCY cycles."""
    rng = random.Random(3)
    dut = WeightMemory(lanes=4, depth=64)
    contents = random_contents(rng, dut)
    requests = [(5, 17), (0, 1), (60, 4), (22, 30)]
    out, log, _, _ = run_memory(dut, contents, requests)
    assert out == [contents[a + i] for a, c in requests for i in range(c)]
    words, req = log["words"], log["req"]
    n = len(words)
    assert words[0] - req[0] == WeightMemory.LATENCY
    assert words == list(range(words[0], words[0] + n)), "a gap"
    assert words[-1] - req[0] + 1 == n + WeightMemory.LATENCY
    # each next request is taken at the edge of its predecessor's last read
    assert [b - a for a, b in zip(req, req[1:], strict=False)] == [c for _, c in requests[:-1]]


def test_blocked_words_lose_nothing():
    """words.ready low for long stretches: the FIFO fills, reads pause, nothing is lost."""
    rng = random.Random(4)
    dut = WeightMemory(lanes=4, depth=32)
    contents = random_contents(rng, dut)
    requests = [(0, 32), (3, 9)]
    out, _, _, _ = run_memory(dut, contents, requests, ready_prob=0.1, seed=5)
    assert out == [contents[a + i] for a, c in requests for i in range(c)]


def test_out_of_range_is_refused():
    rng = random.Random(6)
    dut = WeightMemory(lanes=4, depth=20)
    contents = random_contents(rng, dut)
    good = [(0, 3), (17, 3)]
    bad = [(18, 3), (20, 1), (0, 21), ((1 << 24) - 1, 1), (5, (1 << 20) - 1)]
    requests = [good[0], *bad, good[1]]
    out, _, err0, err1 = run_memory(dut, contents, requests)
    assert out == [contents[a + i] for a, c in good for i in range(c)]   # no wrap
    assert (err0, err1) == (0, 1)


def test_out_of_range_write_is_refused():
    rng = random.Random(7)
    dut = WeightMemory(lanes=4, depth=16)
    contents = random_contents(rng, dut)
    # writes to 16 and 16 + 3 would land on 0 and 3 if the address wrapped
    out, _, err0, _ = run_memory(dut, contents, [(0, 16)], writes=[(16, 1), (19, 2)])
    assert out == [contents[a] for a in range(16)]
    assert err0 == 1


def test_host_reads():
    """``host_read=True``: the host's reads (``read_addr`` / ``read_data``, the command
    processor's access-port semantics) return the written words, valid
    ``HOST_READ_LATENCY`` (2) cycles after the address and held until taken; they wait
    while a run's reads are issued (not for its words still in the FIFO), a request
    waits while a host word does, and the runs around them are unaffected."""
    rng = random.Random(8)
    dut = WeightMemory(lanes=4, depth=20, host_read=True)
    contents = random_contents(rng, dut)
    got_words, edge, taken_at = [], [0], []
    lat = WeightMemory.HOST_READ_LATENCY

    async def tick(ctx, *sigs):
        """One edge; the values of ``sigs`` sampled at it."""
        vals = await ctx.tick().sample(*sigs)
        edge[0] += 1
        return tuple(vals)[len(vals) - len(sigs):]

    async def host_read(ctx, addr, hold=0):
        """One read: returns (word, cycles from the address's edge to a valid word); the
        words the sink had when the address was taken in ``taken_at``."""
        ctx.set(dut.read_addr.valid, 1)
        ctx.set(dut.read_addr.payload, addr)
        while True:
            (ready,) = await tick(ctx, dut.read_addr.ready)
            if ready:
                break
        taken_at[:] = [edge[0], len(got_words)]
        ctx.set(dut.read_addr.valid, 0)
        wait = 1
        while not ctx.get(dut.read_data.valid):
            await tick(ctx)
            wait += 1
        word = ctx.get(dut.read_data.payload)
        for _ in range(hold):                     # held while not taken, nothing else read
            assert ctx.get(dut.read_data.valid) and ctx.get(dut.read_data.payload) == word
            assert not ctx.get(dut.read_addr.ready) and not ctx.get(dut.req.ready)
            await tick(ctx)
        ctx.set(dut.read_data.ready, 1)
        await tick(ctx)
        ctx.set(dut.read_data.ready, 0)
        assert not ctx.get(dut.read_data.valid)
        return word, wait

    async def request(ctx, addr, count):
        ctx.set(dut.req.valid, 1)
        ctx.set(dut.req.payload, {"addr": addr, "count": count})
        while True:
            (ready,) = await tick(ctx, dut.req.ready)
            if ready:
                break
        ctx.set(dut.req.valid, 0)

    async def sink(ctx):
        ctx.set(dut.words.ready, 1)
        while True:
            *_, valid, payload = await ctx.tick().sample(dut.words.valid, dut.words.payload)
            if valid:
                got_words.append(int(payload))

    async def bench(ctx):
        for addr, word in contents.items():
            ctx.set(dut.write.valid, 1)
            ctx.set(dut.write.payload, {"addr": addr, "data": word})
            await tick(ctx)
        ctx.set(dut.write.valid, 0)
        # reads in any order, some held for a while
        for i, addr in enumerate([0, 19, 7, 7, 3, *(rng.randrange(20) for _ in range(20))]):
            word, wait = await host_read(ctx, addr, hold=i % 3)
            assert (word, wait) == (contents[addr], lat), (addr, word, wait)
        # a run: host reads wait while its reads are issued, then go while its last words
        # still drain from the FIFO
        await request(ctx, 0, 20)
        start = edge[0]
        word, _ = await host_read(ctx, 11)
        assert word == contents[11]
        # the 20 reads issue in the 20 cycles after the request's edge; the address goes at
        # the end of the next one, with the run's last words still in the FIFO
        assert taken_at[0] - start == 21 and taken_at[1] < 20, taken_at
        # a request offered while a host word waits goes after it is taken
        ctx.set(dut.read_addr.valid, 1)
        ctx.set(dut.read_addr.payload, 5)
        (ready,) = await tick(ctx, dut.read_addr.ready)
        assert ready
        ctx.set(dut.read_addr.valid, 0)
        ctx.set(dut.req.valid, 1)
        ctx.set(dut.req.payload, {"addr": 4, "count": 3})
        for _ in range(5):
            assert not ctx.get(dut.req.ready)
            await tick(ctx)
        assert ctx.get(dut.read_data.valid) and ctx.get(dut.read_data.payload) == contents[5]
        ctx.set(dut.read_data.ready, 1)
        (ready,) = await tick(ctx, dut.req.ready)
        ctx.set(dut.read_data.ready, 0)
        assert not ready
        (ready,) = await tick(ctx, dut.req.ready)
        assert ready
        ctx.set(dut.req.valid, 0)
        # a request and a host read offered together: the request goes first
        ctx.set(dut.req.valid, 1)
        ctx.set(dut.req.payload, {"addr": 17, "count": 3})
        ctx.set(dut.read_addr.valid, 1)
        ctx.set(dut.read_addr.payload, 2)
        while True:                               # (after the run of 4 before it)
            req_ready, addr_ready = await tick(ctx, dut.req.ready, dut.read_addr.ready)
            assert not addr_ready
            if req_ready:
                break
        ctx.set(dut.req.valid, 0)
        ctx.set(dut.read_addr.valid, 0)
        word, _ = await host_read(ctx, 2)
        assert word == contents[2]
        for _ in range(10):
            await tick(ctx)
        assert got_words == [contents[a] for a in [*range(20), 4, 5, 6, 17, 18, 19]]
        assert not ctx.get(dut.error)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(sink, background=True)
    sim.add_testbench(bench)
    sim.run()
