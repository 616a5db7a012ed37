"""Adapters between the engine's lanes-wide accumulator beats and the one-value-per-beat
units: :class:`LaneSerializer`, and the :class:`RegisterSlice` it (and other joins of the
core) use so that no ``ready`` ripples combinationally from one unit into the next.
"""

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from mmfree_fpga import numerics as N

from .engine import ACC, LaneArray


class RegisterSlice(wiring.Component):
    """A two-entry register slice (skid buffer) on a stream of ``shape``.

    Ports: ``i`` (In stream), ``o`` (Out stream), ``ready_next`` (Out: the value ``i.ready``
    will have in the next cycle, for a parent that must decide one cycle ahead, as
    :class:`LaneSerializer` does).
    Both directions are registered: ``o.valid``/``o.payload`` are flip-flops, and
    ``i.ready`` is the inverted "skid holds a beat" flip-flop, so ``o.ready`` reaches only
    this slice's own registers (its output and skid registers' enables and ``ready``'s D
    input), never upstream logic.
    Latency: 1 cycle (a beat taken at an edge is on ``o`` in the next cycle).
    Throughput: one beat per cycle; ``o.ready`` low for one cycle parks the next beat in the
    skid register and lowers ``i.ready`` one cycle later.
    Resources: 2 x width data flip-flops, 2 valid flip-flops, a width-bit 2:1 mux.
    """

    def __init__(self, shape):
        self.shape = shape
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
            "ready_next": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        skid = Signal(self.shape, reset_less=True)
        skid_valid = Signal()
        advance = self.o.ready | ~self.o.valid          # the output register loads
        m.d.comb += [
            self.i.ready.eq(~skid_valid),
            self.ready_next.eq(~Mux(advance, 0, skid_valid | self.i.valid)),
        ]
        with m.If(advance):
            with m.If(skid_valid):                      # o.valid stays 1
                m.d.sync += [self.o.payload.eq(skid), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [self.o.payload.eq(self.i.payload),
                             self.o.valid.eq(self.i.valid)]
        with m.Elif(self.i.valid & ~skid_valid):
            m.d.sync += [skid.eq(self.i.payload), skid_valid.eq(1)]
        return m


class AccRow(data.Struct):
    """One accumulator of a product and ``last``, set on the product's final row."""

    acc: ACC
    last: unsigned(1)


def serializer_cfg_layout(rows_bits: int = 16) -> data.StructLayout:
    """The per-product configuration of :class:`LaneSerializer`: ``rows``, the product's
    output rows N (the default width holds the default model's lm_head, 4096)."""
    return data.StructLayout({"rows": unsigned(rows_bits)})


class LaneSerializer(wiring.Component):
    """The engine's lanes-wide ``acc`` beats as one accumulator per beat, rows 0 .. N - 1.

    Ports:

    - ``cfg``: In stream of :func:`serializer_cfg_layout`, one beat per product: ``rows``
      = N. The product uses ceil(N / lanes) ``acc`` beats; in its last one only the first
      N - lanes * (beats - 1) lanes are rows, the rest are padding and are dropped.
      ``rows`` = 0 is consumed and uses no beat. A second ``cfg`` beat waits in a
      one-entry queue, so the next product's config is in place when its first beat comes.
    - ``acc``: In stream of ``LaneArray(ACC, lanes)`` (the engine's ``acc``: connect them).
      Lane values must fit ``acc_bits`` (default 32; ``TernaryEngine.acc_bits`` saves the
      flip-flops the engine never sets): the buffer keeps that many bits and sign-extends.
    - ``o``: Out stream of :class:`AccRow`: the rows in order, ``last`` on row N - 1.
      (``Dequantize.acc`` takes ``o.payload.acc``; its ``count`` is N.)

    Datapath: one lanes x ``acc_bits`` shift register. A beat loads all of it; then row 0
    moves into a :class:`RegisterSlice` and the register shifts down one lane per cycle.
    ``acc.ready`` is a flip-flop: set when a config with rows left is in place and, after
    the coming edge, the buffer is empty or holds only its last row with the slice sure to
    take it at the next edge (so a beat loads at the very edge its predecessor's last row
    leaves). ``o.ready`` reaches only the slice and that flip-flop's D input; the shift
    register's enable comes from registers.

    Latency: ``LATENCY`` = 2: row 0 of a beat is valid on ``o`` 2 cycles after the cycle
    whose edge accepted the beat; ``acc.ready`` rises 2 cycles after a ``cfg`` beat when
    the serializer was idle.
    Throughput: one row per cycle while ``o.ready`` is high, also across beats and
    products (no idle cycle between groups). A beat with n rows holds the buffer for n
    cycles, so with ``o.ready`` high a beat offered while the buffer is busy is taken n
    cycles after its predecessor. Back-pressure on the engine: the engine keeps a finished
    group in its result register while it accumulates the next, so it only stops when a
    group finishes while the previous one still waits there. Its groups finish K (>= 6)
    cycles apart, so with K >= lanes (and ``o.ready`` high) ``acc.ready`` is high whenever
    the engine's ``acc.valid`` is, and the engine never waits; with K < lanes the pair runs
    at lanes cycles per group (one row per cycle, the serializer's rate), the engine
    holding its weights at each next group's last column. Low ``o.ready`` propagates the
    same way, one buffer (lanes rows) plus the slice (2 rows) later.

    Resources: lanes x ``acc_bits`` flip-flops and 2:1 muxes (load or shift), the slice
    (2 x 33 flip-flops), two ``rows_bits`` row counters with two comparators; no block RAM,
    no multiplier. ECP5 (Yosys 0.70 synth_ecp5), 128 lanes, ``acc_bits`` = 19 (the
    engine's for K <= 1024): 2,505 LUT4, 18 CCU2C, 2,520 FF (2,432 of them the buffer).
    Placed on the ECP5-85F (speed 6, bitstreams/ooc.py's harness) at 32 lanes: 150 MHz
    (at 128 lanes that harness's 4,096-bit input chain overflows YoWASP Yosys' stack);
    the per-lane logic is one LUT, and the load select fans out to lanes x acc_bits.
    """

    LATENCY = 2

    def __init__(self, lanes: int, rows_field_bits: int = 16, acc_bits: int = N.ACC_BITS):
        if not 1 <= acc_bits <= N.ACC_BITS:
            raise ValueError(f"acc_bits must be in 1..{N.ACC_BITS}")
        if lanes < 1 or 2 * lanes >= 1 << rows_field_bits:
            raise ValueError("lanes must be in 1 .. 2^(rows_field_bits - 1) - 1")
        self.lanes, self.rows_bits, self.acc_bits = lanes, rows_field_bits, acc_bits
        super().__init__({
            "cfg": In(stream.Signature(serializer_cfg_layout(rows_field_bits))),
            "acc": In(stream.Signature(LaneArray(ACC, lanes))),
            "o": Out(stream.Signature(AccRow)),
        })

    def elaborate(self, platform):
        m = Module()
        lanes = self.lanes
        m.submodules.slice = sl = RegisterSlice(AccRow)
        wiring.connect(m, sl.o, wiring.flipped(self.o))

        buf = [Signal(signed(self.acc_bits), name=f"buf{lane}", reset_less=True)
               for lane in range(lanes)]
        rem = Signal(range(lanes + 1))       # rows of the buffer still to emit
        buf_last = Signal()                  # the buffer holds the product's final group

        # The product being loaded (rows_left: its rows not yet loaded; final: they fit one
        # beat) and the next product's config, queued.
        cur_valid, cur_final = Signal(), Signal()
        rows_left = Signal(self.rows_bits)
        nxt_valid, nxt_final = Signal(), Signal()
        nxt_rows = Signal(self.rows_bits)

        ready = Signal()                     # acc.ready, a flip-flop
        m.d.comb += [self.acc.ready.eq(ready), self.cfg.ready.eq(~nxt_valid)]
        load = Signal()
        m.d.comb += load.eq(self.acc.valid & ready)
        m.d.comb += [
            sl.i.valid.eq(rem != 0),
            sl.i.payload.acc.eq(buf[0]),
            sl.i.payload.last.eq(buf_last & (rem == 1)),
        ]
        read = sl.i.valid & sl.i.ready
        group_rows = Mux(cur_final, rows_left, lanes)

        with m.If(load):                     # ready guarantees the old rows are gone
            m.d.sync += [buf[lane].eq(self.acc.payload[lane]) for lane in range(lanes)]
            m.d.sync += [rem.eq(group_rows), buf_last.eq(cur_final)]
        with m.Elif(read):
            m.d.sync += [buf[lane].eq(buf[lane + 1]) for lane in range(lanes - 1)]
            m.d.sync += rem.eq(rem - 1)

        promote = Signal()
        m.d.comb += promote.eq(nxt_valid & (~cur_valid | (load & cur_final)))
        with m.If(promote):
            m.d.sync += [cur_valid.eq(1), rows_left.eq(nxt_rows), cur_final.eq(nxt_final),
                         nxt_valid.eq(0)]
        with m.Elif(load):
            with m.If(cur_final):
                m.d.sync += cur_valid.eq(0)
            with m.Else():
                m.d.sync += [rows_left.eq(rows_left - lanes),
                             cur_final.eq(rows_left <= 2 * lanes)]
        rows = self.cfg.payload.rows
        with m.If(self.cfg.valid & self.cfg.ready & (rows != 0)):
            m.d.sync += [nxt_valid.eq(1), nxt_rows.eq(rows), nxt_final.eq(rows <= lanes)]

        # ready for the next cycle: a config in place, and the buffer empty or emitting its
        # last row at the next edge.
        cur_valid_next = promote | (cur_valid & ~(load & cur_final))
        rem_next = Signal.like(rem)
        m.d.comb += rem_next.eq(Mux(load, group_rows, rem - read))
        m.d.sync += ready.eq(cur_valid_next & ((rem_next == 0) |
                                               ((rem_next == 1) & sl.ready_next)))
        return m
