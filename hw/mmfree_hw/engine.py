"""The ternary accumulate engine: ``acc = codes x q`` for int8 activations and {-1, 0, +1}
weight codes, one weight column per cycle, ``lanes`` output rows in parallel.

Bit-exact with ``golden.ternary_matvec`` (NUMERICS.md, "ternary_matvec"): each lane adds,
subtracts or skips the activation of the current column. No multipliers.
"""

from amaranth import Cat, Format, Module, Mux, Shape, Signal, Value, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from mmfree_fpga import numerics as N

ACT = signed(8)                       # int8 activation codes (numerics.ACT_MIN..ACT_MAX)
ACC = signed(N.ACC_BITS)


class LaneArray(data.ArrayLayout):
    """``data.ArrayLayout(signed(ACC_BITS), lanes)`` (equal to it, so streams connect), whose
    signals carry no per-element debug wires. Amaranth names those ``acc__payload[3]``, and
    Yosys 0.70's ABC reintegration confuses such a name with bit 3 of ``acc__payload``:
    ``synth_ecp5`` stops on a failed assertion (``GetSize(conn.first) == GetSize(conn.second)``,
    rtlil.cc) from 16 lanes on. Simulators show the flat payload instead."""

    def format(self, value, format_spec):
        return Format("{}", Value.cast(value))


def engine_cfg_layout(max_k: int, max_groups: int) -> data.StructLayout:
    """The per-vector settings of :class:`TernaryEngine` (its ``cfg`` stream): ``k``, the
    vector's length K (1 .. max_k), and ``groups``, the row groups that use it
    (1 .. max_groups)."""
    return data.StructLayout({"k": range(max_k + 1), "groups": range(max_groups + 1)})


def acc_width(max_k: int) -> int:
    """Bits a lane's accumulator needs: ``|acc| <= 128 K`` (NUMERICS.md width table)."""
    return Shape.cast(range(N.ACT_MIN * max_k, -N.ACT_MIN * max_k + 1)).width


class TernaryEngine(wiring.Component):
    """A column engine: ``lanes`` accumulators, one weight column (one word) per cycle.

    Ports (Amaranth streams; a beat transfers at an edge where valid and ready are high):

    - ``cfg``: In stream of :func:`engine_cfg_layout`, one beat per vector: ``k``, its K
      (1..max_k), and ``groups``, the row groups that use it (1..max_groups). There is no
      holding register: the beat is taken at the same edge as the vector's first ``act``
      beat and stored with the vector in its bank. So ``act.ready`` at a vector's first beat
      requires ``cfg.valid``, and ``cfg.ready`` is high exactly when that first beat is
      accepted (``act.valid`` and a free bank; ready depends on the other stream's valid,
      no valid depends on a ready). A cfg beat costs no cycle: offered no later than the
      first ``act`` beat, it changes no timing below; offered later, the first beat waits
      for it and both go at the edge it is offered.
    - ``act``: In stream of int8 activations ``q[0..K-1]``, in order. Each vector of K beats
      fills one bank of a two-bank activation memory.
    - ``weights``: In stream of weight words, ``lanes`` 2-bit codes for one column (lane l at
      bits [2l, 2l+2): 0b00 = 0, 0b01 = +1, 0b11 = -1, 0b10 treated as 0), columns
      k = 0..K-1 of row group 0, then of group 1, ... then of group ``groups - 1``; then the
      next vector's groups (``numerics.engine_words`` lays a ternary matrix out so).
    - ``acc``: Out stream, ``ArrayLayout(signed(ACC_BITS), lanes)`` (as :class:`LaneArray`,
      equal to it): one beat per row group, lane l = ``sum_k code[l, k] * q[k]``, after that
      group's K columns.

    Activation loading: vector v+1 loads into the free bank while vector v's row groups run,
    so loads cost nothing in steady state. ``act.ready`` is low while both banks hold a
    vector, and at a vector's first beat while ``cfg.valid`` is low. A weight word is taken
    once its column's activation is in the bank (``weights.ready`` is low while column c has
    not arrived, from the cycle after the ``act`` beat that carries it): group 0 runs right
    behind activations that arrive one per cycle, as the quantizer's codes do, so the engine
    need not wait for a whole vector; later groups find it complete. A bank is free again
    2 cycles after the last word of its last row group is accepted.

    Latency: ``LATENCY`` = 5: a group's ``acc`` beat is valid 5 cycles after the cycle whose
    edge accepted its last weight word (memory read, two q registers, code decode,
    accumulate into the result register).
    Throughput: one weight word per cycle while ``weights`` is valid and the current vector
    is loaded (its cfg beat went with its first ``act`` beat), for K >= ``RESULT_TURNAROUND``
    (6) and ``acc.ready`` high: group g+1 accumulates while group g's result waits in the
    result register, and only g+1's *last* column waits for that beat to leave. So with
    K < 6 (not a matvec the model has) a group takes 6 cycles, and a blocked ``acc`` stops
    ``weights`` at the next group's last column.
    The datapath itself never stalls: ``acc.ready`` drives no enable and no ``ready``
    (at 128 lanes a stall enable would reach ~4,000 flip-flops). An isolated product of G
    groups takes G*K + 5 cycles after its activations are loaded.

    Resources: the activation memory (2 x 2^ceil(log2 max_k) x 8 bits: one DP16KD for
    max_k <= 1024); per lane one ``acc_width(max_k)``-bit carry chain with carry-in (the add,
    subtract or skip), an accumulator and a result register of that width (sign-extended to
    ACC_BITS on the port: ``|acc| <= 128 K`` needs 19 bits for K <= 1024), an 8-bit addend
    register; 3 x 2 x lanes bits of weight-word pipeline; counters. No multiplier.
    ECP5 (Yosys 0.70, max_k = 1024, measured before the cfg stream, which adds a gate to
    each ready): 32 lanes 492 LUT4, 366 CCU2C, 1,879 FF, 1 DP16KD;
    128 lanes 1,357 LUT4, 1,326 CCU2C, 6,967 FF, 1 DP16KD. About 140 MHz placed on the
    ECP5-85F, bound by the DP16KD's clock-to-out (5.8 ns) into the first q register.
    """

    LATENCY = 5
    RESULT_TURNAROUND = 6    # cycles from accepting a group's last column to the next one's

    def __init__(self, lanes: int = 32, max_k: int = 1024, max_groups: int = 1 << 16):
        if not 1 <= max_k <= N.MAX_K:
            raise ValueError(f"max_k must be in 1..{N.MAX_K} (NUMERICS.md proves the widths)")
        self.lanes, self.max_k, self.max_groups = lanes, max_k, max_groups
        self.acc_bits = min(acc_width(max_k), N.ACC_BITS)
        super().__init__({
            "cfg": In(stream.Signature(engine_cfg_layout(max_k, max_groups))),
            "act": In(stream.Signature(ACT)),
            "weights": In(stream.Signature(N.CODE_BITS * lanes)),
            "acc": Out(stream.Signature(LaneArray(ACC, lanes))),
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

        # Per bank: holds a complete vector; that vector's K - 1 and groups - 1, and whether
        # each is 0 or 1, so no control decision compares a counter with an input port.
        full = Signal(2)
        klast = [Signal(kcount, name=f"klast{b}") for b in range(2)]
        glast = [Signal(gcount, name=f"glast{b}") for b in range(2)]
        k_one, k_two = [Signal(name=f"k_one{b}") for b in range(2)], \
            [Signal(name=f"k_two{b}") for b in range(2)]
        g_one, g_two = [Signal(name=f"g_one{b}") for b in range(2)], \
            [Signal(name=f"g_two{b}") for b in range(2)]

        # -- write side: act beats into bank wr_bank ----------------------------------------
        # wr_left counts the beats after the next one; wr_last flags the vector's last beat.
        wr_bank, wr_first, wr_last = Signal(), Signal(init=1), Signal()
        wr_idx, wr_left = Signal(kcount), Signal(kcount)
        # No holding register for cfg: the first beat's edge takes it, so a cfg beat costs
        # no cycle and no flip-flops beyond the per-bank values kept anyway.
        k, groups = self.cfg.payload.k, self.cfg.payload.groups
        wr_free = ~Mux(wr_bank, full[1], full[0])
        act_accept = self.act.valid & self.act.ready
        is_last_beat = Mux(wr_first, k == 1, wr_last)
        m.d.comb += [
            self.act.ready.eq(wr_free & (~wr_first | self.cfg.valid)),
            self.cfg.ready.eq(wr_free & wr_first & self.act.valid),
            wr.addr.eq(Cat(wr_idx[:col_bits], wr_bank)),
            wr.data.eq(self.act.payload),
            wr.en.eq(act_accept),
        ]
        set_full = Signal(2)
        with m.If(act_accept):
            with m.If(wr_first):             # first beat, with the cfg beat: keep K, groups
                for b in range(2):
                    with m.If(wr_bank == b):
                        m.d.sync += [klast[b].eq(k - 1), glast[b].eq(groups - 1),
                                     k_one[b].eq(k == 1), k_two[b].eq(k == 2),
                                     g_one[b].eq(groups == 1), g_two[b].eq(groups == 2)]
            with m.If(is_last_beat):
                m.d.sync += [wr_idx.eq(0), wr_first.eq(1), wr_bank.eq(~wr_bank)]
                m.d.comb += set_full.eq(Mux(wr_bank, 0b10, 0b01))
            with m.Else():
                m.d.sync += [wr_idx.eq(wr_idx + 1), wr_first.eq(0),
                             wr_left.eq(Mux(wr_first, k - 2, wr_left - 1)),
                             wr_last.eq(Mux(wr_first, k == 2, wr_left == 1))]

        # -- stage 0: accept a weight word, read q[col] of bank rd_bank ---------------------
        # The datapath never stalls: a group's last column is accepted only while no other
        # result is pending (in flight or waiting in the result register), so it always
        # finds the result register free. acc.ready reaches no enable and no ready.
        pending = Signal()
        s1_valid, s1_last = Signal(), Signal()
        s1_word = Signal(N.CODE_BITS * lanes, reset_less=True)

        # Where the next word falls: col_left columns after it in its group (col_last: it is
        # the group's last), grp_left groups after its group (grp_last: the vector's last
        # group). rd_fresh: it starts a vector, so these come from the bank's stored values.
        rd_bank, rd_fresh = Signal(), Signal(init=1)
        col, col_left, grp_left = Signal(kcount), Signal(kcount), Signal(gcount)
        col_last, grp_last = Signal(), Signal()

        def bank(values):
            return Mux(rd_bank, values[1], values[0])

        cur_col_left = Mux(rd_fresh, bank(klast), col_left)
        cur_col_last = Mux(rd_fresh, bank(k_one), col_last)
        cur_grp_left = Mux(rd_fresh, bank(glast), grp_left)
        cur_grp_last = Mux(rd_fresh, bank(g_one), grp_last)
        # A column can be read once its activation is in the bank: group 0 of a vector runs
        # right behind the activations as they arrive (the quantizer's second pass), later
        # groups find the bank complete. avail counts a bank's written columns.
        avail = [Signal(range(self.max_k + 1), name=f"avail{b}") for b in range(2)]
        m.d.comb += [
            self.weights.ready.eq((col < bank(avail)) & ~(cur_col_last & pending)),
            rd.addr.eq(Cat(col[:col_bits], rd_bank)),
        ]
        accept = self.weights.valid & self.weights.ready
        clr_full = Signal(2)
        m.d.sync += [s1_valid.eq(accept), s1_last.eq(cur_col_last),
                     s1_word.eq(self.weights.payload)]
        # Set by accepting a last column (only while clear), cleared by the acc beat.
        with m.If(accept & cur_col_last):
            m.d.sync += pending.eq(1)
        with m.Elif(self.acc.valid & self.acc.ready):
            m.d.sync += pending.eq(0)
        with m.If(accept):
            with m.If(cur_col_last):
                m.d.sync += col.eq(0)
                with m.If(cur_grp_last):     # the vector's last word: free its bank
                    m.d.sync += [rd_fresh.eq(1), rd_bank.eq(~rd_bank)]
                    m.d.comb += clr_full.eq(Mux(rd_bank, 0b10, 0b01))
                with m.Else():               # the next group reuses the vector
                    m.d.sync += [
                        rd_fresh.eq(0), col_left.eq(bank(klast)), col_last.eq(bank(k_one)),
                        grp_left.eq(cur_grp_left - 1),
                        grp_last.eq(Mux(rd_fresh, bank(g_two), grp_left == 1))]
            with m.Else():
                m.d.sync += [
                    col.eq(col + 1), rd_fresh.eq(0),
                    col_left.eq(cur_col_left - 1),
                    col_last.eq(Mux(rd_fresh, bank(k_two), col_left == 1)),
                    grp_left.eq(cur_grp_left), grp_last.eq(cur_grp_last)]
        for b in range(2):
            with m.If(clr_full[b]):
                m.d.sync += avail[b].eq(0)
            with m.Elif(act_accept & (wr_bank == b)):
                m.d.sync += avail[b].eq(avail[b] + 1)
        # The writer only sets a bank that is not full, the reader only clears a full one.
        # Both events are registered first: the two control cones meet at ``full``, and a
        # bank that turns full or free a cycle later costs nothing in steady state.
        set_full_r, clr_full_r = Signal(2), Signal(2)
        m.d.sync += [set_full_r.eq(set_full), clr_full_r.eq(clr_full),
                     full.eq((full | set_full_r) & ~clr_full_r)]

        # -- stages 1 to 3: the memory reads q[col] (stage 1); its first register sits by the
        # block RAM (stage 2: a DP16KD is ~6 ns clock-to-out and Yosys does not use its
        # output register), the second drives every lane (stage 3). The reader only reads a
        # full bank and the writer only writes a free one, so they never meet. Data
        # registers need no reset. ------------------------------------------------------
        s2_valid, s2_last, s3_valid, s3_last = Signal(), Signal(), Signal(), Signal()
        s2_word = Signal(N.CODE_BITS * lanes, reset_less=True)
        s3_word = Signal(N.CODE_BITS * lanes, reset_less=True)
        q_near, q = Signal(ACT, reset_less=True), Signal(ACT, reset_less=True)
        m.d.sync += [q_near.eq(rd.data), s2_valid.eq(s1_valid), s2_last.eq(s1_last),
                     s2_word.eq(s1_word),
                     q.eq(q_near), s3_valid.eq(s2_valid), s3_last.eq(s2_last),
                     s3_word.eq(s2_word)]

        # -- stage 4: decode each lane's code into its addend: +q, ~q (with carry-in: -q) or
        # 0 (also for an empty slot), so stage 5 is one carry chain per lane with nothing in
        # front of it and no enable ---------------------------------------------------------
        # The addend is stored at the accumulator's width: bits 8 and up are copies of bit 7
        # (q sign-extended once, for every lane), flip-flops with one D that synthesis
        # merges into one, so the circuit is the 8-bit one; Verilator then adds it as it
        # stands instead of sign-extending 128 addends a cycle.
        width = self.acc_bits
        finish = Signal()                    # stage 5 holds a group's last column
        q_wide = Signal(width)
        m.d.comb += q_wide.eq(q)             # q is signed: sign-extended
        addends = [Signal(width, name=f"addend{lane}") for lane in range(lanes)]
        negs = [Signal(name=f"neg{lane}") for lane in range(lanes)]
        m.d.sync += finish.eq(s3_valid & s3_last)
        # In logic form (bit 0: nonzero, bit 1: the sign): the same 3-input function per bit
        # as a Mux(pos, q, Mux(neg, ~q, 0)), but Verilator makes it branch-free; with random
        # ternary codes a branch per lane mispredicts half the time. A bit spread over the
        # word as Mux(bit, ones, 0), not bit.replicate(): Verilator builds a replication
        # bit by bit, a Mux of constants in two instructions (and synthesis sees the same
        # wires in both).
        assert (N.CODE_POS, N.CODE_NEG) == (0b01, 0b11)
        ones = (1 << width) - 1
        for lane in range(lanes):
            nz = s3_valid & s3_word[N.CODE_BITS * lane]
            sign = s3_word[N.CODE_BITS * lane + 1]
            m.d.sync += [addends[lane].eq((q_wide ^ Mux(sign, ones, 0)) & Mux(nz, ones, 0)),
                         negs[lane].eq(nz & sign)]

        # -- stage 5: accumulate; a group's last column goes to the result register -------
        result = Signal(LaneArray(ACC, lanes), reset_less=True)
        m.d.comb += self.acc.payload.eq(result)   # one signal: Icarus is slow on 32 slices
        with m.If(self.acc.ready):
            m.d.sync += self.acc.valid.eq(0)
        with m.If(finish):
            m.d.sync += self.acc.valid.eq(1)
        for lane in range(lanes):
            acc = Signal(signed(width), name=f"acc{lane}")
            total = Signal(signed(width), name=f"sum{lane}")
            # modulo 2^width, as unsigned words (the same bits as the signed sum, which
            # NUMERICS.md's bound keeps in range), with no sign extension to evaluate
            m.d.comb += total.eq(acc.as_unsigned() + addends[lane] + negs[lane])
            # Clearing maps to the flip-flops' synchronous reset; no enable.
            with m.If(finish):
                m.d.sync += [acc.eq(0), result[lane].eq(total)]
            with m.Else():
                m.d.sync += acc.eq(total)
        return m
