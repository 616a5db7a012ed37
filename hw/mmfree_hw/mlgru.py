"""The MLGRU state unit: forget gate, recurrent state update and output gate, one channel per
cycle, bit-exact with ``golden.mlgru`` (NUMERICS.md, "Units", ``mlgru``):

    1 - f = round((2^24 - lb) * sigma(-zf) / 2^24)         Q0.24
    c     = round(silu(zi) * (1 - f) / 2^24)                X
    h     = saturate(round(f * h / 2^24) + c)               X, kept here across tokens
    o     = saturate(round(saturate(round(zg * gn / 2^gn_frac)) * silu(h) / 2^16))

The state ``h`` lives in an on-chip memory that this unit reads, updates and writes back once
per channel. One unit serves every layer: the layers of a token step run one after another,
so each layer keeps its state in its own region of the memory, selected by ``base``.
"""

from functools import partial

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from mmfree_fpga import numerics as N

from .pipeline import (
    GAIN,
    GATE,
    GATE_ONE,
    PipelinedMul,
    Sigmoid,
    X,
    delay_line,
    round_half,
    round_shift_var,
    rshift_round,
    saturate,
)

GATE_S = N.GATE_FRAC + 2          # a Q0.24 gate (0 .. 2^24) as a signed multiplier operand

# This unit's name for pipeline.rshift_round, which tests/test_mlgru_amaranth.py imports.
round_shift = rshift_round


class MLGRUBeat(data.Struct):
    """One channel of one token: the three projections, and the layer's constants for this
    channel, which the sequencer streams beside them (no per-layer tables in this unit)."""

    zi: X           # input projection (X)
    zf: X           # forget-gate projection (X)
    zg: X           # output-gate projection (X)
    lb: GATE        # forget-gate lower bound, Q0.24 in 0 .. 2^24
    gn: GAIN        # g_norm gain, value gn / 2^gn_frac
    first: 1        # first token of a sequence: the previous state is taken as 0


def mlgru_cfg_layout(max_channels: int = 256) -> data.StructLayout:
    """The per-vector settings of :class:`MLGRUUnit` (its ``cfg`` stream): ``n``, the
    vector's channels (1 .. max_channels; 0 acts as 1), ``base``, the state address of its
    channel 0, and ``gn_frac``, the fractional bits of its ``gn``."""
    return data.StructLayout({"n": range(max_channels + 1), "base": range(max_channels),
                              "gn_frac": unsigned(N.GN_FRAC_BITS)})


class MLGRUUnit(wiring.Component):
    """Ports:

    - ``cfg``: stream of :func:`mlgru_cfg_layout`, one beat per vector, taken before the
      vector's first ``i`` beat (at an earlier edge, never the same one):
      ``n``, channels of the vector, 1 .. ``max_channels`` (0 acts as 1);
      ``base``, the state address of its channel 0 (layer * n when one unit serves every
      layer), ``base + n <= max_channels``: regions must not overlap, and a region is
      always used with the same ``n`` (its layer's width);
      ``gn_frac``, the fractional bits of ``gn``, 0 .. ``numerics.GN_FRAC_MAX`` (31;
      ``gain_block`` gives <= 30, the exporter refuses what does not fit).
    - ``i``: stream of :class:`MLGRUBeat`, channels 0 .. n-1 of a vector in order.
      ``i.ready`` is low while no cfg beat is there for the vector the next beat belongs to.
    - ``o``: stream of X (int32), ``o[j]`` for each accepted beat, in order.

    Settings: the unit queues two cfg beats, the current vector's and the next one's.
    ``cfg.ready`` is high while the second place is free: a vector's cfg beat can be taken
    as soon as the previous vector's has moved to the front (the cycle after the vector
    before that took its last beat), so it is normally queued while the previous vector
    streams and vectors follow each other without a bubble. The settings a beat needs later
    (``gn_frac``, the state address) travel with it down the pipeline, so a cfg beat never
    waits for the pipeline to drain.

    Channel order: a counter gives each accepted beat its channel ``j`` and wraps after
    ``n`` beats; the beat's state address is ``base + j``. ``rst`` returns the counter to 0
    and drops the queued cfg beats: after a reset, every vector needs its cfg beat again.

    Clearing the state: the sequencer sets ``first`` on every beat of a sequence's first token
    (every layer). That beat takes ``h = 0`` instead of the stored state and overwrites it, so
    clearing costs no cycles and never races with beats in flight. ``rst`` does not clear the
    state memory (it is zero at configuration only).

    Latency: ``LATENCY`` cycles from an accepted ``i`` beat to its ``o`` beat, 35 with a
    6-cycle ``Sigmoid`` and 4-cycle products (the stage plan follows the blocks' latencies):
    input registers, sigmoids of zi and -zf, the 1 - f and silu(zi) products, the c product,
    the f h product and the state update, sigmoid of the new h, silu(h), the output product,
    rounding, saturation. Every wide product is a :class:`PipelinedMul` and every step has
    its own register, for the 150 MHz per-unit goal.
    Throughput: one channel per cycle for ``n >= MIN_DISTANCE`` (8), vector after vector;
    a cfg beat costs no cycle as long as it is offered before its vector's first beat could
    go (while the previous vector streams, when they come back to back). A late cfg beat
    delays only its own vector: the first beat goes at the earliest at the edge after the
    one that took the cfg beat. See "State hazard" for smaller ``n``. A stalled ``o`` stalls
    the whole pipeline, so back-pressure never drops a beat.

    State hazard: the state is read 2 stages before the f h product (the memory and its
    output register) and written as the new h leaves the update stage, ``f h`` product
    latency + 1 stages after the product starts; a beat must not be read before the previous
    beat of its address has written, i.e. must be at least ``MIN_DISTANCE`` stages behind
    it. The f h product is pipelined, so no forwarding path could close the loop in one
    cycle. A region of the memory is used with one ``n`` and regions do not overlap, so
    beats of one address are ``n`` (one layer) or more (layers interleaved) beats apart:
    with ``n >= MIN_DISTANCE`` there is no hazard. With ``n < MIN_DISTANCE`` an interlock
    holds ``i.ready`` low at each vector's first beat (the pipeline still advances,
    inserting bubbles) until the previous vector's last beat is ``MIN_DISTANCE`` stages in:
    correct at ``n / (n + MIN_DISTANCE - 1)`` channels per cycle. The default model
    (n = 256) never waits.

    Host access: while ``host_en`` is high (the core grants it between tokens, when the
    pipeline is empty) the state memory's ports serve ``host_addr`` / ``host_we`` /
    ``host_wdata``, and ``host_rdata`` shows the word at the address of the cycle before.

    Resources: three sigmoid blocks (each a 1026 x 25 table with two read ports and its
    interpolation multiply; ``zi``, ``-zf`` and the new ``h`` are looked up at different
    stages of one beat); a ``max_channels`` x 32 state memory (one synchronous read port with
    an output register, one write port); seven pipelined products: 32x26 (silu(zi)),
    26x26 ((1-lb) sigma(-zf)), 32x26 (c), 32x26 (h f), 32x26 (silu(h)), 32x16 (zg gn),
    32x32 (gg silu(h)), 4 MULT18X18D each but 2 for 32x16 (26); a 49-bit barrel shifter
    (gn_frac); delay lines (mostly gg: 32 bits over 23 stages); the two-entry cfg queue
    (2 x 26 bits at max_channels = 1024). Out of context on the ECP5-85F
    (``bitstreams/ooc.py``'s flow, max_channels = 1024, measured before the cfg stream
    replaced plain setting ports, ~50 FF ago): 29 MULT18X18D, 11 DP16KD, ~4,400 FF,
    ~1,000 LUT4 + 625 CCU2C; about 119 MHz, the worst path inside a PipelinedMul (operand
    register -> MULT18X18D -> partial product register), not in this unit's own logic.
    """

    def __init__(self, max_channels: int = 256):
        if max_channels < 1:
            raise ValueError("max_channels must be at least 1")
        self.max_channels = max_channels
        self._plan()
        super().__init__({
            "i": In(stream.Signature(MLGRUBeat)),
            "o": Out(stream.Signature(X)),
            "cfg": In(stream.Signature(mlgru_cfg_layout(max_channels))),
            # the host's access to the state memory, between tokens (``host_en`` high only
            # while no beat is in the unit): read data one cycle after the address
            "host_en": In(1), "host_addr": In(range(max_channels)), "host_we": In(1),
            "host_wdata": In(X), "host_rdata": Out(X),
        })

    def _muls(self):
        return {"si": PipelinedMul(N.X_BITS, GATE_S),    # zi * sigma(zi)
                "om": PipelinedMul(GATE_S, GATE_S),      # (1 - lb) * sigma(-zf)
                "c": PipelinedMul(N.X_BITS, GATE_S),     # silu(zi) * (1 - f)
                "fh": PipelinedMul(N.X_BITS, GATE_S),    # h * f
                "sh": PipelinedMul(N.X_BITS, GATE_S),    # h * sigma(h)
                "g": PipelinedMul(N.X_BITS, N.GAIN_BITS),  # zg * gn
                "o": PipelinedMul(N.X_BITS, N.X_BITS)}   # gg * silu(h)

    def _plan(self):
        """Stage numbers (enabled cycles after the accepting edge) from the blocks' latencies,
        so the unit stays aligned if a block's pipeline changes."""
        self.muls = self._muls()      # built here: the stage plan needs their latencies
        lat = {k: mul.LATENCY for k, mul in self.muls.items()}
        s = Sigmoid.LATENCY
        self.A = 1 + s + max(lat["si"], lat["om"]) + 1  # silu(zi), 1 - f registered
        self.C = self.A + lat["c"] + 1                # c registered
        self.R = max(self.A + 1, self.C - lat["fh"])  # old h and f enter the f h product
        self.H = self.R + lat["fh"] + 1               # new h registered, then written
        self.Q = self.H + s + lat["sh"] + 1           # silu(h) registered
        self.G = lat["g"] + 3                         # gg registered
        assert self.G <= self.Q
        self.LATENCY = self.Q + lat["o"] + 2          # rounded, then saturated into o
        # The read is issued in stage R - 2 (memory, output register); an earlier beat of the
        # same address writes as it leaves stage H.
        self.MIN_DISTANCE = self.H - (self.R - 2) + 1

    def elaborate(self, platform):
        m = Module()
        beat = self.i.payload
        addr_shape = range(self.max_channels)

        # Every stage advances together (en) while the output is ready or empty (flow) and
        # something is in the pipeline: an empty pipeline holds instead of shifting bubbles,
        # which changes nothing visible but lets a simulator skip the idle unit (Verilator
        # evaluates what an enable guards only when it is high; the MLGRU is idle ~95 % of a
        # token). In gateware that is a 35-input OR in front of the clock enables.
        en, flow = Signal(), Signal()
        m.d.comb += flow.eq(~self.o.valid | self.o.ready)

        delay = partial(delay_line, m, en)

        def register(value, shape, name):
            reg = Signal(shape, name=name)
            with m.If(en):
                m.d.sync += reg.eq(value)
            return reg

        # The settings queue: ``cur``, the vector the next i beat belongs to, and ``held``
        # behind it. Two entries because every beat of a vector needs its n and base while
        # the next vector's cfg beat must already be taken (no bubble between vectors); and
        # the per-beat logic then starts from a register, never from the cfg port, so no
        # handshake path of the sender runs into the address adder or i.ready.
        layout = mlgru_cfg_layout(self.max_channels)
        cur, held = Signal(layout), Signal(layout)
        cur_valid, held_valid = Signal(), Signal()
        chan = Signal(addr_shape)
        take = Signal()
        last = Signal()               # the beat in front is its vector's last (n = 0 acts as 1)
        m.d.comb += [last.eq(chan + 1 >= cur.n), self.cfg.ready.eq(~held_valid)]
        cfg_take = self.cfg.valid & self.cfg.ready
        with m.If(~cur_valid | (take & last)):
            with m.If(held_valid):
                m.d.sync += [cur.eq(held), cur_valid.eq(1), held_valid.eq(0)]
            with m.Else():
                m.d.sync += [cur.eq(self.cfg.payload), cur_valid.eq(cfg_take)]
        with m.Elif(cfg_take):
            m.d.sync += [held.eq(self.cfg.payload), held_valid.eq(1)]

        # Channel counter and state address of the incoming beat.
        addr0 = Signal(addr_shape)
        m.d.comb += addr0.eq(cur.base + chan)

        # Interlock (see the class docstring): with n < MIN_DISTANCE, a vector's first beat
        # waits until the previous vector's last beat is MIN_DISTANCE stages in; then every
        # beat is at least that far behind the previous beat of its address. No address
        # comparison: the check is off the adder in front of addr1.
        valid = [take] + [Signal(name=f"v{k}") for k in range(1, self.LATENCY)]
        for k in range(1, self.LATENCY):
            with m.If(en):
                m.d.sync += valid[k].eq(valid[k - 1])
        addr = delay(addr0, self.H, "addr")
        hazard = Signal()
        if self.MIN_DISTANCE > 1:
            m.d.comb += hazard.eq((chan == 0) & (cur.n < self.MIN_DISTANCE)
                                  & Cat(*valid[1:self.MIN_DISTANCE]).any())
        accept = Signal()
        m.d.comb += [accept.eq(flow & ~hazard & cur_valid), self.i.ready.eq(accept),
                     take.eq(self.i.valid & accept),
                     en.eq(flow & (take | Cat(*valid[1:]).any() | self.o.valid))]
        with m.If(take):
            m.d.sync += chan.eq(Mux(last, 0, chan + 1))
        with m.If(en):
            m.d.sync += self.o.valid.eq(valid[-1])

        muls = self.muls
        for name, mul in muls.items():
            m.submodules[f"mul_{name}"] = mul
            m.d.comb += mul.en.eq(en)
        m.submodules.sig_i = sig_i = Sigmoid()
        m.submodules.sig_f = sig_f = Sigmoid()
        m.submodules.sig_h = sig_h = Sigmoid()
        # The sigmoids of zi and -zf start from registers (stage 1): negating and clamping
        # zf in front of the table's own clamp was the unit's longest path.
        zi1 = register(beat.zi, X, "zi1")
        # -X_MIN does not fit int32; both clamp to +16 in the table anyway.
        nzf1 = register(saturate(-beat.zf), X, "nzf1")
        s = Sigmoid.LATENCY
        m.d.comb += [sig_i.en.eq(en), sig_f.en.eq(en), sig_h.en.eq(en),
                     sig_i.z.eq(zi1), sig_f.z.eq(nzf1)]

        # Output gate, computed first and carried: zg * gn, then the run-time rounding shift
        # by gn_frac in three steps (barrel shift; round; saturate).
        mul_g = muls["g"]
        m.d.comb += [mul_g.a.eq(beat.zg), mul_g.b.eq(beat.gn)]
        frac = delay(cur.gn_frac, mul_g.LATENCY, "frac")[-1]
        t_g = register(round_shift_var(mul_g.p, frac), signed(len(mul_g.p) + 1), "gg_shift")
        r_g = register(round_half(t_g), signed(len(t_g)), "gg_round")
        gg = delay(register(saturate(r_g), X, "gg"), self.Q - self.G, "gg_q")[-1]

        # silu(zi) and 1 - f = round((2^24 - lb) sigma(-zf)): both registered in stage A.
        zi = delay(zi1, s, "zi")[-1]                  # stage 1 + s, beside the sigmoids
        oml = delay(register(GATE_ONE - beat.lb, GATE, "oml1"), s, "oml")[-1]
        mul_si, mul_om = muls["si"], muls["om"]
        m.d.comb += [mul_si.a.eq(zi), mul_si.b.eq(sig_i.y),
                     mul_om.a.eq(oml), mul_om.b.eq(sig_f.y)]
        silu_i = register(rshift_round(mul_si.p, N.GATE_FRAC), X, "silu_i")
        silu_i = delay(silu_i, self.A - (1 + s + mul_si.LATENCY + 1), "silu_i_a")[-1]
        omf = register(rshift_round(mul_om.p, N.GATE_FRAC), GATE, "omf")
        omf = delay(omf, self.A - (1 + s + mul_om.LATENCY + 1), "omf_a")[-1]

        # c = round(silu(zi) (1 - f)) in stage C; f = 1 - (1 - f) from stage A + 1.
        mul_c = muls["c"]
        m.d.comb += [mul_c.a.eq(silu_i), mul_c.b.eq(omf)]
        c = register(rshift_round(mul_c.p, N.GATE_FRAC), X, "c")
        c = delay(c, self.R + muls["fh"].LATENCY - self.C, "c_r")[-1]
        f = delay(register(GATE_ONE - omf, GATE, "f"), self.R - self.A - 1, "f_r")[-1]

        # The state: read issued in stage R - 2, the memory's output registered into stage R
        # and replaced by zero for a sequence's first token; written back as the new h
        # leaves stage H.
        m.submodules.state = state = memory.Memory(shape=X, depth=self.max_channels, init=[])
        wr = state.write_port()
        rd = state.read_port(domain="sync")
        first = delay(beat.first, self.R, "first")[-1]
        h_mem = register(rd.data, X, "h_mem")         # nothing between block RAM and register
        mul_fh = muls["fh"]
        h = Signal(X)
        with m.If(en):
            m.d.sync += h.eq(saturate(rshift_round(mul_fh.p, N.GATE_FRAC, c)))
        m.d.comb += [mul_fh.a.eq(Mux(first, 0, h_mem)), mul_fh.b.eq(f),
                     self.host_rdata.eq(rd.data)]
        with m.If(self.host_en):
            m.d.comb += [rd.addr.eq(self.host_addr), rd.en.eq(1), wr.addr.eq(self.host_addr),
                         wr.data.eq(self.host_wdata), wr.en.eq(self.host_we)]
        with m.Else():
            m.d.comb += [rd.addr.eq(addr[self.R - 2]), rd.en.eq(en),
                         wr.addr.eq(addr[self.H]), wr.data.eq(h),
                         wr.en.eq(en & valid[self.H])]

        # silu(h) of the new state, then o = saturate(round(gg silu(h) / 2^16)).
        m.d.comb += sig_h.z.eq(h)
        mul_sh, mul_o = muls["sh"], muls["o"]
        m.d.comb += [mul_sh.a.eq(delay(h, s, "h_s")[-1]), mul_sh.b.eq(sig_h.y)]
        silu_h = register(rshift_round(mul_sh.p, N.GATE_FRAC), X, "silu_h")
        m.d.comb += [mul_o.a.eq(gg), mul_o.b.eq(silu_h)]
        rounded = register(rshift_round(mul_o.p, N.X_FRAC), signed(len(mul_o.p) - N.X_FRAC + 1),
                           "o_rounded")
        with m.If(en):
            m.d.sync += self.o.payload.eq(saturate(rounded))
        return m
