"""The result unit: the k largest logits of a vector and their token ids, largest first,
ties to the lower id: ``golden.topk(logits, k)``. k = 1 is argmax.
"""

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for

from mmfree_fpga import numerics as N

from .pipeline import X


class Logit(data.Struct):
    """One element of a logit vector; ``last`` marks the vector's final element."""

    logit: X
    last: unsigned(1)


def topk_cfg_layout(max_k: int = 64) -> data.StructLayout:
    """The per-vector configuration of :class:`TopK`: ``k``, how many candidates."""
    return data.StructLayout({"k": unsigned(bits_for(max_k))})


def candidate_layout(id_bits: int = 16) -> data.StructLayout:
    """One result: the token ``id`` (the element's position in its vector), its ``logit``,
    and ``last`` on the vector's final candidate."""
    return data.StructLayout({"id": unsigned(id_bits), "logit": X, "last": unsigned(1)})


class TopK(wiring.Component):
    """``golden.topk(logits, k)`` over a stream of logits, one element per cycle.

    Ports:

    - ``cfg``: In stream of :func:`topk_cfg_layout`, one beat per vector, taken while the
      insertion array is free (before the vector's first element): ``k``. The unit returns
      ``min(k, max_k, length)`` candidates: k greater than the vector's length gives all
      of its elements, sorted (``golden.topk`` refuses that case; the compiler never
      asks for it); k = 0 consumes the vector and returns nothing.
    - ``i``: In stream of :class:`Logit` (X, and ``last`` on the final element). Element j
      of a vector has token id j; a vector may hold up to 2^id_bits elements (ids are taken
      mod 2^id_bits beyond: the order stays right, the ids wrap).
    - ``o``: Out stream of :func:`candidate_layout`: (id, logit), largest logit first, equal
      logits in increasing id, ``last`` on the final candidate.

    Insertion: an array of ``max_k`` cells holding (valid, logit, id), sorted, valid cells
    first. An accepted element waits one cycle in a register ``x`` that drives every cell;
    then all cells compare it with their own value in parallel, and at the same edge cell
    c takes cell c - 1's value if x beat cell c - 1, else x if x beats cell c, else keeps
    its own: the tail moves down one cell, the smallest of max_k + 1 falls off the end.
    "Beats" is strictly greater (every stored element came earlier, so has the lower id,
    and stays in front of an equal newcomer), an empty cell is beaten by any element. No
    comparison result travels further than the next cell, so the path is, whatever
    ``max_k``, x's fan-out, one carry chain and a 2:1 mux into a clock-enabled flip-flop;
    the next element compares against the updated array, so there is no hazard. The
    compare is a subtraction of 34-bit unsigned keys (logit ^ 2^31, then two class bits:
    a valid cell 0b10, an empty one 0b01; x 0b10, or 0b00 when no element is there) whose
    borrow is the result, valid bits included in the one carry chain (Yosys maps a ``>``
    with ~60 more LUT4 per cell).

    Read-out, a shift through the same muxes: after the last element, every cell takes
    its predecessor's value for ``max_k`` cycles, so ranks max_k - 1, ..., 1, 0 pass the
    tail cell; ranks kk - 1 .. 0 are written into a max_k-entry result memory (distributed
    RAM) at their rank, which is then read in order 0, 1, ... into a 4-entry ``SyncFIFO``
    that drives ``o``. Reads are issued only while the FIFO has room for them and the one
    in flight (counted from registers), so ``o.ready`` reaches only the FIFO's read side.
    (Shifting toward cell 0 would need a second mux input in every cell: 14,199 LUT4 at
    max_k = 64, 83 MHz, in a first version; a max_k-way read mux on the cells 7,673; this
    way 3,506.)

    Pipelined across vectors: the next ``cfg`` beat is taken as soon as the shift is done
    (kk = 0: as soon as the last element is in), and the next vector loads while the
    candidates leave the result memory; its own shift waits until they all have.

    Latency: ``LATENCY`` = max_k + 4: the first candidate is valid max_k + 4 cycles after
    the cycle whose edge accepted the vector's last element (x, insertion, max_k shift
    cycles, the memory read, the FIFO); 68 at max_k = 64.
    Throughput: one element per cycle (``i.ready`` is high from the cycle after the ``cfg``
    beat until the last element), one candidate per cycle out while ``o.ready`` is high.
    With no gaps and no back-pressure a vector of n elements takes n + max_k + 2 cycles
    from ``cfg`` beat to ``cfg`` beat (n + 2 for k = 0; ``CYCLES_PER_VECTOR_EXTRA`` =
    max_k + 2): at vocabulary 4096 and max_k = 64, 1.6 % over one logit per cycle.

    Resources: per cell 1 + 32 + id_bits flip-flops (49 at id_bits = 16: 3,136 for
    max_k = 64, the 64 x 48 bits of state plus valid bits), a 34-bit subtractor (a carry
    chain) and a 2:1 mux per bit; x, the result memory (max_k x (32 + id_bits) bits) and
    the FIFO in distributed RAM, counters. No block RAM, no multiplier. ECP5-85F (Yosys 0.70
    synth_ecp5, nextpnr speed 6, bitstreams/ooc.py's harness; max_k = 64, id_bits = 16):
    3,506 LUT4, 1,180 CCU2C, 3,303 FF, 125.6 MHz. The critical path is x's fan-out to the
    64 comparators (3.2 of 8.0 ns routing), its carry chain (1.7 ns) and the clock enable;
    the systolic form (x travelling one cell per cycle beside a second register per cell)
    would remove the fan-out for ~3,100 more flip-flops and 2:1 muxes.
    """

    FIFO_DEPTH = 4

    def __init__(self, max_k: int = 64, id_bits: int = 16):
        if max_k < 1:
            raise ValueError("max_k must be >= 1")
        self.max_k, self.id_bits = max_k, id_bits
        self.LATENCY = max_k + 4
        self.CYCLES_PER_VECTOR_EXTRA = max_k + 2
        self.candidate = candidate_layout(id_bits)
        super().__init__({
            "cfg": In(stream.Signature(topk_cfg_layout(max_k))),
            "i": In(stream.Signature(Logit)),
            "o": Out(stream.Signature(self.candidate)),
        })

    def elaborate(self, platform):
        m = Module()
        cells = self.max_k
        entry = self.id_bits + N.X_BITS                  # (id, logit) in the memory

        valid = [Signal(name=f"valid{c}") for c in range(cells)]
        logit = [Signal(X, name=f"logit{c}", reset_less=True) for c in range(cells)]
        ident = [Signal(self.id_bits, name=f"id{c}", reset_less=True) for c in range(cells)]

        count = Signal(self.id_bits)                 # the next element's id
        seen = Signal(range(cells + 1))              # elements so far, saturating at max_k
        k_eff = Signal(range(cells + 1))             # min(k, max_k)
        accept = self.i.valid & self.i.ready
        with m.If(accept):
            m.d.sync += count.eq(count + 1)
            with m.If(seen != cells):
                m.d.sync += seen.eq(seen + 1)

        x_valid = Signal()
        x_logit = Signal(X, reset_less=True)
        x_id = Signal(self.id_bits, reset_less=True)
        m.d.sync += [x_valid.eq(accept), x_logit.eq(self.i.payload.logit), x_id.eq(count)]

        # -- the cells: insert x, or (read-out) all take their predecessor's value ----------
        shift_all = Signal()
        bias = 1 << (N.X_BITS - 1)
        x_key = Cat(x_logit.as_unsigned() ^ bias, Const(0, 1), x_valid)
        gt = [Signal(name=f"gt{c}") for c in range(cells)]
        for c in range(cells):
            c_key = Cat(logit[c].as_unsigned() ^ bias, ~valid[c], valid[c])
            diff = Signal(signed(len(c_key) + 1), name=f"diff{c}")
            m.d.comb += [diff.eq(c_key - x_key), gt[c].eq(diff[-1])]   # borrow: x > cell
            with m.If(gt[c] | shift_all):
                if c == 0:
                    m.d.sync += [valid[c].eq(x_valid), logit[c].eq(x_logit),
                                 ident[c].eq(x_id)]
                else:                    # valid bits move with the values
                    prev = gt[c - 1] | shift_all
                    m.d.sync += [valid[c].eq(Mux(prev, valid[c - 1], x_valid)),
                                 logit[c].eq(Mux(prev, logit[c - 1], x_logit)),
                                 ident[c].eq(Mux(prev, ident[c - 1], x_id))]

        # -- control: one flip-flop per phase, so both ready outputs come from flip-flops --
        idle, loading = Signal(init=1), Signal()
        finishing, shifting, reading = Signal(), Signal(), Signal()
        clear = Signal()
        kk = Signal(range(cells + 1))                # candidates of the vector
        rank = Signal(range(max(2, cells)))          # the rank at the tail cell
        k = self.cfg.payload.k
        m.d.comb += [self.cfg.ready.eq(idle), self.i.ready.eq(loading),
                     clear.eq(self.cfg.valid & idle), shift_all.eq(shifting)]
        with m.If(clear):
            m.d.sync += [idle.eq(0), loading.eq(1), count.eq(0), seen.eq(0),
                         k_eff.eq(Mux(k > cells, cells, k))]
            m.d.sync += [v.eq(0) for v in valid]
        with m.If(accept & self.i.payload.last):
            m.d.sync += [loading.eq(0), finishing.eq(1)]
        with m.If(finishing):                        # x holds the last element, then none
            m.d.sync += kk.eq(Mux(k_eff < seen, k_eff, seen))
            with m.If((k_eff == 0) | (seen == 0)):
                m.d.sync += [finishing.eq(0), idle.eq(1)]
            with m.Elif(~reading):                   # the result memory is free
                m.d.sync += [finishing.eq(0), shifting.eq(1), rank.eq(cells - 1)]

        m.submodules.results = mem = memory.Memory(shape=entry, depth=cells, init=[])
        wr = mem.write_port()
        rd = mem.read_port(domain="sync")
        m.d.comb += [wr.addr.eq(rank), wr.data.eq(Cat(ident[-1], logit[-1])),
                     wr.en.eq(shifting & (rank < kk))]
        with m.If(shifting):
            m.d.sync += rank.eq(rank - 1)
            with m.If(rank == 0):
                m.d.sync += [shifting.eq(0), idle.eq(1), reading.eq(1)]

        # -- results: memory -> FIFO -> o, reads issued while the FIFO has room ------------
        m.submodules.fifo = fifo = SyncFIFO(width=self.candidate.size, depth=self.FIFO_DEPTH)
        rd_addr = Signal(range(max(2, cells)))
        to_issue = Signal(range(cells + 1))
        a_valid, a_last = Signal(), Signal()         # a read in flight
        issue = Signal()
        m.d.comb += [issue.eq(reading & (fifo.level + a_valid < self.FIFO_DEPTH)),
                     rd.addr.eq(rd_addr), rd.en.eq(issue)]
        with m.If(shifting & (rank == 0)):
            m.d.sync += [rd_addr.eq(0), to_issue.eq(kk)]
        with m.If(issue):
            m.d.sync += [rd_addr.eq(rd_addr + 1), to_issue.eq(to_issue - 1)]
            with m.If(to_issue == 1):
                m.d.sync += reading.eq(0)
        m.d.sync += [a_valid.eq(issue), a_last.eq(to_issue == 1)]
        m.d.comb += [
            fifo.w_en.eq(a_valid),
            fifo.w_data.eq(Cat(rd.data, a_last)),
            self.o.valid.eq(fifo.r_rdy),
            self.o.payload.eq(fifo.r_data),
            fifo.r_en.eq(self.o.ready),
        ]
        return m
