"""The ternary accumulate engine: ``acc = codes x q`` for int8 activations and {-1, 0, +1}
weight codes, one weight column per cycle, ``lanes`` output rows in parallel.

Bit-exact with ``golden.ternary_matvec`` (NUMERICS.md, "ternary_matvec"): each lane adds,
subtracts or skips the activation of the current column. No multipliers.
"""

from amaranth import Cat, Module, Mux, Shape, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from mmfree_fpga import numerics as N

ACT = signed(8)                       # int8 activation codes (numerics.ACT_MIN..ACT_MAX)
ACC = signed(N.ACC_BITS)

CODE_POS = 0b01                       # numerics "code" format; 0b00 = 0, 0b10 never appears
CODE_NEG = 0b11


def acc_width(max_k: int) -> int:
    """Bits a lane's accumulator needs: ``|acc| <= 128 K`` (NUMERICS.md width table)."""
    return Shape.cast(range(N.ACT_MIN * max_k, -N.ACT_MIN * max_k + 1)).width


class TernaryEngine(wiring.Component):
    """A column engine: ``lanes`` accumulators, one weight column (one word) per cycle.

    Ports (Amaranth streams; a beat transfers at an edge where valid and ready are high):

    - ``act``: In stream of int8 activations ``q[0..K-1]``, in order. Each vector of K beats
      fills one bank of a two-bank activation memory.
    - ``k``: In, K for a vector (1..max_k). ``groups``: In, row groups that use the vector
      (1..max_groups). Both are sampled with the *first* ``act`` beat of a vector and stored
      with it, so they only need to be valid then (holding them stable during a product, as
      a simple sequencer does, is fine); the next vector may use other values.
    - ``weights``: In stream of weight words, ``lanes`` 2-bit codes for one column (lane l at
      bits [2l, 2l+2): 0b00 = 0, 0b01 = +1, 0b11 = -1, 0b10 treated as 0), columns
      k = 0..K-1 of row group 0, then of group 1, ... then of group ``groups - 1``; then the
      next vector's groups.
    - ``acc``: Out stream, ``ArrayLayout(signed(ACC_BITS), lanes)``: one beat per row group,
      lane l = ``sum_k code[l, k] * q[k]``, after that group's K columns.

    Activation loading: vector v+1 loads into the free bank while vector v's row groups run,
    so loads cost nothing in steady state. ``act.ready`` is low while both banks hold a
    vector; ``weights.ready`` is low until the current vector's K beats have arrived (one
    cycle after its last ``act`` beat). A bank is freed when the last word of its last
    row group is accepted.

    Latency: the ``acc`` beat of a row group is valid 2 cycles after the edge that accepted
    its last weight word (memory read + accumulate; result register).
    Throughput: one weight word per cycle while ``weights`` is valid and the current vector
    is loaded; the result register lets group g+1 accumulate while group g waits for
    ``acc.ready``; only a group that finishes while the previous result still waits stalls
    (``weights.ready`` then follows ``acc.ready`` combinationally, as in ElementwiseUnit).
    An isolated product of G groups takes G*K + 2 cycles after its activations are loaded.

    Resources: the activation memory (2 x 2^ceil(log2 max_k) x 8 bits: one DP16KD for
    max_k <= 1024); per lane one ``acc_width(max_k)``-bit adder with carry-in (the add,
    subtract or skip), an accumulator and a result register of that width (sign-extended to
    ACC_BITS on the port: ``|acc| <= 128 K`` needs 19 bits for K <= 1024); counters.
    """

    LATENCY = 2

    def __init__(self, lanes: int = 32, max_k: int = 1024, max_groups: int = 1 << 16):
        if not 1 <= max_k <= N.MAX_K:
            raise ValueError(f"max_k must be in 1..{N.MAX_K} (NUMERICS.md proves the widths)")
        self.lanes, self.max_k, self.max_groups = lanes, max_k, max_groups
        self.acc_bits = min(acc_width(max_k), N.ACC_BITS)
        super().__init__({
            "act": In(stream.Signature(ACT)),
            "k": In(range(max_k + 1)),
            "groups": In(range(max_groups + 1)),
            "weights": In(stream.Signature(2 * lanes)),
            "acc": Out(stream.Signature(data.ArrayLayout(ACC, lanes))),
        })

    def elaborate(self, platform):
        m = Module()
        lanes = self.lanes
        col_bits = max(1, ceil_log2(self.max_k))
        kcount = range(max(2, self.max_k))   # a column index, or K - 1
        gcount = range(max(2, self.max_groups))  # a row group index, or groups - 1

        # Two banks, bank b at addresses [b << col_bits, (b + 1) << col_bits): addresses
        # are Cat(column, bank), no adder.
        m.submodules.mem = mem = memory.Memory(shape=ACT, depth=2 << col_bits, init=[])
        wr = mem.write_port()
        rd = mem.read_port()

        # Per bank: holds a complete vector, and that vector's K - 1 and groups - 1.
        full = Signal(2)
        klast = [Signal(kcount, name=f"klast{b}") for b in range(2)]
        glast = [Signal(gcount, name=f"glast{b}") for b in range(2)]

        # -- write side: act beats into bank wr_bank ----------------------------------------
        wr_bank = Signal()
        wr_idx = Signal(kcount)
        wr_klast = Signal(kcount)     # K - 1 of the vector being written
        m.d.comb += wr_klast.eq(Mux(wr_idx == 0, self.k - 1, Mux(wr_bank, klast[1], klast[0])))
        m.d.comb += [
            self.act.ready.eq(~full.bit_select(wr_bank, 1)),
            wr.addr.eq(Cat(wr_idx[:col_bits], wr_bank)),
            wr.data.eq(self.act.payload),
            wr.en.eq(self.act.valid & self.act.ready),
        ]
        set_full = Signal(2)
        with m.If(self.act.valid & self.act.ready):
            with m.If(wr_idx == 0):          # first beat: keep this vector's K and groups
                for b in range(2):
                    with m.If(wr_bank == b):
                        m.d.sync += [klast[b].eq(self.k - 1), glast[b].eq(self.groups - 1)]
            with m.If(wr_idx == wr_klast):
                m.d.sync += [wr_idx.eq(0), wr_bank.eq(~wr_bank)]
                m.d.comb += set_full.eq(Mux(wr_bank, 0b10, 0b01))
            with m.Else():
                m.d.sync += wr_idx.eq(wr_idx + 1)

        # -- stage 0: accept a weight word, read q[col] of bank rd_bank ---------------------
        # en: the pipeline advances unless a finished group meets a result still waiting.
        en = Signal()
        s1_valid, s1_last = Signal(), Signal()
        s1_word = Signal(2 * lanes)
        m.d.comb += en.eq(~(s1_valid & s1_last & self.acc.valid & ~self.acc.ready))

        rd_bank = Signal()
        col = Signal(kcount)
        grp = Signal(gcount)
        rd_klast, rd_glast = Signal(kcount), Signal(gcount)
        m.d.comb += [
            rd_klast.eq(Mux(rd_bank, klast[1], klast[0])),
            rd_glast.eq(Mux(rd_bank, glast[1], glast[0])),
            self.weights.ready.eq(en & full.bit_select(rd_bank, 1)),
            rd.addr.eq(Cat(col[:col_bits], rd_bank)),
            rd.en.eq(en),                    # a stalled stage 1 keeps its q
        ]
        accept = self.weights.valid & self.weights.ready
        clr_full = Signal(2)
        with m.If(en):
            m.d.sync += [s1_valid.eq(accept), s1_word.eq(self.weights.payload),
                         s1_last.eq(col == rd_klast)]
        with m.If(accept):
            with m.If(col == rd_klast):
                m.d.sync += col.eq(0)
                with m.If(grp == rd_glast):  # the vector's last word: free its bank
                    m.d.sync += [grp.eq(0), rd_bank.eq(~rd_bank)]
                    m.d.comb += clr_full.eq(Mux(rd_bank, 0b10, 0b01))
                with m.Else():
                    m.d.sync += grp.eq(grp + 1)
            with m.Else():
                m.d.sync += col.eq(col + 1)
        # The writer only sets a bank that is not full, the reader only clears a full one.
        m.d.sync += full.eq((full | set_full) & ~clr_full)

        # -- stage 1: add, subtract or skip; a group's last column goes to the result -------
        # acc + (+q | ~q | 0) + carry-in: one carry chain per lane, since -q = ~q + 1.
        q = rd.data
        accs = [Signal(signed(self.acc_bits), name=f"acc{lane}") for lane in range(lanes)]
        results = [Signal(signed(self.acc_bits), name=f"res{lane}") for lane in range(lanes)]
        with m.If(self.acc.ready):
            m.d.sync += self.acc.valid.eq(0)
        for lane, (acc, res) in enumerate(zip(accs, results, strict=True)):
            code = s1_word[2 * lane:2 * lane + 2]
            pos, neg = code == CODE_POS, code == CODE_NEG
            addend = Signal(ACT, name=f"addend{lane}")
            total = Signal(signed(self.acc_bits), name=f"sum{lane}")
            m.d.comb += [addend.eq(Mux(pos, q, Mux(neg, ~q, 0))),
                         total.eq(acc + addend + neg),
                         self.acc.payload[lane].eq(res)]
            with m.If(en & s1_valid):
                m.d.sync += acc.eq(Mux(s1_last, 0, total))
                with m.If(s1_last):
                    m.d.sync += res.eq(total)
        with m.If(en & s1_valid & s1_last):
            m.d.sync += self.acc.valid.eq(1)
        return m
