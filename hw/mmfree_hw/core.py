"""The accelerator core: a sequencer that runs the ISA's program (``mmfree_fpga.isa``) for one
token at a time on the datapath units, with the vector scratchpad, the parameter and
embedding memories and the weight memory on chip.

This first core issues one instruction at a time (as the paper's core did): every unit's
work is the instruction's, and the next instruction starts when the last result has been
written. That is the ISA's sequential semantics taken literally, so the core is correct by
construction of its parts; the overlap that the ISA allows (``isa.py``, "Semantics") is the
next step, and the cycle counters below say where the time goes.

Ports (every one a stream, except ``counters`` and ``busy``):

- ``run``: In, :data:`RunBeat` per token: the token id, ``k_run`` (candidates wanted, 0
  for a prompt token) and ``last`` (the command's last token). The core runs the program
  from PROGRAM address 0 until END (or SKIP_UNLESS_LAST when ``k_run`` = 0).
- ``reset_state``: In, one beat: the next token starts a sequence (the MLGRU takes h = 0),
  the activation queue is emptied and an error state is cleared.
- ``records``: Out, bytes: the token's TRACE, RESULT and ERROR records, exactly as
  ``mmfree_fpga.commands`` specifies them.
- ``token_done``: Out, one beat per token after its records: ``ok`` = 0 after an error.
- ``host``: memory access for the command processor, only while no token runs
  (:class:`HostPort`): writes to every space but STATE, reads of every space but
  WEIGHTS and STATE (the MLGRU unit keeps the state; the weight memory has no read port
  for the host: the host checks what it wrote with the compiler's own image).
- ``counters``: Out, ``len(COUNTERS)`` x 32 bits, stable while no token runs;
  ``reset_counters``: In, one beat zeroes them.
- ``busy``: Out, high while a token runs.

Errors are found at issue, before an instruction has any effect (the checks are the
reference executor's, ``compiler/execute.py``): the core emits an ERROR record (code, pc),
ends the token with ``ok`` = 0 and answers every later token the same way until
``reset_state``.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.hdl import ResetInserter
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from mmfree_fpga import isa
from mmfree_fpga import numerics as N
from mmfree_fpga.core_config import CoreConfig
from mmfree_fpga.isa import ErrorCode, MatvecMode, Opcode, Space

from .elementwise import ElementwiseUnit, Op
from .engine import TernaryEngine
from .mlgru import MLGRUUnit
from .norm import AbsmaxQuantize, Dequantize, RmsRsqrt, scales_layout
from .pipeline import round_half, round_shift_var
from .scalar import PFloat

#: The counters, in the order the host reads them (``commands.COUNTERS`` names the same).
COUNTERS = ("CYCLES", "ENGINE_BUSY", "ENGINE_WAIT_WEIGHTS", "WAIT_VECTOR", "SEQUENCER",
            "INSTRUCTIONS", "TOKENS")

# Record types (commands.py defines them for the host; the values are the protocol's).
REC_TRACE, REC_RESULT, REC_ERROR = 0x01, 0x02, 0x04


def run_beat(cfg: CoreConfig) -> data.StructLayout:
    return data.StructLayout({"token": unsigned(isa.ROWS_BITS),
                              "k_run": range(cfg.max_topk + 1), "last": 1})


class Core(wiring.Component):
    def __init__(self, cfg: CoreConfig):
        if cfg.lanes & (cfg.lanes - 1):
            raise ValueError("the core needs a power-of-two lane count")
        if cfg.max_n & (cfg.max_n - 1):
            raise ValueError("the core needs max_n a power of two (STATE regions)")
        self.cfg = cfg
        self.abits = {s: max(1, ceil_log2(cfg.size(s))) for s in Space}
        host = {}
        for s in (Space.WEIGHTS, Space.PARAMS, Space.EMBED, Space.SCRATCH, Space.PROGRAM):
            host[f"wr_{s.name.lower()}"] = In(stream.Signature(data.StructLayout({
                "addr": unsigned(self.abits[s]), "data": unsigned(cfg.word_width(s))})))
        for s in (Space.PARAMS, Space.EMBED, Space.SCRATCH, Space.PROGRAM):
            host[f"rd_{s.name.lower()}_addr"] = In(unsigned(self.abits[s]))
            host[f"rd_{s.name.lower()}_data"] = Out(unsigned(cfg.word_width(s)))
        super().__init__({
            "run": In(stream.Signature(run_beat(cfg))),
            "reset_state": In(stream.Signature(1)),
            "records": Out(stream.Signature(8)),
            "token_done": Out(stream.Signature(1)),
            "counters": Out(data.ArrayLayout(32, len(COUNTERS))),
            "reset_counters": In(stream.Signature(1)),
            "busy": Out(1),
            **host,
        })

    # -- helpers ---------------------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        lanes = cfg.lanes
        glog = ceil_log2(lanes)

        # -- memories ----------------------------------------------------------------------
        def mem(space, shape):
            m.submodules[f"mem_{space.name.lower()}"] = mm = memory.Memory(
                shape=shape, depth=cfg.size(space), init=[])
            return mm

        m_prog = mem(Space.PROGRAM, isa.WORD_BITS)
        m_par = mem(Space.PARAMS, 32)
        m_emb = mem(Space.EMBED, 16)
        m_scr = mem(Space.SCRATCH, 32)
        m_wgt = mem(Space.WEIGHTS, cfg.word_bits)

        def host_write(mm, space):
            port = mm.write_port()
            s = getattr(self, f"wr_{space.name.lower()}")
            m.d.comb += [s.ready.eq(~self.busy), port.addr.eq(s.payload.addr),
                         port.data.eq(s.payload.data), port.en.eq(s.valid & ~self.busy)]
            return port

        host_write(m_prog, Space.PROGRAM)
        host_write(m_par, Space.PARAMS)
        host_write(m_emb, Space.EMBED)
        host_write(m_wgt, Space.WEIGHTS)
        scr_host_wr = self.wr_scratch

        prog_rd = m_prog.read_port()
        par_rd = [m_par.read_port() for _ in range(2)]
        emb_rd = m_emb.read_port()
        scr_rd = [m_scr.read_port() for _ in range(3)]
        scr_wr = m_scr.write_port()
        wgt_rd = m_wgt.read_port()

        # -- units -------------------------------------------------------------------------
        flush = Signal()                     # reset_state: empty the activation queue
        max_groups = -(-cfg.max_rows // lanes)
        engine = TernaryEngine(lanes, cfg.max_k, max_groups)
        m.submodules.engine = ResetInserter(flush)(engine)
        m.submodules.rms = rms = RmsRsqrt(cfg.max_k)
        m.submodules.quant = quant = AbsmaxQuantize(cfg.max_k)
        count_bits = ceil_log2(cfg.max_rows + 1)
        m.submodules.deq = deq = Dequantize(count_bits)
        m.submodules.mlgru = mlgru = MLGRUUnit(cfg.state_words)
        m.submodules.elem = elem = ElementwiseUnit()

        # activation queue: (m, k, rows) per vector in the engine's banks
        qlayout = data.StructLayout({"m": PFloat, "k": unsigned(isa.LEN_BITS),
                                     "rows": unsigned(isa.ROWS_BITS)})
        mq = fifo.SyncFIFOBuffered(width=qlayout.size, depth=isa.QUEUE_DEPTH)
        m.submodules.mq = ResetInserter(flush)(mq)
        mq_head = data.View(qlayout, mq.r_data)
        mq_count = Signal(range(isa.QUEUE_DEPTH + 1))

        # -- sequencer state ---------------------------------------------------------------
        ir = Signal(isa.WORD_BITS)
        pc = Signal(range(cfg.program_words + 1))
        token = Signal(isa.ROWS_BITS)
        k_run = Signal(range(cfg.max_topk + 1))
        last_tok = Signal()
        first = Signal(init=1)               # the next token starts a sequence
        halted = Signal()
        err_code = Signal(8)
        err_pc = Signal(16)
        ran_topk = Signal()
        regs = Signal(data.ArrayLayout(PFloat, isa.NUM_REGS))
        opcode = ir[:isa.OPCODE_BITS]

        def f(op, name):
            fl = isa.FIELDS[op][name]
            v = ir[fl.offset:fl.offset + fl.width]
            return v.as_signed() if fl.signed else v

        def pf(op, name):
            mant, exp = isa.PF_FIELDS[name]
            val = Signal(PFloat, name=f"{op.name.lower()}_{name}")
            m.d.comb += [val.mant.eq(f(op, mant)), val.exp.eq(f(op, exp))]
            return val

        # -- gather: read up to 3 SCRATCH, 2 PARAMS and 1 EMBED words at base + j, in order,
        # into a FIFO (credits cover the read latency, so back-pressure never drops one) -----
        g_base_s = [Signal(self.abits[Space.SCRATCH] + 1, name=f"g_base_s{i}") for i in range(3)]
        g_base_p = [Signal(self.abits[Space.PARAMS] + 1, name=f"g_base_p{i}") for i in range(2)]
        g_base_e = Signal(self.abits[Space.EMBED] + 1)
        g_len, g_j = Signal(isa.LEN_BITS + 1), Signal(isa.LEN_BITS + 1)
        g_start = Signal()
        g_active = Signal()
        glayout = data.StructLayout({"s0": 32, "s1": 32, "s2": 32, "p0": 32, "p1": 32,
                                     "e0": 16})
        m.submodules.gfifo = gfifo = fifo.SyncFIFOBuffered(width=glayout.size, depth=4)
        g_out = data.View(glayout, gfifo.r_data)
        g_issue, g_inflight = Signal(), Signal()
        m.d.comb += g_issue.eq(g_active & (g_j < g_len) & (gfifo.level + g_inflight < 3))
        m.d.sync += g_inflight.eq(g_issue)
        with m.If(g_start):
            m.d.sync += [g_j.eq(0), g_active.eq(1)]
        with m.Elif(g_issue):
            m.d.sync += g_j.eq(g_j + 1)
        m.d.comb += [gfifo.w_en.eq(g_inflight),
                     gfifo.w_data.eq(Cat(scr_rd[0].data, scr_rd[1].data, scr_rd[2].data,
                                         par_rd[0].data, par_rd[1].data, emb_rd.data))]

        # -- scatter: SCRATCH[dst + j] = value, in order ------------------------------------
        s_dst = Signal(self.abits[Space.SCRATCH] + 1)
        s_j = Signal(isa.ROWS_BITS + 1)
        s_en, s_val = Signal(), Signal(32)
        with m.If(s_en):
            m.d.sync += s_j.eq(s_j + 1)

        # -- weight reader: WEIGHTS[waddr + j] for j < G * k into a FIFO to the engine -------
        w_base = Signal(self.abits[Space.WEIGHTS] + 1)
        w_len, w_j = Signal(32), Signal(32)
        w_start, w_active = Signal(), Signal()
        m.submodules.wfifo = wfifo = fifo.SyncFIFOBuffered(width=cfg.word_bits, depth=4)
        w_issue, w_inflight = Signal(), Signal()
        m.d.comb += [w_issue.eq(w_active & (w_j < w_len) & (wfifo.level + w_inflight < 3)),
                     wgt_rd.addr.eq(w_base + w_j),
                     wfifo.w_en.eq(w_inflight), wfifo.w_data.eq(wgt_rd.data),
                     engine.weights.valid.eq(wfifo.r_rdy),
                     engine.weights.payload.eq(wfifo.r_data),
                     wfifo.r_en.eq(engine.weights.ready)]
        m.d.sync += w_inflight.eq(w_issue)
        with m.If(w_start):
            m.d.sync += [w_j.eq(0), w_active.eq(1)]
        with m.Elif(w_issue):
            m.d.sync += w_j.eq(w_j + 1)

        # -- lane serializer: the engine's lanes-wide result -> one accumulator per beat,
        # rows past the product's end dropped --------------------------------------------
        ser_buf = Signal(engine.acc.payload.shape(), reset_less=True)
        ser_left = Signal(range(lanes + 1))      # lanes still to send from ser_buf
        ser_rows = Signal(isa.ROWS_BITS + 1)     # rows of the product still to send
        ser_out = Signal(signed(32))
        ser_valid = Signal()
        m.d.comb += [ser_out.eq(ser_buf[0]), ser_valid.eq(ser_left != 0),
                     engine.acc.ready.eq(ser_left == 0),
                     deq.acc.valid.eq(ser_valid), deq.acc.payload.eq(ser_out)]
        with m.If(engine.acc.valid & engine.acc.ready):
            m.d.sync += [ser_buf.eq(engine.acc.payload),
                         ser_left.eq(Mux(ser_rows < lanes, ser_rows, lanes))]
        with m.Elif(deq.acc.valid & deq.acc.ready):
            m.d.sync += [ser_buf.eq(Cat(ser_buf.as_value()[32:], Const(0, 32))),
                         ser_left.eq(ser_left - 1), ser_rows.eq(ser_rows - 1)]

        # -- top-k: a sorted list of (logit, id), largest first, ties to the lower id -------
        # One insertion per cycle: every cell compares the new element with its own value;
        # the first cell the new one beats takes it and every cell after it shifts down.
        tk = cfg.max_topk
        tk_logit = [Signal(signed(32), name=f"tk_logit{i}") for i in range(tk)]
        tk_id = [Signal(isa.ROWS_BITS, name=f"tk_id{i}") for i in range(tk)]
        tk_full = [Signal(name=f"tk_full{i}") for i in range(tk)]
        tk_clear, tk_in, tk_val = Signal(), Signal(), Signal(signed(32))
        tk_next_id = Signal(isa.ROWS_BITS)
        beats = [Signal(name=f"tk_beats{i}") for i in range(tk)]
        for i in range(tk):
            m.d.comb += beats[i].eq(~tk_full[i] | (tk_val > tk_logit[i]))
        with m.If(tk_clear):
            m.d.sync += [c.eq(0) for c in tk_full] + [tk_next_id.eq(0)]
        with m.Elif(tk_in):
            m.d.sync += tk_next_id.eq(tk_next_id + 1)
            for i in range(tk):
                prev = beats[i - 1] if i else Const(0)
                with m.If(beats[i] & ~prev):        # the new element lands here
                    m.d.sync += [tk_logit[i].eq(tk_val), tk_id[i].eq(tk_next_id),
                                 tk_full[i].eq(1)]
                with m.Elif(prev):                   # shifted down by one
                    m.d.sync += [tk_logit[i].eq(tk_logit[i - 1]), tk_id[i].eq(tk_id[i - 1]),
                                 tk_full[i].eq(tk_full[i - 1])]

        # -- record emitter: up to 8 bytes of a value, LSB first ----------------------------
        em_sh = Signal(64)
        em_left = Signal(4)
        em_load, em_val, em_n = Signal(), Signal(64), Signal(4)
        em_ready = Signal()
        m.d.comb += [self.records.valid.eq(em_left != 0), self.records.payload.eq(em_sh[:8]),
                     em_ready.eq((em_left == 0) | ((em_left == 1) & self.records.ready))]
        with m.If(em_load):
            m.d.sync += [em_sh.eq(em_val), em_left.eq(em_n)]
        with m.Elif(self.records.valid & self.records.ready):
            m.d.sync += [em_sh.eq(em_sh >> 8), em_left.eq(em_left - 1)]

        # -- counters ----------------------------------------------------------------------
        cnt = {name: Signal(32, name=f"cnt_{name.lower()}") for name in COUNTERS}
        inc = {name: Signal(name=f"inc_{name.lower()}") for name in COUNTERS}
        m.d.comb += self.reset_counters.ready.eq(~self.busy)
        for i, name in enumerate(COUNTERS):
            m.d.comb += self.counters[i].eq(cnt[name])
            with m.If(self.reset_counters.valid & ~self.busy):
                m.d.sync += cnt[name].eq(0)
            with m.Elif(inc[name]):
                m.d.sync += cnt[name].eq(cnt[name] + 1)
        m.d.comb += [inc["CYCLES"].eq(self.busy),
                     inc["ENGINE_BUSY"].eq(engine.weights.valid & engine.weights.ready)]

        # -- default port wiring -----------------------------------------------------------
        exec_op = Signal(8)                  # the opcode being executed (0: none)
        m.d.comb += [
            prog_rd.addr.eq(Mux(self.busy, pc, self.rd_program_addr)),
            self.rd_program_data.eq(prog_rd.data),
            self.rd_params_data.eq(par_rd[0].data),
            self.rd_embed_data.eq(emb_rd.data),
            self.rd_scratch_data.eq(scr_rd[0].data),
        ]
        with m.If(self.busy):
            m.d.comb += [scr_rd[i].addr.eq(g_base_s[i] + g_j) for i in range(3)]
            m.d.comb += [par_rd[i].addr.eq(g_base_p[i] + g_j) for i in range(2)]
            m.d.comb += emb_rd.addr.eq(g_base_e + g_j)
            m.d.comb += [scr_wr.addr.eq(s_dst + s_j), scr_wr.data.eq(s_val),
                         scr_wr.en.eq(s_en)]
        with m.Else():
            m.d.comb += [scr_rd[0].addr.eq(self.rd_scratch_addr),
                         par_rd[0].addr.eq(self.rd_params_addr),
                         emb_rd.addr.eq(self.rd_embed_addr),
                         scr_wr.addr.eq(scr_host_wr.payload.addr),
                         scr_wr.data.eq(scr_host_wr.payload.data),
                         scr_wr.en.eq(scr_host_wr.valid)]
        m.d.comb += scr_host_wr.ready.eq(~self.busy)

        # unit inputs from the gather FIFO, by the executing opcode
        is_op = {op: Signal(name=f"is_{op.name.lower()}") for op in Opcode}
        for op in Opcode:
            m.d.comb += is_op[op].eq(exec_op == op)
        G = g_out
        m.d.comb += [
            rms.i.payload.u.eq(G.s0), rms.i.payload.g.eq(G.p0[:16]),
            quant.i.payload.u.eq(G.s0), quant.i.payload.g.eq(G.p0[:16]),
            mlgru.i.payload.zi.eq(G.s0), mlgru.i.payload.zf.eq(G.s1),
            mlgru.i.payload.zg.eq(G.s2), mlgru.i.payload.lb.eq(G.p0[:N.GATE_FRAC + 1]),
            mlgru.i.payload.gn.eq(G.p1[:16]), mlgru.i.payload.first.eq(first),
            elem.i.payload.a.eq(G.s0), elem.i.payload.b.eq(G.s1),
            elem.i.payload.op.eq(Mux(is_op[Opcode.GLU], Op.GLU, Op.ADD)),
            rms.i.valid.eq(is_op[Opcode.RMS] & gfifo.r_rdy),
            quant.i.valid.eq(is_op[Opcode.QUANT] & gfifo.r_rdy),
            mlgru.i.valid.eq(is_op[Opcode.MLGRU] & gfifo.r_rdy),
            elem.i.valid.eq((is_op[Opcode.GLU] | is_op[Opcode.ADD]) & gfifo.r_rdy),
        ]
        # the engine takes the quantizer's codes; its k and row groups come from the QUANT
        # being executed (sampled with the vector's first code)
        q_len = f(Opcode.QUANT, "len")
        q_rows = f(Opcode.QUANT, "rows")
        m.d.comb += [engine.act.valid.eq(quant.q.valid), engine.act.payload.eq(quant.q.payload.q),
                     quant.q.ready.eq(engine.act.ready),
                     engine.k.eq(q_len), engine.groups.eq((q_rows + lanes - 1) >> glog)]

        # MLGRU configuration from the MLGRU instruction (held while it executes)
        max_n_log = ceil_log2(cfg.max_n)
        m.d.comb += [mlgru.n.eq(f(Opcode.MLGRU, "n")),
                     mlgru.base.eq(f(Opcode.MLGRU, "layer") << max_n_log),
                     mlgru.gn_frac.eq(f(Opcode.MLGRU, "gn_frac"))]

        # -- the checks at issue (the reference executor's, in its order) ------------------
        chk_code = Signal(8)
        mul_a, mul_b = Signal(32), Signal(isa.LEN_BITS)
        mul_p = Signal(48)                   # token * len (EMBED), groups * k (MATVEC)
        m.d.sync += mul_p.eq(mul_a * mul_b)

        def span_bad(addr, n, space):
            return (addr + n) > cfg.size(space)

        def length_bad(v, cap=None):
            return (v == 0) | (Const(0) if cap is None else (v > cap))

        def overlap(dst, a, n):
            return (a != dst) & (a < dst + n) & (dst < a + n)

        def chain(m, conds):
            """The first true condition's code, else NONE."""
            with m.If(conds[0][0]):
                m.d.comb += chk_code.eq(conds[0][1])
            for c, code in conds[1:]:
                with m.Elif(c):
                    m.d.comb += chk_code.eq(code)

        used = {op: isa.used_bits(op) for op in Opcode}
        L, A, T, Q = ErrorCode.LENGTH, ErrorCode.ADDRESS, ErrorCode.TOPK, ErrorCode
        S_, P_, E_, W_ = Space.SCRATCH, Space.PARAMS, Space.EMBED, Space.WEIGHTS
        with m.Switch(opcode):
            for op in Opcode:
                with m.Case(op):
                    def fl(name, op=op):
                        return f(op, name)

                    reserved = ir[used[op]:] != 0 if used[op] < isa.WORD_BITS else Const(0)
                    conds = [(reserved, Q.ILLEGAL)]
                    if op == Opcode.EMBED:
                        m.d.comb += [mul_a.eq(token), mul_b.eq(fl("len"))]
                        conds += [(length_bad(fl("len"), cfg.max_d), L),
                                  (length_bad(fl("rows")), L),
                                  (span_bad(fl("dst"), fl("len"), S_), A),
                                  (token >= fl("rows"), Q.TOKEN),
                                  (span_bad(fl("base") + mul_p, fl("len"), E_), A)]
                    elif op in (Opcode.RMS, Opcode.QUANT):
                        gain_used = Const(1) if op == Opcode.QUANT else ~fl("no_gain")
                        conds += [(length_bad(fl("len"), cfg.max_k), L),
                                  (span_bad(fl("src"), fl("len"), S_), A),
                                  (gain_used & span_bad(fl("gain"), fl("len"), P_), A)]
                        if op == Opcode.QUANT:
                            conds += [(mq_count >= isa.QUEUE_DEPTH, Q.QUEUE_OVERFLOW),
                                      (length_bad(fl("rows"), cfg.max_rows), L)]
                    elif op == Opcode.MATVEC:
                        groups = (fl("rows") + lanes - 1) >> glog
                        m.d.comb += [mul_a.eq(groups), mul_b.eq(fl("k"))]
                        topk = fl("mode") == MatvecMode.TOPK
                        conds += [(fl("mode") == 3, Q.ILLEGAL),
                                  (length_bad(fl("k"), cfg.max_k), L),
                                  (length_bad(fl("rows"), cfg.max_rows), L),
                                  (span_bad(fl("waddr"), mul_p, W_), A),
                                  (~topk & span_bad(fl("dst"), fl("rows"), S_), A),
                                  (mq_count == 0, Q.QUEUE_UNDERFLOW),
                                  (mq_head.k != fl("k"), Q.K_MISMATCH),
                                  (mq_head.rows != fl("rows"), Q.K_MISMATCH),
                                  (topk & ran_topk, T),
                                  (topk & (k_run > fl("rows")), T)]
                    elif op == Opcode.MLGRU:
                        n = fl("n")
                        conds += [(length_bad(n, cfg.max_n), L)]
                        conds += [(span_bad(fl(z), n, S_), A) for z in ("zi", "zf", "zg")]
                        conds += [(span_bad(fl("dst"), n, S_), A),
                                  (span_bad(fl("lb"), n << 1, P_), A),
                                  (fl("layer") >= cfg.max_layers, A)]
                        conds += [(overlap(fl("dst"), fl(z), n), Q.OVERLAP)
                                  for z in ("zi", "zf", "zg")]
                    elif op in (Opcode.GLU, Opcode.ADD):
                        a, b = ("gate", "up") if op == Opcode.GLU else ("a", "b")
                        n = fl("len")
                        conds += [(length_bad(n), L), (span_bad(fl(a), n, S_), A),
                                  (span_bad(fl(b), n, S_), A), (span_bad(fl("dst"), n, S_), A),
                                  (overlap(fl("dst"), fl(a), n), Q.OVERLAP),
                                  (overlap(fl("dst"), fl(b), n), Q.OVERLAP)]
                    elif op == Opcode.TRACE:
                        conds += [(length_bad(fl("len")), L),
                                  (span_bad(fl("src"), fl("len"), S_), A)]
                    elif op == Opcode.END:
                        conds += [(mq_count != 0, Q.QUEUE_LEFT), ((k_run != 0) & ~ran_topk, T)]
                    chain(m, conds)
            with m.Default():
                m.d.comb += chk_code.eq(Q.ILLEGAL)

        # -- the sequencer FSM -------------------------------------------------------------
        deq_scales = Signal(scales_layout(count_bits))
        m.d.comb += deq.scales.payload.eq(deq_scales)
        em_count = Signal(isa.ROWS_BITS + 1)   # elements or pairs left to emit
        quant_done_q, quant_done_s = Signal(), Signal()
        tk_emit = Signal(range(tk + 1))
        mv_deq_sent = Signal()

        with m.FSM(name="seq"):
            with m.State("IDLE"):
                m.d.comb += [self.run.ready.eq(1), self.reset_state.ready.eq(~self.run.valid)]
                with m.If(self.run.valid):
                    m.d.sync += [token.eq(self.run.payload.token),
                                 k_run.eq(self.run.payload.k_run),
                                 last_tok.eq(self.run.payload.last), pc.eq(0),
                                 ran_topk.eq(0), self.busy.eq(1)]
                    with m.If(halted):
                        m.next = "ERROR"
                    with m.Else():
                        m.next = "FETCH"
                with m.Elif(self.reset_state.valid):
                    m.d.comb += flush.eq(1)
                    m.d.sync += [first.eq(1), halted.eq(0), err_code.eq(0), mq_count.eq(0)]

            with m.State("FETCH"):           # the program memory reads pc this cycle
                m.d.comb += inc["SEQUENCER"].eq(1)
                with m.If(pc >= cfg.program_words):
                    m.d.sync += [err_code.eq(ErrorCode.ADDRESS), err_pc.eq(pc), halted.eq(1)]
                    m.next = "ERROR"
                with m.Else():
                    m.next = "LATCH"
            with m.State("LATCH"):
                m.d.comb += inc["SEQUENCER"].eq(1)
                m.d.sync += ir.eq(prog_rd.data)
                m.next = "PREP"
            with m.State("PREP"):            # the multiply for the range checks settles
                m.d.comb += inc["SEQUENCER"].eq(1)
                m.next = "CHECK"
            with m.State("CHECK"):
                m.d.comb += inc["SEQUENCER"].eq(1)
                with m.If(chk_code != 0):
                    m.d.sync += [err_code.eq(chk_code), err_pc.eq(pc), halted.eq(1)]
                    m.next = "ERROR"
                with m.Elif(opcode == Opcode.END):
                    m.next = "DONE"
                with m.Elif(opcode == Opcode.SKIP_UNLESS_LAST):
                    with m.If(k_run == 0):
                        m.next = "DONE"
                    with m.Else():
                        m.d.sync += pc.eq(pc + 1)
                        m.next = "FETCH"
                with m.Else():
                    m.d.comb += inc["INSTRUCTIONS"].eq(1)
                    m.d.sync += [exec_op.eq(opcode), s_j.eq(0)]
                    m.next = "ISSUE"

            with m.State("ISSUE"):           # set up the gather, the scatter and the units
                m.d.comb += inc["SEQUENCER"].eq(1)
                with m.Switch(exec_op):
                    with m.Case(Opcode.EMBED):
                        m.d.sync += [g_base_e.eq(f(Opcode.EMBED, "base") + mul_p),
                                     g_len.eq(f(Opcode.EMBED, "len")),
                                     s_dst.eq(f(Opcode.EMBED, "dst"))]
                        m.d.comb += g_start.eq(1)
                        m.next = "EMBED"
                    with m.Case(Opcode.RMS):
                        op = Opcode.RMS
                        m.d.sync += [g_base_s[0].eq(f(op, "src")), g_base_p[0].eq(f(op, "gain")),
                                     g_len.eq(f(op, "len"))]
                        m.d.comb += g_start.eq(1)
                        m.next = "RMS_CFG"
                    with m.Case(Opcode.QUANT):
                        op = Opcode.QUANT
                        m.d.sync += [g_base_s[0].eq(f(op, "src")), g_base_p[0].eq(f(op, "gain")),
                                     g_len.eq(f(op, "len")), quant_done_q.eq(0),
                                     quant_done_s.eq(0)]
                        m.d.comb += g_start.eq(1)
                        m.next = "QUANT_CFG"
                    with m.Case(Opcode.MATVEC):
                        op = Opcode.MATVEC
                        mode = f(op, "mode")
                        m.d.sync += [w_base.eq(f(op, "waddr")), w_len.eq(mul_p),
                                     ser_rows.eq(f(op, "rows")), s_dst.eq(f(op, "dst")),
                                     g_base_s[0].eq(f(op, "dst")), g_len.eq(f(op, "rows")),
                                     em_count.eq(f(op, "rows")), mv_deq_sent.eq(0),
                                     deq_scales.act_max.eq(mq_head.m),
                                     deq_scales.inv_rms.eq(regs[f(op, "reg")]),
                                     deq_scales.w_scale.eq(pf(op, "w_scale")),
                                     deq_scales.count.eq(f(op, "rows"))]
                        m.d.comb += [w_start.eq(1), mq.r_en.eq(1),
                                     g_start.eq(mode == MatvecMode.ADD),
                                     tk_clear.eq(1)]
                        m.d.sync += mq_count.eq(mq_count - 1)
                        with m.If(mode == MatvecMode.TOPK):
                            m.d.sync += ran_topk.eq(1)
                        m.next = "MATVEC"
                    with m.Case(Opcode.MLGRU):
                        op = Opcode.MLGRU
                        m.d.sync += [g_base_s[0].eq(f(op, "zi")), g_base_s[1].eq(f(op, "zf")),
                                     g_base_s[2].eq(f(op, "zg")), g_base_p[0].eq(f(op, "lb")),
                                     g_base_p[1].eq(f(op, "lb") + f(op, "n")),
                                     g_len.eq(f(op, "n")), s_dst.eq(f(op, "dst"))]
                        m.d.comb += g_start.eq(1)
                        m.next = "STREAM"
                    with m.Case(Opcode.GLU):
                        op = Opcode.GLU
                        m.d.sync += [g_base_s[0].eq(f(op, "gate")), g_base_s[1].eq(f(op, "up")),
                                     g_len.eq(f(op, "len")), s_dst.eq(f(op, "dst"))]
                        m.d.comb += g_start.eq(1)
                        m.next = "STREAM"
                    with m.Case(Opcode.ADD):
                        op = Opcode.ADD
                        m.d.sync += [g_base_s[0].eq(f(op, "a")), g_base_s[1].eq(f(op, "b")),
                                     g_len.eq(f(op, "len")), s_dst.eq(f(op, "dst"))]
                        m.d.comb += g_start.eq(1)
                        m.next = "STREAM"
                    with m.Case(Opcode.TRACE):
                        op = Opcode.TRACE
                        m.d.sync += [g_base_s[0].eq(f(op, "src")), g_len.eq(f(op, "len")),
                                     em_count.eq(f(op, "len"))]
                        m.next = "TRACE_HEAD"

            with m.State("EMBED"):           # x = rshift_round(e, frac - 16)
                m.d.comb += inc["WAIT_VECTOR"].eq(1)
                frac = f(Opcode.EMBED, "frac")
                e = g_out.e0.as_signed()
                left = Signal(5)
                m.d.comb += left.eq(Mux(frac <= N.X_FRAC, N.X_FRAC - frac, 0))
                right = Signal(6)
                m.d.comb += right.eq(Mux(frac > N.X_FRAC, frac - N.X_FRAC, 0))
                shifted = Mux(frac <= N.X_FRAC, e << left,
                              round_half(round_shift_var(e.as_signed(), right)))
                m.d.comb += [s_val.eq(shifted), s_en.eq(gfifo.r_rdy), gfifo.r_en.eq(1)]
                with m.If(gfifo.r_rdy & (s_j + 1 == g_len)):
                    m.next = "NEXT"

            with m.State("RMS_CFG"):
                m.d.comb += inc["WAIT_VECTOR"].eq(1)
                op = Opcode.RMS
                m.d.comb += [rms.cfg.valid.eq(1), rms.cfg.payload.k.eq(f(op, "len")),
                             rms.cfg.payload.a_frac.eq(f(op, "frac")),
                             rms.cfg.payload.no_gain.eq(f(op, "no_gain")),
                             rms.cfg.payload.sqrt_k.eq(pf(op, "sqrt_k"))]
                with m.If(rms.cfg.ready):
                    m.next = "RMS"
            with m.State("RMS"):
                m.d.comb += [inc["WAIT_VECTOR"].eq(1), gfifo.r_en.eq(rms.i.ready),
                             rms.o.ready.eq(1)]
                with m.If(rms.o.valid):
                    m.d.sync += regs[f(Opcode.RMS, "reg")].eq(rms.o.payload)
                    m.next = "NEXT"

            with m.State("QUANT_CFG"):
                m.d.comb += inc["WAIT_VECTOR"].eq(1)
                op = Opcode.QUANT
                m.d.comb += [quant.cfg.valid.eq(1), quant.cfg.payload.k.eq(f(op, "len")),
                             quant.cfg.payload.g_frac.eq(f(op, "frac"))]
                with m.If(quant.cfg.ready):
                    m.next = "QUANT"
            with m.State("QUANT"):
                op = Opcode.QUANT
                m.d.comb += [inc["WAIT_VECTOR"].eq(1), gfifo.r_en.eq(quant.i.ready),
                             quant.scale.ready.eq(~quant_done_s)]
                entry = data.View(qlayout, mq.w_data)
                m.d.comb += [entry.m.eq(quant.scale.payload), entry.k.eq(f(op, "len")),
                             entry.rows.eq(f(op, "rows")),
                             mq.w_en.eq(quant.scale.valid & ~quant_done_s)]
                got_s = quant_done_s | quant.scale.valid
                got_q = quant_done_q | (quant.q.valid & quant.q.ready & quant.q.payload.last)
                with m.If(quant.scale.valid & ~quant_done_s):
                    m.d.sync += [quant_done_s.eq(1), mq_count.eq(mq_count + 1)]
                with m.If(quant.q.valid & quant.q.ready & quant.q.payload.last):
                    m.d.sync += quant_done_q.eq(1)
                with m.If(got_s & got_q):
                    m.next = "NEXT"

            with m.State("MATVEC"):
                op = Opcode.MATVEC
                mode = f(op, "mode")
                m.d.comb += [deq.scales.valid.eq(~mv_deq_sent),
                             inc["ENGINE_WAIT_WEIGHTS"].eq(engine.weights.ready
                                                           & ~engine.weights.valid)]
                with m.If(deq.scales.ready):
                    m.d.sync += mv_deq_sent.eq(1)
                with m.Switch(mode):
                    with m.Case(MatvecMode.STORE):
                        m.d.comb += [deq.o.ready.eq(1), s_val.eq(deq.o.payload),
                                     s_en.eq(deq.o.valid)]
                        with m.If(deq.o.valid & (s_j + 1 == f(op, "rows"))):
                            m.next = "MV_END"
                    with m.Case(MatvecMode.ADD):
                        x, y = g_out.s0.as_signed(), deq.o.payload
                        total = Signal(signed(34))
                        m.d.comb += [total.eq(x + y),
                                     deq.o.ready.eq(gfifo.r_rdy),
                                     gfifo.r_en.eq(deq.o.valid),
                                     s_val.eq(Mux(total > N.X_MAX, N.X_MAX,
                                                  Mux(total < N.X_MIN, N.X_MIN, total))),
                                     s_en.eq(deq.o.valid & gfifo.r_rdy)]
                        with m.If(deq.o.valid & gfifo.r_rdy & (s_j + 1 == f(op, "rows"))):
                            m.next = "MV_END"
                    with m.Default():      # TOPK
                        m.d.comb += [deq.o.ready.eq(1), tk_in.eq(deq.o.valid),
                                     tk_val.eq(deq.o.payload), s_en.eq(0)]
                        with m.If(deq.o.valid):
                            m.d.sync += s_j.eq(s_j + 1)
                        with m.If(deq.o.valid & (s_j + 1 == f(op, "rows"))):
                            m.next = "TOPK_SETTLE"
            with m.State("MV_END"):
                m.d.sync += w_active.eq(0)
                m.next = "NEXT"
            with m.State("TOPK_SETTLE"):     # the last insertion lands this cycle
                m.d.sync += [w_active.eq(0), tk_emit.eq(0)]
                m.next = "RESULT_HEAD" if tk else "NEXT"
            with m.State("RESULT_HEAD"):
                m.d.comb += [em_val.eq(Cat(Const(REC_RESULT, 8), k_run.as_unsigned()[:8])),
                             em_n.eq(2), em_load.eq(em_ready)]
                with m.If(em_ready):
                    m.next = "RESULT_PAIRS"
            with m.State("RESULT_PAIRS"):
                with m.If(tk_emit == k_run):
                    m.next = "NEXT"
                with m.Else():
                    sel_id = Signal(isa.ROWS_BITS)
                    sel_logit = Signal(signed(32))
                    with m.Switch(tk_emit):
                        for i in range(tk):
                            with m.Case(i):
                                m.d.comb += [sel_id.eq(tk_id[i]), sel_logit.eq(tk_logit[i])]
                    m.d.comb += [em_val.eq(Cat(sel_id, Const(0, 32 - isa.ROWS_BITS),
                                               sel_logit)),
                                 em_n.eq(8), em_load.eq(em_ready)]
                    with m.If(em_ready):
                        m.d.sync += tk_emit.eq(tk_emit + 1)

            with m.State("STREAM"):          # MLGRU, GLU, ADD: gather -> unit -> scatter
                m.d.comb += inc["WAIT_VECTOR"].eq(1)
                with m.If(is_op[Opcode.MLGRU]):
                    m.d.comb += [gfifo.r_en.eq(mlgru.i.ready), mlgru.o.ready.eq(1),
                                 s_val.eq(mlgru.o.payload), s_en.eq(mlgru.o.valid)]
                with m.Else():
                    m.d.comb += [gfifo.r_en.eq(elem.i.ready), elem.o.ready.eq(1),
                                 s_val.eq(elem.o.payload), s_en.eq(elem.o.valid)]
                with m.If(Mux(is_op[Opcode.MLGRU], mlgru.o.valid, elem.o.valid)
                          & (s_j + 1 == g_len)):
                    m.next = "NEXT"

            with m.State("TRACE_HEAD"):
                op = Opcode.TRACE
                m.d.comb += [em_val.eq(Cat(Const(REC_TRACE, 8), f(op, "tag"), f(op, "len"))),
                             em_n.eq(5), em_load.eq(em_ready)]
                with m.If(em_ready):
                    m.d.comb += g_start.eq(1)
                    m.next = "TRACE"
            with m.State("TRACE"):
                m.d.comb += [em_val.eq(g_out.s0), em_n.eq(4),
                             em_load.eq(em_ready & gfifo.r_rdy),
                             gfifo.r_en.eq(em_ready)]
                with m.If(em_ready & gfifo.r_rdy):
                    m.d.sync += em_count.eq(em_count - 1)
                    with m.If(em_count == 1):
                        m.next = "NEXT"

            with m.State("NEXT"):
                m.d.sync += [exec_op.eq(0), g_active.eq(0), pc.eq(pc + 1)]
                m.next = "FETCH"

            with m.State("DONE"):            # the records have left: report the token
                with m.If(em_left == 0):
                    m.d.comb += [self.token_done.valid.eq(1), self.token_done.payload.eq(1)]
                    with m.If(self.token_done.ready):
                        m.d.comb += inc["TOKENS"].eq(1)
                        m.d.sync += [first.eq(0), self.busy.eq(0)]
                        m.next = "IDLE"

            with m.State("ERROR"):           # ERROR record: type, code, pc
                m.d.comb += [em_val.eq(Cat(Const(REC_ERROR, 8), err_code, err_pc)),
                             em_n.eq(4), em_load.eq(em_ready)]
                with m.If(em_ready):
                    m.d.sync += exec_op.eq(0)
                    m.next = "ERROR_DONE"
            with m.State("ERROR_DONE"):
                with m.If(em_left == 0):
                    m.d.comb += [self.token_done.valid.eq(1), self.token_done.payload.eq(0)]
                    with m.If(self.token_done.ready):
                        m.d.sync += self.busy.eq(0)
                        m.next = "IDLE"
        return m
