"""cocotb bench: WeightMemory, the on-chip weight store behind the ``req`` / ``words``
stream pair (the interface an SDRAM store will implement too).

The memory is filled through its ``write`` stream with random words (a model, a dict,
says what each address holds), then read by requests ``(addr, count)``; every word
returned is checked against the model, in request order.

Suites (MMF_PARAMS ``suite``):

- ``random``: random runs (counts 0 .. 40, the whole memory, the last word, runs ending at
  the top), rewrites of part of the memory between batches, under one of ``tb.PATTERNS``
  (gaps on ``req``, back-pressure on ``words``); ``error`` stays 0.
- ``timing``: full rate: the first word LATENCY (4) cycles after its request, then one
  word per cycle across back-to-back requests, N words in N + LATENCY cycles (the whole
  memory in one run, and many short runs); ``words.ready`` held low: 4 words wait in the
  FIFO and none is lost when it rises.
- ``refuse``: requests with ``addr + count > depth`` (just past the end, far past, addr
  at depth, huge counts) and writes past the end: nothing emitted for them, nothing
  written, ``error`` set and sticky, the good requests around them unaffected.
"""

import random

import cocotb
from tb import PATTERNS, StreamSink, StreamSource, idle, pack, params, report, start

from mmfree_hw.weights import WeightMemory, request_layout, write_layout


class MemoryTB:
    def __init__(self, dut, p, valid_prob=1.0, ready_prob=1.0, seed=0):
        rng = random.Random(seed)
        self.dut = dut
        self.depth, self.word_bits = p["depth"], 2 * p["lanes"]
        self.addr_bits, self.count_bits = p.get("addr_bits", 24), p.get("count_bits", 20)
        self.data = random.Random(rng.randrange(1 << 30))
        self.write = StreamSource(dut, "write", seed=rng.randrange(1 << 30))
        self.req = StreamSource(dut, "req", valid_prob, seed=rng.randrange(1 << 30))
        self.sink = StreamSink(dut, "words", ready_prob, seed=rng.randrange(1 << 30))
        self.model: dict[int, int] = {}
        self.checked = 0

    async def fill(self, addrs, valid_prob: float = 1.0):
        """Write random words at ``addrs`` (out-of-range ones are expected to be refused)."""
        self.write.valid_prob = valid_prob
        layout = write_layout(self.word_bits, self.addr_bits)
        beats = []
        for a in addrs:
            word = self.data.getrandbits(self.word_bits)
            beats.append(pack(layout, addr=a, data=word))
            if a < self.depth:
                self.model[a] = word
        await self.write.send(beats)

    async def read(self, requests) -> int:
        """Issue ``requests``; check the words of the in-range ones, and that the others
        emit nothing."""
        first = len(self.sink.beats)
        layout = request_layout(self.addr_bits, self.count_bits)
        cocotb.start_soon(self.req.send([pack(layout, addr=a, count=c) for a, c in requests]))
        want = [self.model[a + i] for a, c in requests if a + c <= self.depth
                for i in range(c)]
        await self.sink.expect_no_more(first + len(want), 30)
        got = self.sink.beats[first:]
        bad = [i for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w]
        assert not bad, f"{len(bad)} of {len(want)} words wrong, first at {bad[0]}"
        self.checked += len(want)
        return len(want)

    def error(self) -> int:
        return int(self.dut.error.value)


def random_requests(rng: random.Random, depth: int, n: int):
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.05:
            out.append((0, depth))
        elif r < 0.1:
            out.append((depth - 1, 1))
        elif r < 0.15:
            c = rng.randint(1, min(depth, 40))
            out.append((depth - c, c))
        else:
            a = rng.randrange(depth)
            out.append((a, rng.randint(0, min(depth - a, 40))))
    return out


async def suite_random(dut, p):
    pattern = p.get("pattern", "both")
    valid_prob, ready_prob = PATTERNS[pattern]
    rng = random.Random(p.get("seed", 0))
    depth = p["depth"]
    tb = MemoryTB(dut, p, valid_prob, ready_prob, p.get("seed", 0))
    await tb.fill(range(depth), valid_prob)
    n = 0
    for _ in range(p.get("batches", 3)):
        n += await tb.read(random_requests(rng, depth, p["requests"]))
        lo = rng.randrange(depth)
        await tb.fill(range(lo, min(depth, lo + rng.randint(1, 50))), valid_prob)   # rewrite
    assert tb.error() == 0
    report(dut, "weights", n, f"words, depth={depth}, lanes={p['lanes']}, {pattern}")


async def suite_timing(dut, p):
    depth, latency = p["depth"], WeightMemory.LATENCY
    rng = random.Random(p.get("seed", 0))
    tb = MemoryTB(dut, p)
    await tb.fill(range(depth))
    figures = []
    for requests in ([(0, depth)], [(3, 1)], [(rng.randrange(depth - 20), rng.randint(1, 20))
                                              for _ in range(30)]):
        r0, w0 = len(tb.req.accepted), len(tb.sink.monitor.transfers)
        await tb.read(requests)
        req, words = tb.req.accepted[r0:], tb.sink.monitor.transfers[w0:]
        n = len(words)
        assert words[0] - req[0] == latency, words[0] - req[0]
        assert words == list(range(words[0], words[0] + n)), "a gap in the words"
        assert words[-1] - req[0] + 1 == n + latency
        assert [b - a for a, b in zip(req, req[1:], strict=False)] == \
            [c for _, c in requests[:-1]]
        figures.append((len(requests), n, words[-1] - req[0] + 1))

    # words.ready held low: the FIFO fills, reads stop, nothing is lost.
    tb.sink.ready_prob = 0.0
    w0 = len(tb.sink.beats)
    reading = cocotb.start_soon(tb.read([(0, 50)]))
    await idle(dut, 40)
    stalled = len(tb.sink.beats) - w0
    tb.sink.ready_prob = 1.0
    await reading
    dut._log.info("weights timing (requests, words, cycles from first request to last "
                  "word): %s; nothing lost with words blocked (%d taken meanwhile)",
                  figures, stalled)
    assert stalled == 0
    report(dut, "weights", tb.checked, f"timing, depth={depth}, lanes={p['lanes']}")


async def suite_refuse(dut, p):
    depth = p["depth"]
    amax, cmax = (1 << p.get("addr_bits", 24)) - 1, (1 << p.get("count_bits", 20)) - 1
    tb = MemoryTB(dut, p)
    await tb.fill(range(depth))
    await tb.read([(0, depth)])
    assert tb.error() == 0
    # Refused requests between good ones: only the good ones' words come (never wrapped).
    bad = [(depth - 2, 3), (depth, 1), (0, depth + 1), (amax, 1), (1, cmax), (amax, cmax)]
    assert all(a + c > depth for a, c in bad)
    good = [(0, 5), (depth - 1, 1), (depth, 0), (7, 3)]
    await tb.read([good[0], bad[0], good[1], *bad[1:4], good[2], bad[4], good[3], bad[5]])
    assert tb.error() == 1, "a refused request did not set error"
    await tb.read(good)
    assert tb.error() == 1, "error is sticky"
    # Reset clears it (the memory keeps its words); writes past the end set it again and
    # write nothing (the words they would wrap onto are unchanged).
    dut.rst.value = 1
    await idle(dut, 2)
    dut.rst.value = 0
    await idle(dut, 1)
    assert tb.error() == 0, "reset clears error"
    await tb.fill([depth, depth + 3, amax])
    await idle(dut, 2)
    assert tb.error() == 1, "an out-of-range write did not set error"
    await tb.read([(0, depth)])
    dut._log.info("weights: %d refused requests and 3 refused writes emitted and wrote "
                  "nothing; error set, held, cleared by reset only", len(bad))
    report(dut, "weights", tb.checked, f"refusals, depth={depth}")


@cocotb.test()
async def weights(dut):
    p = params()
    await start(dut)
    suites = {"random": suite_random, "timing": suite_timing, "refuse": suite_refuse}
    await suites[p.get("suite", "random")](dut, p)
