"""Test-only weight stores: :class:`SlowWeights`, a component between ``WeightMemory`` and
the core that makes the on-chip store look like a slow, gappy memory (an SDRAM behind a
controller: a long latency per request, words that come with holes), so the core's tests
can check that the ``weight_req`` / ``weight_words`` interface tolerates both.
"""

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from mmfree_hw.weights import request_layout


class SlowWeights(wiring.Component):
    """Delays each request and punches holes in the word stream.

    Ports: ``req`` (In, from the core) and ``words`` (Out, to the core); ``mem_req`` (Out,
    to the store) and ``mem_words`` (In, from it); ``stall`` (In: hold the word stream in
    this cycle, for a testbench); ``gaps`` (Out, 32 bits: cycles in which a word was
    there and its consumer ready, but the stub held it back).

    - Requests: one at a time. A request taken at an edge is offered on ``mem_req``
      ``latency`` cycles later (``latency`` = 0: the next cycle) and held until the store
      takes it; ``req.ready`` is low from the edge that took a request until the edge its
      copy went to the store. So every run's first word comes ``latency`` + 1 cycles later
      than straight from the store, unless the request was waiting anyway (the store
      takes the next request only at the end of the current run: a request issued early
      enough hides the latency).
    - Words: ``words`` = ``mem_words`` except in a stall cycle, where ``words.valid`` and
      ``mem_words.ready`` are both low (a hole; the store's word waits, nothing is lost).
      A cycle stalls when ``stall`` is high, or, with ``gap_per_256`` > 0, when the low 8
      bits of a 16-bit Fibonacci LFSR (taps 16, 14, 13, 11; seeded with ``seed``, stepped
      every cycle) are below ``gap_per_256``: a hole in about ``gap_per_256``/256 of the
      cycles, the same holes on every run of the simulation.
    """

    def __init__(self, word_bits: int, addr_bits: int, count_bits: int, latency: int = 0,
                 gap_per_256: int = 0, seed: int = 0xACE1):
        if not 0 <= gap_per_256 < 256:
            raise ValueError("gap_per_256 must be in 0 .. 255")
        if not 0 < seed < 1 << 16:
            raise ValueError("the LFSR seed must be a nonzero 16-bit value")
        self.latency, self.gap_per_256, self.seed = latency, gap_per_256, seed
        layout = request_layout(addr_bits, count_bits)
        super().__init__({
            "req": In(stream.Signature(layout)),
            "words": Out(stream.Signature(word_bits)),
            "mem_req": Out(stream.Signature(layout)),
            "mem_words": In(stream.Signature(word_bits)),
            "stall": In(1),
            "gaps": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        held = Signal()
        wait = Signal(range(self.latency + 1))
        m.d.comb += [self.req.ready.eq(~held),
                     self.mem_req.valid.eq(held & (wait == 0))]
        with m.If(self.req.valid & self.req.ready):
            m.d.sync += [held.eq(1), wait.eq(self.latency),
                         self.mem_req.payload.eq(self.req.payload)]
        with m.Else():
            with m.If(wait != 0):
                m.d.sync += wait.eq(wait - 1)
            with m.If(self.mem_req.valid & self.mem_req.ready):
                m.d.sync += held.eq(0)

        lfsr = Signal(16, init=self.seed)
        m.d.sync += lfsr.eq((lfsr << 1) | (lfsr[15] ^ lfsr[13] ^ lfsr[12] ^ lfsr[10]))
        hole = Signal()
        m.d.comb += hole.eq(self.stall | (lfsr[:8] < self.gap_per_256))
        m.d.comb += [self.words.valid.eq(self.mem_words.valid & ~hole),
                     self.words.payload.eq(self.mem_words.payload),
                     self.mem_words.ready.eq(self.words.ready & ~hole)]
        with m.If(hole & self.mem_words.valid & self.words.ready):
            m.d.sync += self.gaps.eq(self.gaps + 1)
        return m
