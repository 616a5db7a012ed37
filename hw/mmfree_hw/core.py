"""The accelerator core: a sequencer that runs the ISA's program (``mmfree_fpga.isa``) for one
token at a time on the datapath units, with the vector scratchpad, the parameter, embedding
and program memories on chip. The weights are not the core's: it fetches them from a weight
store through one stream pair (``weight_req`` / ``weight_words``), which is
``weights.WeightMemory`` (block RAM) in ``top.Accelerator`` and may be SDRAM behind a
prefetch FIFO; the core works with any latency and any gaps there.

Four pipes run at once, each one instruction at a time, fed in program order by one issue
stage:

=======  ================================  =================================================
pipe     instructions                      path
=======  ================================  =================================================
RMS      RMS                               gather (SCRATCH, PARAMS) -> RmsRsqrt -> R[reg]
QUANT    QUANT                             gather -> AbsmaxQuantize -> the engine's
                                           activation bank, its scale -> the queue
MATVEC   MATVEC                            weight_words -> engine -> lane serializer ->
                                           Dequantize -> SCRATCH (STORE; ADD: + the old
                                           value, saturated) or the top-k cells
VECTOR   EMBED, MLGRU, GLU, ADD, TRACE     gather -> unit -> SCRATCH or the record stream
=======  ================================  =================================================

So RMS and QUANT of one vector read it side by side, the QUANT of the next projection fills
the engine's free bank while a MATVEC runs, and vector work overlaps the engine. The ISA's
semantics are sequential; the pipes keep them element by element ("chaining", as vector
machines do): every pipe reads and writes its vectors in order, so an element may be read
once every *earlier* instruction still running has written it (and must not be written
before every earlier one has read or written it). A gather or a scatter whose next
address is still pending in an earlier pipe waits a cycle; nothing else is interlocked
except MATVEC on an earlier RMS of its register (the dequantizer takes ``R`` as the MATVEC
starts). The MLGRU thus runs behind the g_proj outputs, the norms of o behind the MLGRU,
the GLU behind the up half of gate_proj, and the residual stream's norms behind the
fused residual add.

Ports (every one a stream, except ``counters`` and ``busy``):

- ``run``: In, ``command.RUN_LAYOUT`` per token: the token id, ``k_run`` (candidates
  wanted, 0 for a prompt token; at most ``max_topk``, which the command processor
  checks). The core runs the program
  from PROGRAM address 0 until END (or SKIP_UNLESS_LAST when ``k_run`` = 0).
- ``reset_state``: In, one beat while idle: the next token starts a sequence (the MLGRU
  takes h = 0), the activation queue is emptied and an error state is cleared.
- ``records``: Out, bytes: the token's TRACE, RESULT and ERROR records, exactly as
  ``mmfree_fpga.commands`` specifies them (the command processor adds DONE).
- ``token_done``: Out, one beat per token after its records: ``ok`` = 0 after an error.
- ``mem_<space>``, one per memory space but WEIGHTS (:data:`HOST_SPACES`): the command
  processor's access port (``command.mem_access_signature``, flipped): writes and reads,
  only while no token runs (``ready`` is low while one does); a read's word is valid the
  cycle after its address and held until taken. STATE is the MLGRU unit's own memory.
  The host reaches WEIGHTS at the weight store (``top.Accelerator`` connects it there).
- ``weight_req``: Out, ``weights.request_layout(weight_addr_bits, weight_count_bits)``
  (an address of WEIGHTS; a count up to ``weight_words``): one request per MATVEC,
  ``{waddr, ceil(rows / lanes) * k}``, offered as the MATVEC enters the engine's front
  (the cycle after its dispatch) and never past the end (the range is checked at issue).
  The front is free for the next MATVEC once the request and the serializer's beat are
  taken and the back end has the MATVEC, so the next request is offered while this
  one's words still stream: a store may take it at once and prefetch.
- ``weight_words``: In, ``cfg.word_bits``: the requested words in request order, any
  latency, any gaps; the engine takes them (``ready`` is the engine's own).
- ``counters``: Out, ``commands.COUNTERS`` x 32 bits, stable while no token runs;
  ``reset_counters``: In, one beat (while idle) zeroes them.
- ``busy``: Out, high while a token runs.
- With ``embed_external=True`` (the embedding in SDRAM, ``top.Accelerator(sdram=...)``):
  the core has no ``mem_embed`` port (the host reaches EMBED at the memory) and instead
  ``embed_req``: Out, ``weights.request_layout(EMBED address bits, LEN_BITS + 1)``: the
  EMBED instruction's row ``{base + token x len, len}``, one beat per EMBED; and
  ``embed_data``: In, 16 bits: the row's entries in order, always taken (``ready`` is
  high). The row lands in an on-chip buffer of ``max_d`` entries, then the instruction
  runs as before from there: the buffer replaces the EMBED memory, which on a board is
  2 MB for the shipped model.

Counters, one of the four categories each running cycle: ``ENGINE_BUSY`` (the engine took
a weight word), ``ENGINE_WAIT_WEIGHTS`` (it could have and none was there, while a MATVEC
is in the front or requested words are still owed: the weight store's latency and gaps),
``WAIT_VECTOR`` (otherwise, while a pipe works: the engine waits for codes, the
dequantizer, a vector unit or an element another pipe has not written yet),
``SEQUENCER`` (no pipe busy: fetch, decode, checks); ``CYCLES`` is their sum.

Errors are found at issue, before an instruction has any effect (the checks are the
reference executor's, ``compiler/execute.py``, in its order): the core lets the earlier
instructions finish, emits an ERROR record (code, pc), ends the token with ``ok`` = 0 and
answers every later token the same way until ``reset_state``.

Memory ports: SCRATCH has six read ports (RMS, QUANT, MATVEC's ADD, three for the vector
pipe) and one write port, which the MATVEC back end and the vector pipe share (the vector
pipe's scatter waits a cycle when both would write: the engine's results never wait);
PARAMS has four read ports and the host's write. Every memory has one writer, so synthesis
maps each onto block RAM replicated once per read port (an ECP5 DP16KD: one write and one
read port per copy), except PARAMS, which only the host writes while the core is idle:
two true dual-port copies (``_SharedWriteRam``), each serving the write or a read on one
port and a read on the other.

Weights, cycle by cycle: with ``WeightMemory`` (``LATENCY`` = 4) a MATVEC's first word is
at the engine 5 cycles after its dispatch; a MATVEC that follows another in the front
(the usual case: i_proj, f_proj, g_proj) has its request taken at the edge of the
previous run's last read, so the engine sees no gap between the two products. The words
of two MATVECs at most are owed at once (the back end's and the front's).
"""

from __future__ import annotations

from amaranth import Cat, Const, Elaboratable, Module, Mux, Signal, signed
from amaranth.hdl import ResetInserter
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from mmfree_fpga import isa
from mmfree_fpga import numerics as N
from mmfree_fpga.commands import COUNTERS, RecordType
from mmfree_fpga.core_config import CoreConfig
from mmfree_fpga.isa import ErrorCode, MatvecMode, Opcode, Space

from .command import RUN_LAYOUT, TOKEN_DONE_LAYOUT, mem_access_signature, port_name
from .elementwise import ElementwiseUnit, Op
from .engine import TernaryEngine
from .gating import gate
from .mlgru import MLGRUUnit
from .norm import AbsmaxQuantize, Dequantize, RmsRsqrt
from .pipeline import X, round_half, round_shift_var
from .scalar import PFloat
from .serialize import LaneSerializer, RegisterSlice
from .topk import TopK
from .weights import request_layout

# The pipes. A MATVEC occupies the engine's front (MVF: weights into the engine) and then
# its back end (MV: serializer, dequantizer, scratchpad or top-k), so the next MATVEC's
# weights stream while the previous one's last rows drain.
RMS_P, QNT_P, MV_P, VEC_P, MVF_P = range(5)
NPIPES = 5
#: The spaces whose host access port the core serves (WEIGHTS lives behind ``weight_req``
#: / ``weight_words``: ``top.Accelerator`` connects the host's WEIGHTS port to the weight
#: store itself).
HOST_SPACES = tuple(s for s in Space if s != Space.WEIGHTS)


class _SharedWriteRam(Elaboratable):
    """A memory with one write port and N read ports, like ``lib.memory.Memory``'s
    ``write_port()`` / ``read_port()`` (``addr``, ``data``, ``en``; reads with one cycle of
    latency, the old word on a read of an address being written), built from
    ceil(N / 2) true dual-port copies (``hardblocks.BlockRam``): a copy's port A takes
    the write and, in every cycle without one, a read; its port B a second read. Half the
    copies that synthesis makes of a ``Memory`` with N read ports (it gives each read its
    own copy), for a memory that is written only while nobody reads it: PARAMS, which
    only the host writes, and only while the core is idle. A read through port A in a
    cycle with a write reads the written address instead (its ``data`` is then
    meaningless), so a writer must never overlap the readers."""

    def __init__(self, width: int, depth: int):
        self.width, self.depth = width, depth
        self.abits = max(1, ceil_log2(depth))
        self._w = None
        self._reads = []

    def write_port(self):
        assert self._w is None, "one write port"
        self._w = _Port(self.abits, self.width, "w")
        return self._w

    def read_port(self):
        r = _Port(self.abits, self.width, f"r{len(self._reads)}")
        self._reads.append(r)
        return r

    def elaborate(self, platform):
        from .hardblocks import BlockRam
        m = Module()
        w = self._w
        for c in range(0, len(self._reads), 2):
            pair = self._reads[c:c + 2]
            m.submodules[f"copy{c // 2}"] = ram = BlockRam(self.width, self.depth)
            a = pair[0]
            m.d.comb += [ram.a_addr.eq(Mux(w.en, w.addr, a.addr)), ram.a_wdata.eq(w.data),
                         ram.a_we.eq(w.en), a.data.eq(ram.a_rdata)]
            if len(pair) == 2:
                m.d.comb += [ram.b_addr.eq(pair[1].addr), pair[1].data.eq(ram.b_rdata)]
        return m


class _Port:
    def __init__(self, abits: int, width: int, name: str):
        self.addr = Signal(abits, name=f"{name}_addr")
        self.data = Signal(width, name=f"{name}_data")
        self.en = Signal(name=f"{name}_en")


class _Gather:
    """Reads ``base[k] + j`` of each port for j < len, in order, into a FIFO whose credits
    cover the one-cycle read latency (back-pressure never drops an element). A read issues
    while the FIFO's entries plus the one in flight leave room for it, so with its
    consumer taking one per cycle it reads one element per cycle."""

    DEPTH = 4

    def __init__(self, m: Module, name: str, s_ports, p_ports=(), e_port=None,
                 abits=None):
        self.m, self.name = m, name
        sa, pa, ea = abits
        self.base_s = [Signal(sa + 1, name=f"{name}_base_s{i}") for i in range(len(s_ports))]
        self.use_s = [Signal(name=f"{name}_use_s{i}") for i in range(len(s_ports))]
        self.base_p = [Signal(pa + 1, name=f"{name}_base_p{i}") for i in range(len(p_ports))]
        self.base_e = Signal(ea + 1, name=f"{name}_base_e")
        self.length = Signal(isa.LEN_BITS + 1, name=f"{name}_len")
        self.j = Signal(isa.LEN_BITS + 1, name=f"{name}_j")
        self.start = Signal(name=f"{name}_start")
        self.active = Signal(name=f"{name}_active")
        self.blocked = Signal(name=f"{name}_blocked")   # an earlier pipe still writes there
        fields = {f"s{i}": 32 for i in range(len(s_ports))}
        fields |= {f"p{i}": 32 for i in range(len(p_ports))}
        if e_port is not None:
            fields["e0"] = 16
        self.layout = data.StructLayout(fields)
        m.submodules[f"{name}_fifo"] = self.fifo = fifo.SyncFIFOBuffered(
            width=self.layout.size, depth=self.DEPTH)
        self.out = data.View(self.layout, self.fifo.r_data)
        issue, inflight = Signal(name=f"{name}_issue"), Signal(name=f"{name}_inflight")
        self.issue = issue
        m.d.comb += issue.eq(self.active & (self.j < self.length) & ~self.blocked
                             & (self.fifo.level + inflight < self.DEPTH))
        m.d.sync += inflight.eq(issue)
        with m.If(self.start):
            m.d.sync += [self.j.eq(0), self.active.eq(1)]
        with m.Elif(issue):
            m.d.sync += self.j.eq(self.j + 1)
        words = [p.data for p in s_ports] + [p.data for p in p_ports]
        if e_port is not None:
            words.append(e_port.data)
        m.d.comb += [self.fifo.w_en.eq(inflight), self.fifo.w_data.eq(Cat(*words))]
        self.s_ports, self.p_ports, self.e_port = s_ports, p_ports, e_port

    def drive_addresses(self):
        m = self.m
        for port, base in zip(self.s_ports, self.base_s, strict=True):
            m.d.comb += port.addr.eq(base + self.j)
        for port, base in zip(self.p_ports, self.base_p, strict=True):
            m.d.comb += port.addr.eq(base + self.j)
        if self.e_port is not None:
            m.d.comb += self.e_port.addr.eq(self.base_e + self.j)

    def reads(self):
        """(used, base, end, next): the SCRATCH ranges still to be read."""
        return [(use, base, base + self.length, base + self.j)
                for use, base in zip(self.use_s, self.base_s, strict=True)]


class _Scatter:
    """Writes ``dst + w`` for w = 0, 1, ... into SCRATCH (``addr``, ``value`` and ``en`` for
    the write port, which the core shares between its scatters). A scatter built with
    ``yields_to`` waits (``can`` is low) in a cycle where that one writes."""

    def __init__(self, m: Module, name: str, sa: int, yields_to: _Scatter | None = None):
        self.m = m
        self.yields_to = yields_to
        self.dst = Signal(sa + 1, name=f"{name}_dst")
        self.length = Signal(isa.ROWS_BITS + 1, name=f"{name}_len")
        self.w = Signal(isa.ROWS_BITS + 1, name=f"{name}_w")
        self.active = Signal(name=f"{name}_active")     # this pipe writes SCRATCH now
        self.en, self.value = Signal(name=f"{name}_en"), Signal(32, name=f"{name}_value")
        self.blocked = Signal(name=f"{name}_blocked")   # an earlier pipe reads/writes there
        self.start = Signal(name=f"{name}_start")
        with m.If(self.start):
            m.d.sync += self.w.eq(0)
        with m.Elif(self.en):
            m.d.sync += self.w.eq(self.w + 1)

    @property
    def addr(self):
        return self.dst + self.w

    @property
    def can(self):
        if self.yields_to is None:
            return ~self.blocked
        return ~self.blocked & ~self.yields_to.en

    def pending(self):
        """(used, start, end) of the SCRATCH range not yet written."""
        return (self.active, self.dst + self.w, self.dst + self.length)


class _Static:
    """The ranges of an instruction that holds its vectors but has not started on them (a
    MATVEC whose weights stream while an earlier one's results drain): all pending."""

    def __init__(self, m: Module, name: str, sa: int):
        self.active = Signal(name=f"{name}_active")
        self.read_use = Signal(name=f"{name}_read_use")
        self.write_use = Signal(name=f"{name}_write_use")
        self.dst = Signal(sa + 1, name=f"{name}_dst")
        self.length = Signal(isa.ROWS_BITS + 1, name=f"{name}_len")

    def reads(self):
        return [(self.read_use, self.dst, self.dst + self.length, self.dst)]

    def pending(self):
        return (self.write_use, self.dst, self.dst + self.length)


class Core(wiring.Component):
    def __init__(self, cfg: CoreConfig, gate_idle: bool = False,
                 embed_external: bool = False):
        if cfg.lanes & (cfg.lanes - 1):
            raise ValueError("the core needs a power-of-two lane count")
        self.gate_idle = gate_idle
        if cfg.max_n & (cfg.max_n - 1):
            raise ValueError("the core needs max_n a power of two (STATE regions)")
        self.cfg = cfg
        self.abits = {s: max(1, ceil_log2(cfg.size(s))) for s in Space}
        #: the weight request's widths (``weights.request_layout``): an address of WEIGHTS
        #: (the host port's width) and a count of up to ``weight_words`` words
        self.weight_addr_bits = self.abits[Space.WEIGHTS]
        self.weight_count_bits = ceil_log2(cfg.weight_words + 1)
        self.embed_external = embed_external
        #: the spaces whose host port this core serves
        self.host_spaces = tuple(s for s in HOST_SPACES
                                 if not (embed_external and s == Space.EMBED))
        host = {port_name(s): In(mem_access_signature(self.abits[s], cfg.word_width(s)))
                for s in self.host_spaces}
        if embed_external:
            host["embed_req"] = Out(stream.Signature(
                request_layout(self.abits[Space.EMBED], isa.LEN_BITS + 1)))
            host["embed_data"] = In(stream.Signature(16))
        super().__init__({
            "weight_req": Out(stream.Signature(
                request_layout(self.weight_addr_bits, self.weight_count_bits))),
            "weight_words": In(stream.Signature(cfg.word_bits)),
            "run": In(stream.Signature(RUN_LAYOUT)),
            "reset_state": In(stream.Signature(0)),
            "records": Out(stream.Signature(8)),
            "token_done": Out(stream.Signature(TOKEN_DONE_LAYOUT)),
            "counters": Out(data.ArrayLayout(32, len(COUNTERS))),
            "reset_counters": In(stream.Signature(0)),
            "busy": Out(1),
            **host,
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        lanes = cfg.lanes
        glog = ceil_log2(lanes)
        sa, pa, ea = (self.abits[s] for s in (Space.SCRATCH, Space.PARAMS, Space.EMBED))

        # -- memories ----------------------------------------------------------------------
        def mem(space, shape, depth=None):
            m.submodules[f"mem_{space.name.lower()}"] = mm = memory.Memory(
                shape=shape, depth=depth or cfg.size(space), init=[])
            return mm

        m_prog = mem(Space.PROGRAM, isa.WORD_BITS)
        # PARAMS has four readers and only the host writes it (between tokens): two
        # true dual-port copies instead of four
        m.submodules.mem_params = m_par = _SharedWriteRam(32, cfg.size(Space.PARAMS))
        # an external embedding: this is the buffer its row is fetched into
        m_emb = mem(Space.EMBED, 16, cfg.max_d if self.embed_external else None)
        m_scr = mem(Space.SCRATCH, 32)
        for mm, space in ((m_prog, Space.PROGRAM), (m_par, Space.PARAMS),
                          (m_emb, Space.EMBED)):
            if space not in self.host_spaces:
                continue
            port, wr = mm.write_port(), getattr(self, port_name(space)).write
            m.d.comb += [wr.ready.eq(~self.busy), port.addr.eq(wr.payload.addr),
                         port.data.eq(wr.payload.data), port.en.eq(wr.valid & ~self.busy)]
        if self.embed_external:
            e_fill = Signal(isa.LEN_BITS + 1)        # entries of the row received
            e_wr = m_emb.write_port()
            m.d.comb += [self.embed_data.ready.eq(1), e_wr.addr.eq(e_fill),
                         e_wr.data.eq(self.embed_data.payload),
                         e_wr.en.eq(self.embed_data.valid)]
            with m.If(self.embed_data.valid):
                m.d.sync += e_fill.eq(e_fill + 1)
        prog_rd = m_prog.read_port()
        emb_rd = m_emb.read_port()
        scr_rd = {n: m_scr.read_port() for n in ("rms", "quant", "mv", "v0", "v1", "v2")}
        par_rd = {n: m_par.read_port() for n in ("rms", "quant", "v0", "v1")}
        # One write port: a block RAM replicated for the six reads (each copy one write and
        # one read port, as an ECP5 DP16KD has two) cannot also take a second writer. The
        # MATVEC back end and the vector pipe share it; the vector pipe yields.
        scr_wr = m_scr.write_port()

        # -- units -------------------------------------------------------------------------
        flush = Signal()                     # reset_state: empty the activation queue
        engine = TernaryEngine(lanes, cfg.max_k, -(-cfg.max_rows // lanes))
        m.submodules.engine = ResetInserter(flush)(engine)
        # The simulator gates the clocks of these units while they are idle (gating.py):
        # each is clocked while a port of it is valid and for ``hold`` cycles after (its
        # longest stretch of work with no port valid, with room to spare). The norms work
        # longer than that after their last element (a second pass and a scalar stage,
        # k + 76 cycles for RmsRsqrt): they are also clocked while their pipe has fed its
        # whole vector and is still busy (``*_fed``, driven below), not while it waits for
        # elements that an earlier pipe has still to write.
        def unit(name, u, hold=16, extra=()):
            if not self.gate_idle:
                m.submodules[name] = u
                return u
            return gate(m, name, u, hold=hold, extra=extra)

        rms_fed, qnt_fed = Signal(), Signal()
        rms = unit("rms", RmsRsqrt(cfg.max_k), extra=(rms_fed,))
        quant = unit("quant", AbsmaxQuantize(cfg.max_k), extra=(qnt_fed,))
        count_bits = ceil_log2(cfg.max_rows + 1)
        # 23 cycles of scale stage after a scales beat, then 7 per accumulator
        deq = unit("deq", Dequantize(count_bits), hold=48)
        mlgru = MLGRUUnit(cfg.state_words)
        # the host's STATE port reaches the MLGRU's memory (its reads: a cycle, then held)
        h_state = self.mem_state
        unit("mlgru", mlgru, hold=mlgru.LATENCY + 16,
             extra=(h_state.write.valid, h_state.read_addr.valid, h_state.read_data.valid))
        elem = ElementwiseUnit()
        unit("elem", elem, hold=elem.LATENCY + 16)
        # Register slices between these units and the SCRATCH write they feed: the vector
        # pipe's write waits on the MATVEC back end's (a shared port), and each unit's
        # o.ready is the global enable of its whole pipeline; the slice's ready is a
        # flip-flop, so neither that wait nor the scatter's address checks reach the unit.
        m.submodules.mlgru_out = mlgru_out = RegisterSlice(X)
        m.submodules.elem_out = elem_out = RegisterSlice(X)
        wiring.connect(m, mlgru.o, mlgru_out.i)
        wiring.connect(m, elem.o, elem_out.i)

        # the activation queue's scales, one per vector in the engine's banks
        mq = fifo.SyncFIFOBuffered(width=data.Layout.cast(PFloat).size, depth=isa.QUEUE_DEPTH)
        m.submodules.mq = ResetInserter(flush)(mq)

        # -- sequencer state ---------------------------------------------------------------
        ir = Signal(isa.WORD_BITS)
        pc = Signal(range(cfg.program_words + 1))
        token = Signal(32)
        k_run = Signal(range(cfg.max_topk + 1))
        first = Signal(init=1)               # the next token starts a sequence
        halted = Signal()
        err_code, err_pc = Signal(8), Signal(16)
        ran_topk = Signal()
        regs = Signal(data.ArrayLayout(PFloat, isa.NUM_REGS))
        opcode = ir[:isa.OPCODE_BITS]
        # the architectural activation queue (the sequential machine's, for the checks)
        aq_count = Signal(range(isa.QUEUE_DEPTH + 1))
        aq_k = [Signal(isa.LEN_BITS, name=f"aq_k{i}") for i in range(isa.QUEUE_DEPTH)]
        aq_rows = [Signal(isa.ROWS_BITS, name=f"aq_rows{i}") for i in range(isa.QUEUE_DEPTH)]

        busy = Signal(NPIPES)
        earlier = [Signal(NPIPES, name=f"earlier{p}") for p in range(NPIPES)]
        pir = [Signal(isa.WORD_BITS, name=f"ir{p}") for p in range(NPIPES)]
        go = Signal(NPIPES)                  # dispatch strobe per pipe
        done = Signal(NPIPES)                # completion strobe per pipe

        def field(word, op, name):
            fl = isa.FIELDS[op][name]
            v = word[fl.offset:fl.offset + fl.width]
            return v.as_signed() if fl.signed else v

        def f(op, name):
            return field(ir, op, name)

        def pf(word, op, name, tag):
            mant, exp = isa.PF_FIELDS[name]
            val = Signal(PFloat, name=f"{tag}_{name}")
            m.d.comb += [val.mant.eq(field(word, op, mant)), val.exp.eq(field(word, op, exp))]
            return val

        # -- gathers and scatters ----------------------------------------------------------
        abits = (sa, pa, ea)
        g_rms = _Gather(m, "g_rms", [scr_rd["rms"]], [par_rd["rms"]], abits=abits)
        g_qnt = _Gather(m, "g_qnt", [scr_rd["quant"]], [par_rd["quant"]], abits=abits)
        m.d.comb += [rms_fed.eq(busy[RMS_P] & g_rms.active & (g_rms.j == g_rms.length)),
                     qnt_fed.eq(busy[QNT_P] & g_qnt.active & (g_qnt.j == g_qnt.length))]
        g_mv = _Gather(m, "g_mv", [scr_rd["mv"]], abits=abits)
        g_vec = _Gather(m, "g_vec", [scr_rd["v0"], scr_rd["v1"], scr_rd["v2"]],
                        [par_rd["v0"], par_rd["v1"]], emb_rd, abits=abits)
        sc_mv = _Scatter(m, "sc_mv", sa)
        sc_vec = _Scatter(m, "sc_vec", sa, yields_to=sc_mv)
        st_mvf = _Static(m, "mvf", sa)
        gathers = {RMS_P: g_rms, QNT_P: g_qnt, MV_P: g_mv, VEC_P: g_vec, MVF_P: st_mvf}
        scatters = {MV_P: sc_mv, VEC_P: sc_vec, MVF_P: st_mvf}

        # chaining: an element waits for every earlier pipe's pending write (and a write
        # for every earlier pipe's pending read) of its address
        def inside(addr, rng):
            use, lo, hi = rng
            return use & (addr >= lo) & (addr < hi)

        for p, g in gathers.items():
            if p == MVF_P:
                continue                     # reads nothing until it is the back end
            hits = []
            for q, sc in scatters.items():
                if q == p:
                    continue
                for use, base, _end, _nxt in g.reads():
                    hits.append(earlier[p][q] & use & inside(base + g.j, sc.pending()))
            m.d.comb += g.blocked.eq(Cat(*hits).any() if hits else 0)
        for p, sc in scatters.items():
            if p == MVF_P:
                continue
            addr = sc.dst + sc.w
            hits = []
            for q in range(NPIPES):
                if q == p:
                    continue
                for use, _base, end, nxt in gathers[q].reads():
                    hits.append(earlier[p][q] & inside(addr, (use & gathers[q].active,
                                                              nxt, end)))
                if q in scatters:
                    hits.append(earlier[p][q] & inside(addr, scatters[q].pending()))
            m.d.comb += sc.blocked.eq(Cat(*hits).any() if hits else 0)

        # host access while no token runs: reads through a pipe's read port, answered the
        # cycle after the address and held (the address is kept) until taken
        host_addr = {}
        for space in self.host_spaces:
            acc = getattr(self, port_name(space))
            rvalid = Signal(name=f"host_{space.name.lower()}_rvalid")
            held = Signal(self.abits[space], name=f"host_{space.name.lower()}_addr")
            fire = acc.read_addr.valid & acc.read_addr.ready
            m.d.comb += acc.read_addr.ready.eq(~self.busy & (~rvalid | acc.read_data.ready))
            with m.If(fire):
                m.d.sync += [rvalid.eq(1), held.eq(acc.read_addr.payload)]
            with m.Elif(acc.read_data.ready):
                m.d.sync += rvalid.eq(0)
            host_addr[space] = Mux(fire, acc.read_addr.payload, held)
            m.d.comb += acc.read_data.valid.eq(rvalid)
        h_scr, h_state = self.mem_scratch, self.mem_state
        if not self.embed_external:
            m.d.comb += self.mem_embed.read_data.payload.eq(emb_rd.data)
            with m.If(~self.busy):
                m.d.comb += emb_rd.addr.eq(host_addr[Space.EMBED])
        m.d.comb += [prog_rd.addr.eq(Mux(self.busy, pc, host_addr[Space.PROGRAM])),
                     self.mem_program.read_data.payload.eq(prog_rd.data),
                     self.mem_params.read_data.payload.eq(par_rd["v0"].data),
                     self.mem_scratch.read_data.payload.eq(scr_rd["v0"].data),
                     self.mem_state.read_data.payload.eq(mlgru.host_rdata),
                     h_scr.write.ready.eq(~self.busy), h_state.write.ready.eq(~self.busy),
                     mlgru.host_en.eq(~self.busy),
                     mlgru.host_addr.eq(Mux(h_state.write.valid, h_state.write.payload.addr,
                                            host_addr[Space.STATE])),
                     mlgru.host_we.eq(h_state.write.valid),
                     mlgru.host_wdata.eq(h_state.write.payload.data)]
        for g in (g_rms, g_qnt, g_mv):
            g.drive_addresses()
        with m.If(self.busy):
            g_vec.drive_addresses()
            with m.If(sc_mv.en):
                m.d.comb += [scr_wr.addr.eq(sc_mv.addr), scr_wr.data.eq(sc_mv.value),
                             scr_wr.en.eq(1)]
            with m.Else():
                m.d.comb += [scr_wr.addr.eq(sc_vec.addr), scr_wr.data.eq(sc_vec.value),
                             scr_wr.en.eq(sc_vec.en)]
        with m.Else():
            m.d.comb += [scr_rd["v0"].addr.eq(host_addr[Space.SCRATCH]),
                         par_rd["v0"].addr.eq(host_addr[Space.PARAMS]),
                         scr_wr.addr.eq(h_scr.write.payload.addr),
                         scr_wr.data.eq(h_scr.write.payload.data),
                         scr_wr.en.eq(h_scr.write.valid)]

        # -- record emitter: up to 8 bytes of a value, LSB first; one client at a time -----
        em_sh, em_left = Signal(64), Signal(4)
        em_load, em_val, em_n, em_ready = Signal(), Signal(64), Signal(4), Signal()
        m.d.comb += [self.records.valid.eq(em_left != 0), self.records.payload.eq(em_sh[:8]),
                     em_ready.eq((em_left == 0) | ((em_left == 1) & self.records.ready))]
        with m.If(em_load):
            m.d.sync += [em_sh.eq(em_val), em_left.eq(em_n)]
        with m.Elif(self.records.valid & self.records.ready):
            m.d.sync += [em_sh.eq(em_sh >> 8), em_left.eq(em_left - 1)]
        em_vec = {"load": Signal(), "val": Signal(64), "n": Signal(4)}
        em_mv = {"load": Signal(), "val": Signal(64), "n": Signal(4)}
        em_seq = {"load": Signal(), "val": Signal(64), "n": Signal(4)}
        for client in (em_vec, em_mv, em_seq):
            with m.If(client["load"]):
                m.d.comb += [em_load.eq(1), em_val.eq(client["val"]), em_n.eq(client["n"])]

        # -- weights: one request per MATVEC, {waddr, G * k} (latched at dispatch from the
        # range check's product), issued by the front; the words go straight to the
        # engine, whatever the memory's latency and gaps. w_owed counts the words
        # requested and not yet taken (two products' at most: the front's and the back
        # end's), for ENGINE_WAIT_WEIGHTS.
        wreq = self.weight_req
        w_addr = Signal(self.weight_addr_bits)
        w_count = Signal(self.weight_count_bits)
        w_owed = Signal(self.weight_count_bits + 1)
        wiring.connect(m, wiring.flipped(self.weight_words), engine.weights)
        m.d.comb += [wreq.payload.addr.eq(w_addr), wreq.payload.count.eq(w_count)]
        w_took = engine.weights.valid & engine.weights.ready
        w_asked = wreq.valid & wreq.ready
        m.d.sync += w_owed.eq(w_owed + Mux(w_asked, w_count, 0) - w_took)

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
        took = w_took
        # a MATVEC in the front or words owed: the engine could take a word and none came
        starved = ((w_owed != 0) | busy[MVF_P]) & engine.weights.ready & ~engine.weights.valid
        m.d.comb += [inc["CYCLES"].eq(self.busy), inc["ENGINE_BUSY"].eq(took),
                     inc["ENGINE_WAIT_WEIGHTS"].eq(~took & starved),
                     inc["WAIT_VECTOR"].eq(self.busy & ~took & ~starved & busy.any()),
                     inc["SEQUENCER"].eq(self.busy & ~busy.any())]

        # -- pipe bookkeeping --------------------------------------------------------------
        for p in range(NPIPES):
            with m.If(go[p]):
                if p == MV_P:                # the handoff from the front: its instruction
                    m.d.sync += [busy[p].eq(1), pir[p].eq(pir[MVF_P]),
                                 earlier[p].eq(earlier[MVF_P] & busy & ~done)]
                else:
                    m.d.sync += [busy[p].eq(1), pir[p].eq(ir),
                                 earlier[p].eq(busy & ~done)]
            with m.Elif(done[p]):
                m.d.sync += busy[p].eq(0)
            for q in range(NPIPES):
                if q != p:
                    with m.If(done[q] & ~go[p]):
                        m.d.sync += earlier[p][q].eq(0)
        # at the handoff, whoever came after the front's MATVEC comes after the back end's
        for q in range(NPIPES):
            if q in (MV_P, MVF_P):
                continue
            later = Mux(go[q], busy[MVF_P], earlier[q][MVF_P])
            with m.If(go[MV_P] & later):
                m.d.sync += earlier[q][MV_P].eq(1)

        # ==================================================================================
        # RMS pipe: R[reg] = rms_rsqrt(S[src:+len], P[gain:+len] or 1, frac)
        # ==================================================================================
        w = pir[RMS_P]
        op = Opcode.RMS
        m.d.comb += [rms.i.payload.u.eq(g_rms.out.s0), rms.i.payload.g.eq(g_rms.out.p0[:16]),
                     rms.i.valid.eq(g_rms.fifo.r_rdy), g_rms.fifo.r_en.eq(rms.i.ready),
                     rms.cfg.payload.k.eq(field(w, op, "len")),
                     rms.cfg.payload.a_frac.eq(field(w, op, "frac")),
                     rms.cfg.payload.no_gain.eq(field(w, op, "no_gain")),
                     rms.cfg.payload.sqrt_k.eq(pf(w, op, "sqrt_k", "rms")),
                     g_rms.use_s[0].eq(1)]
        with m.FSM(name="rms_pipe"):
            with m.State("IDLE"):
                with m.If(go[RMS_P]):
                    m.next = "START"
            with m.State("START"):
                m.d.sync += [g_rms.base_s[0].eq(field(w, op, "src")),
                             g_rms.base_p[0].eq(field(w, op, "gain")),
                             g_rms.length.eq(field(w, op, "len"))]
                m.d.comb += g_rms.start.eq(1)
                m.next = "CFG"
            with m.State("CFG"):
                m.d.comb += rms.cfg.valid.eq(1)
                with m.If(rms.cfg.ready):
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += rms.o.ready.eq(1)
                with m.If(rms.o.valid):
                    m.d.sync += [regs[field(w, op, "reg")].eq(rms.o.payload),
                                 g_rms.active.eq(0)]
                    m.d.comb += done[RMS_P].eq(1)
                    m.next = "IDLE"

        # ==================================================================================
        # QUANT pipe: codes into the engine's free bank, the scale into the queue
        # ==================================================================================
        w = pir[QNT_P]
        op = Opcode.QUANT
        q_got_s, q_ecfg_pending = Signal(), Signal()
        m.d.comb += [quant.i.payload.u.eq(g_qnt.out.s0),
                     quant.i.payload.g.eq(g_qnt.out.p0[:16]),
                     quant.i.valid.eq(g_qnt.fifo.r_rdy), g_qnt.fifo.r_en.eq(quant.i.ready),
                     quant.cfg.payload.k.eq(field(w, op, "len")),
                     quant.cfg.payload.g_frac.eq(field(w, op, "frac")),
                     engine.act.valid.eq(quant.q.valid),
                     engine.act.payload.eq(quant.q.payload.q),
                     quant.q.ready.eq(engine.act.ready),
                     engine.cfg.valid.eq(q_ecfg_pending),
                     engine.cfg.payload.k.eq(field(w, op, "len")),
                     engine.cfg.payload.groups.eq((field(w, op, "rows") + lanes - 1) >> glog),
                     mq.w_data.eq(quant.scale.payload),
                     g_qnt.use_s[0].eq(1)]
        # One engine cfg beat per QUANT, armed in START. The engine takes it with the
        # vector's first code, which comes after the quantizer's whole first pass, so the
        # beat is always waiting by then and costs no cycle; w holds until that code is in
        # (the pipe is freed no earlier), so the payload is this instruction's.
        with m.If((engine.cfg.valid & engine.cfg.ready) | flush):
            m.d.sync += q_ecfg_pending.eq(0)
        # vectors the quantizer was given, and first codes the engine took (mod 4: at most
        # two vectors are in the quantizer and the engine's banks between the two)
        q_started, q_firsts = Signal(2), Signal(2)
        q_expect_first = Signal(init=1)
        code_in = quant.q.valid & quant.q.ready
        with m.If(code_in):
            m.d.sync += q_expect_first.eq(quant.q.payload.last)
            with m.If(q_expect_first):
                m.d.sync += q_firsts.eq(q_firsts + 1)
        with m.If(flush):
            m.d.sync += [q_started.eq(0), q_firsts.eq(0), q_expect_first.eq(1)]
        with m.FSM(name="quant_pipe"):
            with m.State("IDLE"):
                with m.If(go[QNT_P]):
                    m.next = "START"
            with m.State("START"):
                m.d.sync += [g_qnt.base_s[0].eq(field(w, op, "src")),
                             g_qnt.base_p[0].eq(field(w, op, "gain")),
                             g_qnt.length.eq(field(w, op, "len")),
                             q_got_s.eq(0), q_ecfg_pending.eq(1)]
                m.d.comb += g_qnt.start.eq(1)
                m.next = "CFG"
            with m.State("CFG"):
                m.d.comb += quant.cfg.valid.eq(1)
                with m.If(quant.cfg.ready):
                    m.d.sync += q_started.eq(q_started + 1)
                    m.next = "RUN"
            with m.State("RUN"):
                # Free once its elements are all in the quantizer, its scale is queued and
                # its first code has reached the engine (with this instruction's engine cfg
                # beat, taken at the same edge): the rest of its codes flow on their own while
                # the next QUANT's first pass overlaps them, as the unit allows.
                m.d.comb += [quant.scale.ready.eq(~q_got_s & mq.w_rdy),
                             mq.w_en.eq(quant.scale.valid & ~q_got_s)]
                with m.If(quant.scale.valid & ~q_got_s & mq.w_rdy):
                    m.d.sync += q_got_s.eq(1)
                fed = (g_qnt.j == g_qnt.length) & ~g_qnt.fifo.r_rdy
                first_in = (q_firsts == q_started) | (code_in & q_expect_first
                                                      & (q_firsts + 1 == q_started))
                with m.If((q_got_s | (quant.scale.valid & mq.w_rdy)) & fed & first_in):
                    m.d.sync += g_qnt.active.eq(0)
                    m.d.comb += done[QNT_P].eq(1)
                    m.next = "IDLE"

        # ==================================================================================
        # MATVEC pipe
        # ==================================================================================
        rms_reg = field(pir[RMS_P], Opcode.RMS, "reg")
        op = Opcode.MATVEC
        wf = pir[MVF_P]                       # the front's MATVEC
        w = pir[MV_P]                         # the back end's
        mv_mode = field(w, op, "mode")
        mv_rows = field(w, op, "rows")

        # lane serializer: the engine's lanes-wide result -> one accumulator per beat, rows
        # past the product's end dropped; each product's row count comes from the front
        ser = unit("ser", LaneSerializer(lanes, isa.ROWS_BITS + 1, engine.acc_bits))
        wiring.connect(m, engine.acc, ser.acc)
        m.d.comb += [deq.acc.valid.eq(ser.o.valid), deq.acc.payload.eq(ser.o.payload.acc),
                     ser.o.ready.eq(deq.acc.ready)]

        # the top-k unit: candidates of a TOPK MATVEC, largest first, ties to the lower id
        # (no pipe: the MATVEC back end is busy nearly all the time, the lm_head's share of
        # it a twelfth; its candidates' shift, LATENCY, is its only silent work)
        topk = TopK(cfg.max_topk, isa.ROWS_BITS)
        unit("topk", topk, hold=topk.LATENCY + 16)

        mv_out = Signal(isa.ROWS_BITS + 1)       # dequantized rows taken
        m.d.comb += [deq.scales.payload.act_max.eq(mq.r_data),
                     deq.scales.payload.inv_rms.eq(regs[field(w, op, "reg")]),
                     deq.scales.payload.w_scale.eq(pf(w, op, "w_scale", "mv")),
                     deq.scales.payload.count.eq(mv_rows),
                     g_mv.use_s[0].eq(mv_mode == MatvecMode.ADD),
                     sc_mv.active.eq(busy[MV_P] & (mv_mode != MatvecMode.TOPK)),
                     sc_mv.length.eq(mv_rows)]
        # the front: the serializer's rows and the weight request, then the handoff to the
        # back end; its vectors are pending until the handoff
        f_rows, f_mode = field(wf, op, "rows"), field(wf, op, "mode")
        handed, cfg_sent, req_sent = Signal(), Signal(), Signal()
        m.d.comb += [st_mvf.active.eq(busy[MVF_P] & ~handed),
                     st_mvf.read_use.eq(st_mvf.active & (f_mode == MatvecMode.ADD)),
                     st_mvf.write_use.eq(st_mvf.active & (f_mode != MatvecMode.TOPK)),
                     st_mvf.dst.eq(field(wf, op, "dst")), st_mvf.length.eq(f_rows),
                     ser.cfg.payload.rows.eq(f_rows)]
        # The front is free once the product's request and serializer beat are taken and the
        # back end has it: its words then flow on their own (the back end is busy until
        # its rows are out, so until they are all in), and the next MATVEC's request goes
        # to the memory while they do: a store takes it when it likes (WeightMemory at the
        # edge of this run's last read), so the engine sees no gap between products.
        with m.FSM(name="mv_front"):
            with m.State("IDLE"):
                with m.If(go[MVF_P]):
                    m.d.sync += [handed.eq(0), cfg_sent.eq(0), req_sent.eq(0)]
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [ser.cfg.valid.eq(~cfg_sent), wreq.valid.eq(~req_sent)]
                with m.If(ser.cfg.ready):
                    m.d.sync += cfg_sent.eq(1)
                with m.If(wreq.ready):
                    m.d.sync += req_sent.eq(1)
                # hand the MATVEC to the back end as soon as it is free (in order)
                # The back end's scatter and ADD gather take the ranges in this same cycle:
                # the MATVEC is older than instructions already running, so its ranges must
                # stay visible without a gap (the front's until now, the back end's from the
                # next cycle on).
                with m.If(~handed & ~busy[MV_P]):
                    m.d.comb += [go[MV_P].eq(1), sc_mv.start.eq(1),
                                 g_mv.start.eq(f_mode == MatvecMode.ADD)]
                    m.d.sync += [handed.eq(1),
                                 sc_mv.dst.eq(field(wf, op, "dst")),
                                 g_mv.base_s[0].eq(field(wf, op, "dst")),
                                 g_mv.length.eq(f_rows)]
                with m.If((cfg_sent | ser.cfg.ready) & (req_sent | wreq.ready)
                          & (handed | ~busy[MV_P])):
                    m.d.comb += done[MVF_P].eq(1)
                    m.next = "IDLE"

        mv_before_scales = Signal()
        with m.FSM(name="mv_back") as mv_back:
            with m.State("IDLE"):
                with m.If(go[MV_P]):
                    m.next = "START"
            with m.State("START"):
                m.d.sync += mv_out.eq(0)
                # a TOPK's candidates: k_run of them (0: the unit takes the vector, says
                # nothing)
                with m.If(mv_mode == MatvecMode.TOPK):
                    m.d.comb += [topk.cfg.valid.eq(1), topk.cfg.payload.k.eq(k_run)]
                    with m.If(topk.cfg.ready):
                        m.next = "SCALES"
                with m.Else():
                    m.next = "SCALES"
            with m.State("SCALES"):          # its QUANT's scale and its RMS's R[reg]
                r_ready = ~(busy[RMS_P] & earlier[MV_P][RMS_P]
                            & (rms_reg == field(w, op, "reg")))
                m.d.comb += deq.scales.valid.eq(mq.r_rdy & r_ready)
                with m.If(mq.r_rdy & r_ready & deq.scales.ready):
                    m.d.comb += mq.r_en.eq(1)
                    m.next = "RUN"
            with m.State("RUN"):
                take = Signal()
                with m.Switch(mv_mode):
                    with m.Case(MatvecMode.STORE):
                        m.d.comb += [take.eq(deq.o.valid & sc_mv.can),
                                     sc_mv.value.eq(deq.o.payload), sc_mv.en.eq(take)]
                    with m.Case(MatvecMode.ADD):
                        total = Signal(signed(34))
                        m.d.comb += [total.eq(g_mv.out.s0.as_signed() + deq.o.payload),
                                     take.eq(deq.o.valid & g_mv.fifo.r_rdy & sc_mv.can),
                                     g_mv.fifo.r_en.eq(take),
                                     sc_mv.value.eq(Mux(total > N.X_MAX, N.X_MAX,
                                                        Mux(total < N.X_MIN, N.X_MIN, total))),
                                     sc_mv.en.eq(take)]
                    with m.Default():      # TOPK
                        m.d.comb += [take.eq(deq.o.valid & topk.i.ready),
                                     topk.i.valid.eq(deq.o.valid),
                                     topk.i.payload.logit.eq(deq.o.payload),
                                     topk.i.payload.last.eq(mv_out + 1 == mv_rows)]
                m.d.comb += deq.o.ready.eq(take)
                with m.If(take):
                    m.d.sync += mv_out.eq(mv_out + 1)
                    with m.If(mv_out + 1 == mv_rows):
                        m.d.sync += g_mv.active.eq(0)
                        m.next = "RESULT"
            with m.State("RESULT"):
                # candidates only for a TOPK with k_run > 0; records stay in program
                # order, so an earlier TRACE finishes first
                with m.If((mv_mode != MatvecMode.TOPK) | (k_run == 0)):
                    m.next = "FINISH"
                with m.Elif(~earlier[MV_P][VEC_P]):
                    m.d.comb += [em_mv["val"].eq(Cat(Const(RecordType.RESULT, 8),
                                                     k_run.as_unsigned()[:8])),
                                 em_mv["n"].eq(2), em_mv["load"].eq(em_ready)]
                    with m.If(em_ready):
                        m.next = "PAIRS"
            with m.State("PAIRS"):           # (id u32, logit i32) per candidate
                cand = topk.o.payload
                m.d.comb += [em_mv["val"].eq(Cat(cand.id, Const(0, 32 - isa.ROWS_BITS),
                                                 cand.logit)),
                             em_mv["n"].eq(8), em_mv["load"].eq(em_ready & topk.o.valid),
                             topk.o.ready.eq(em_ready)]
                with m.If(em_ready & topk.o.valid & cand.last):
                    m.next = "FINISH"
            with m.State("FINISH"):
                m.d.comb += done[MV_P].eq(1)
                m.next = "IDLE"

        m.d.comb += mv_before_scales.eq(busy[MV_P] & (mv_back.ongoing("IDLE")
                                                      | mv_back.ongoing("START")
                                                      | mv_back.ongoing("SCALES")))

        # ==================================================================================
        # VECTOR pipe: EMBED, MLGRU, GLU, ADD, TRACE
        # ==================================================================================
        w = pir[VEC_P]
        vop = w[:isa.OPCODE_BITS]
        G = g_vec.out
        v_embed_base = Signal(ea + 1)        # EMBED's row, computed at issue
        v_count = Signal(isa.LEN_BITS + 1)
        max_n_log = ceil_log2(cfg.max_n)
        # One MLGRU cfg beat per instruction, armed in START. Its payload comes straight
        # from w, which holds until the instruction is done; the unit's own queue is empty
        # between instructions, so the beat goes at once, and the unit holds i.ready low
        # until it has it, whenever the gather's first beat comes.
        mlgru_cfg_pending = Signal()
        with m.If(mlgru.cfg.valid & mlgru.cfg.ready):
            m.d.sync += mlgru_cfg_pending.eq(0)
        m.d.comb += [
            mlgru.i.payload.zi.eq(G.s0), mlgru.i.payload.zf.eq(G.s1),
            mlgru.i.payload.zg.eq(G.s2), mlgru.i.payload.lb.eq(G.p0[:N.GATE_FRAC + 1]),
            mlgru.i.payload.gn.eq(G.p1[:16]), mlgru.i.payload.first.eq(first),
            mlgru.cfg.valid.eq(mlgru_cfg_pending),
            mlgru.cfg.payload.n.eq(field(w, Opcode.MLGRU, "n")),
            mlgru.cfg.payload.base.eq(field(w, Opcode.MLGRU, "layer") << max_n_log),
            mlgru.cfg.payload.gn_frac.eq(field(w, Opcode.MLGRU, "gn_frac")),
            elem.i.payload.a.eq(G.s0), elem.i.payload.b.eq(G.s1),
            elem.i.payload.op.eq(Mux(vop == Opcode.GLU, Op.GLU, Op.ADD)),
            sc_vec.active.eq(busy[VEC_P] & (vop != Opcode.TRACE)),
        ]
        for op, used in ((Opcode.EMBED, ()), (Opcode.MLGRU, (0, 1, 2)), (Opcode.GLU, (0, 1)),
                         (Opcode.ADD, (0, 1)), (Opcode.TRACE, (0,))):
            with m.If(vop == op):
                m.d.comb += [g_vec.use_s[i].eq(1) for i in used]
        with m.FSM(name="vec_pipe"):
            with m.State("IDLE"):
                with m.If(go[VEC_P]):
                    m.next = "START"
            with m.State("START"):
                m.d.comb += [sc_vec.start.eq(1)]
                with m.Switch(vop):
                    with m.Case(Opcode.EMBED):
                        m.d.sync += [g_vec.length.eq(field(w, Opcode.EMBED, "len")),
                                     sc_vec.dst.eq(field(w, Opcode.EMBED, "dst")),
                                     sc_vec.length.eq(field(w, Opcode.EMBED, "len"))]
                        if self.embed_external:      # fetch the row into the buffer first
                            m.d.sync += [g_vec.base_e.eq(0), e_fill.eq(0)]
                            m.next = "EMBED_REQ"
                        else:
                            m.d.sync += g_vec.base_e.eq(v_embed_base)
                            m.d.comb += g_vec.start.eq(1)
                            m.next = "EMBED"
                    with m.Case(Opcode.MLGRU):
                        op = Opcode.MLGRU
                        n = field(w, op, "n")
                        m.d.sync += [g_vec.base_s[0].eq(field(w, op, "zi")),
                                     g_vec.base_s[1].eq(field(w, op, "zf")),
                                     g_vec.base_s[2].eq(field(w, op, "zg")),
                                     g_vec.base_p[0].eq(field(w, op, "lb")),
                                     g_vec.base_p[1].eq(field(w, op, "lb") + n),
                                     g_vec.length.eq(n), sc_vec.dst.eq(field(w, op, "dst")),
                                     sc_vec.length.eq(n), mlgru_cfg_pending.eq(1)]
                        m.d.comb += g_vec.start.eq(1)
                        m.next = "MLGRU"
                    for op, a, b in ((Opcode.GLU, "gate", "up"), (Opcode.ADD, "a", "b")):
                        with m.Case(op):
                            m.d.sync += [g_vec.base_s[0].eq(field(w, op, a)),
                                         g_vec.base_s[1].eq(field(w, op, b)),
                                         g_vec.length.eq(field(w, op, "len")),
                                         sc_vec.dst.eq(field(w, op, "dst")),
                                         sc_vec.length.eq(field(w, op, "len"))]
                            m.d.comb += g_vec.start.eq(1)
                            m.next = "ELEM"
                    with m.Case(Opcode.TRACE):
                        op = Opcode.TRACE
                        m.d.sync += [g_vec.base_s[0].eq(field(w, op, "src")),
                                     g_vec.length.eq(field(w, op, "len")),
                                     v_count.eq(field(w, op, "len"))]
                        m.next = "TRACE_HEAD"
            if self.embed_external:
                with m.State("EMBED_REQ"):
                    m.d.comb += [self.embed_req.valid.eq(1),
                                 self.embed_req.payload.addr.eq(v_embed_base),
                                 self.embed_req.payload.count.eq(
                                     field(w, Opcode.EMBED, "len"))]
                    with m.If(self.embed_req.ready):
                        m.next = "EMBED_FILL"
                with m.State("EMBED_FILL"):
                    with m.If(e_fill == g_vec.length):
                        m.d.comb += g_vec.start.eq(1)
                        m.next = "EMBED"
            with m.State("EMBED"):           # x = rshift_round(e, frac - 16)
                frac = field(w, Opcode.EMBED, "frac")
                e = G.e0.as_signed()
                left, right = Signal(5), Signal(6)
                m.d.comb += [left.eq(Mux(frac <= N.X_FRAC, N.X_FRAC - frac, 0)),
                             right.eq(Mux(frac > N.X_FRAC, frac - N.X_FRAC, 0))]
                take = g_vec.fifo.r_rdy & sc_vec.can
                m.d.comb += [sc_vec.value.eq(Mux(frac <= N.X_FRAC, e << left,
                                                 round_half(round_shift_var(e, right)))),
                             sc_vec.en.eq(take), g_vec.fifo.r_en.eq(take)]
                with m.If(take & (sc_vec.w + 1 == sc_vec.length)):
                    m.next = "END"
            for state, unit, out in (("MLGRU", mlgru, mlgru_out), ("ELEM", elem, elem_out)):
                with m.State(state):             # gather -> unit -> slice -> scatter
                    take = out.o.valid & sc_vec.can
                    m.d.comb += [unit.i.valid.eq(g_vec.fifo.r_rdy),
                                 g_vec.fifo.r_en.eq(unit.i.ready), out.o.ready.eq(sc_vec.can),
                                 sc_vec.value.eq(out.o.payload), sc_vec.en.eq(take)]
                    with m.If(take & (sc_vec.w + 1 == sc_vec.length)):
                        m.next = "END"
            with m.State("TRACE_HEAD"):
                # records stay in program order: an earlier MATVEC's RESULT goes first
                op = Opcode.TRACE
                ok = em_ready & ~earlier[VEC_P][MV_P] & ~earlier[VEC_P][MVF_P]
                m.d.comb += [em_vec["val"].eq(Cat(Const(RecordType.TRACE, 8), field(w, op, "tag"),
                                                  field(w, op, "len"))),
                             em_vec["n"].eq(5), em_vec["load"].eq(ok)]
                with m.If(ok):
                    m.d.comb += g_vec.start.eq(1)
                    m.next = "TRACE"
            with m.State("TRACE"):
                take = em_ready & g_vec.fifo.r_rdy
                m.d.comb += [em_vec["val"].eq(G.s0), em_vec["n"].eq(4), em_vec["load"].eq(take),
                             g_vec.fifo.r_en.eq(take)]
                with m.If(take):
                    m.d.sync += v_count.eq(v_count - 1)
                    with m.If(v_count == 1):
                        m.next = "END"
            with m.State("END"):
                m.d.sync += g_vec.active.eq(0)
                m.d.comb += done[VEC_P].eq(1)
                m.next = "IDLE"

        # ==================================================================================
        # issue: fetch, check, dispatch in program order
        # ==================================================================================
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

        def chain(conds):
            with m.If(conds[0][0]):
                m.d.comb += chk_code.eq(conds[0][1])
            for c, code in conds[1:]:
                with m.Elif(c):
                    m.d.comb += chk_code.eq(code)

        L, A, T, E = ErrorCode.LENGTH, ErrorCode.ADDRESS, ErrorCode.TOPK, ErrorCode
        S_, P_, E_, W_ = Space.SCRATCH, Space.PARAMS, Space.EMBED, Space.WEIGHTS
        aq_head_k, aq_head_rows = Signal(isa.LEN_BITS), Signal(isa.ROWS_BITS)
        aq_head = Signal(range(isa.QUEUE_DEPTH))
        m.d.comb += [aq_head_k.eq(Mux(aq_head, aq_k[1], aq_k[0])),
                     aq_head_rows.eq(Mux(aq_head, aq_rows[1], aq_rows[0]))]
        with m.Switch(opcode):
            for op in Opcode:
                with m.Case(op):
                    def fl(name, op=op):
                        return f(op, name)

                    used = isa.used_bits(op)
                    reserved = ir[used:] != 0 if used < isa.WORD_BITS else Const(0)
                    conds = [(reserved, E.ILLEGAL)]
                    if op == Opcode.EMBED:
                        m.d.comb += [mul_a.eq(token), mul_b.eq(fl("len"))]
                        conds += [(length_bad(fl("len"), cfg.max_d), L),
                                  (length_bad(fl("rows")), L),
                                  (span_bad(fl("dst"), fl("len"), S_), A),
                                  (token >= fl("rows"), E.TOKEN),
                                  (span_bad(fl("base") + mul_p, fl("len"), E_), A)]
                    elif op in (Opcode.RMS, Opcode.QUANT):
                        gain_used = Const(1) if op == Opcode.QUANT else ~fl("no_gain")
                        conds += [(length_bad(fl("len"), cfg.max_k), L),
                                  (span_bad(fl("src"), fl("len"), S_), A),
                                  (gain_used & span_bad(fl("gain"), fl("len"), P_), A)]
                        if op == Opcode.QUANT:
                            conds += [(aq_count >= isa.QUEUE_DEPTH, E.QUEUE_OVERFLOW),
                                      (length_bad(fl("rows"), cfg.max_rows), L)]
                    elif op == Opcode.MATVEC:
                        m.d.comb += [mul_a.eq((fl("rows") + lanes - 1) >> glog),
                                     mul_b.eq(fl("k"))]
                        topk = fl("mode") == MatvecMode.TOPK
                        conds += [(fl("mode") == 3, E.ILLEGAL),
                                  (length_bad(fl("k"), cfg.max_k), L),
                                  (length_bad(fl("rows"), cfg.max_rows), L),
                                  (span_bad(fl("waddr"), mul_p, W_), A),
                                  (~topk & span_bad(fl("dst"), fl("rows"), S_), A),
                                  (aq_count == 0, E.QUEUE_UNDERFLOW),
                                  (aq_head_k != fl("k"), E.K_MISMATCH),
                                  (aq_head_rows != fl("rows"), E.K_MISMATCH),
                                  (topk & ran_topk, T),
                                  (topk & (k_run > fl("rows")), T)]
                    elif op == Opcode.MLGRU:
                        n = fl("n")
                        conds += [(length_bad(n, cfg.max_n), L)]
                        conds += [(span_bad(fl(z), n, S_), A) for z in ("zi", "zf", "zg")]
                        conds += [(span_bad(fl("dst"), n, S_), A),
                                  (span_bad(fl("lb"), n << 1, P_), A),
                                  (fl("layer") >= cfg.max_layers, A)]
                        conds += [(overlap(fl("dst"), fl(z), n), E.OVERLAP)
                                  for z in ("zi", "zf", "zg")]
                    elif op in (Opcode.GLU, Opcode.ADD):
                        a, b = ("gate", "up") if op == Opcode.GLU else ("a", "b")
                        n = fl("len")
                        conds += [(length_bad(n), L), (span_bad(fl(a), n, S_), A),
                                  (span_bad(fl(b), n, S_), A), (span_bad(fl("dst"), n, S_), A),
                                  (overlap(fl("dst"), fl(a), n), E.OVERLAP),
                                  (overlap(fl("dst"), fl(b), n), E.OVERLAP)]
                    elif op == Opcode.TRACE:
                        conds += [(length_bad(fl("len")), L),
                                  (span_bad(fl("src"), fl("len"), S_), A)]
                    elif op == Opcode.END:
                        conds += [(aq_count != 0, E.QUEUE_LEFT), ((k_run != 0) & ~ran_topk, T)]
                    chain(conds)
            with m.Default():
                m.d.comb += chk_code.eq(E.ILLEGAL)

        pipe_of = {Opcode.RMS: RMS_P, Opcode.QUANT: QNT_P, Opcode.MATVEC: MVF_P,
                   **{op: VEC_P for op in (Opcode.EMBED, Opcode.MLGRU, Opcode.GLU, Opcode.ADD,
                                           Opcode.TRACE)}}
        # registers a running MATVEC has yet to take (at its scales beat)
        r_wanted = Signal(isa.NUM_REGS)
        mvf_reg = field(pir[MVF_P], Opcode.MATVEC, "reg")
        mvb_reg = field(pir[MV_P], Opcode.MATVEC, "reg")
        m.d.comb += r_wanted.eq(Mux(busy[MVF_P], 1 << mvf_reg, 0)
                                | Mux(mv_before_scales, 1 << mvb_reg, 0))

        with m.FSM(name="issue"):
            with m.State("IDLE"):
                m.d.comb += [self.run.ready.eq(1), self.reset_state.ready.eq(~self.run.valid)]
                with m.If(self.run.valid):
                    m.d.sync += [token.eq(self.run.payload.token),
                                 k_run.eq(self.run.payload.k_run), pc.eq(0),
                                 ran_topk.eq(0), self.busy.eq(1)]
                    m.next = "START"
                with m.Elif(self.reset_state.valid):
                    m.d.comb += flush.eq(1)
                    m.d.sync += [first.eq(1), halted.eq(0), err_code.eq(0), aq_count.eq(0),
                                 aq_head.eq(0)]
            with m.State("START"):
                with m.If(halted):
                    m.next = "ERROR"
                with m.Else():
                    m.next = "FETCH"
            with m.State("FETCH"):           # the program memory reads pc this cycle
                with m.If(pc >= cfg.program_words):
                    m.d.sync += [err_code.eq(ErrorCode.ADDRESS), err_pc.eq(pc), halted.eq(1)]
                    m.next = "DRAIN_ERROR"
                with m.Else():
                    m.next = "LATCH"
            with m.State("LATCH"):
                m.d.sync += ir.eq(prog_rd.data)
                m.next = "PREP"
            with m.State("PREP"):            # the multiply for the range checks settles
                m.next = "CHECK"
            with m.State("CHECK"):
                with m.If(chk_code != 0):
                    m.d.sync += [err_code.eq(chk_code), err_pc.eq(pc), halted.eq(1)]
                    m.next = "DRAIN_ERROR"
                with m.Elif((opcode == Opcode.END)
                            | ((opcode == Opcode.SKIP_UNLESS_LAST) & (k_run == 0))):
                    m.next = "DRAIN"
                with m.Elif(opcode == Opcode.SKIP_UNLESS_LAST):
                    m.d.sync += pc.eq(pc + 1)
                    m.next = "FETCH"
                with m.Else():
                    m.next = "DISPATCH"
            with m.State("DISPATCH"):
                with m.Switch(opcode):
                    for op, p in pipe_of.items():
                        with m.Case(op):
                            ok = ~busy[p]
                            if op == Opcode.RMS:      # an earlier MATVEC still needs R[reg]
                                ok = ok & ~r_wanted.bit_select(f(op, "reg"), 1)
                            with m.If(ok):
                                m.d.comb += [go[p].eq(1), inc["INSTRUCTIONS"].eq(1)]
                                m.d.sync += pc.eq(pc + 1)
                                m.next = "FETCH"
                                if op == Opcode.EMBED:
                                    m.d.sync += v_embed_base.eq(f(op, "base") + mul_p)
                                if op == Opcode.QUANT:
                                    tail = aq_head + aq_count
                                    for i in range(isa.QUEUE_DEPTH):
                                        with m.If(tail[:1] == i):
                                            m.d.sync += [aq_k[i].eq(f(op, "len")),
                                                         aq_rows[i].eq(f(op, "rows"))]
                                    m.d.sync += aq_count.eq(aq_count + 1)
                                if op == Opcode.MATVEC:
                                    # the range check passed: waddr + G * k <= words
                                    m.d.sync += [aq_count.eq(aq_count - 1),
                                                 aq_head.eq(~aq_head),
                                                 w_addr.eq(f(op, "waddr")),
                                                 w_count.eq(mul_p)]
                                    with m.If(f(op, "mode") == MatvecMode.TOPK):
                                        m.d.sync += ran_topk.eq(1)
            with m.State("DRAIN"):           # END: every pipe finishes, then the token ends
                with m.If(~busy.any() & (em_left == 0)):
                    m.d.comb += [self.token_done.valid.eq(1), self.token_done.payload.ok.eq(1)]
                    with m.If(self.token_done.ready):
                        m.d.comb += inc["TOKENS"].eq(1)
                        m.d.sync += [first.eq(0), self.busy.eq(0)]
                        m.next = "IDLE"
            with m.State("DRAIN_ERROR"):     # the earlier instructions take their effect
                with m.If(~busy.any()):
                    m.next = "ERROR"
            with m.State("ERROR"):           # ERROR record: type, code, pc
                m.d.comb += [em_seq["val"].eq(Cat(Const(RecordType.ERROR, 8), err_code,
                                                  err_pc)),
                             em_seq["n"].eq(4), em_seq["load"].eq(em_ready)]
                with m.If(em_ready):
                    m.next = "ERROR_DONE"
            with m.State("ERROR_DONE"):
                with m.If(em_left == 0):
                    m.d.comb += [self.token_done.valid.eq(1), self.token_done.payload.ok.eq(0)]
                    with m.If(self.token_done.ready):
                        m.d.sync += self.busy.eq(0)
                        m.next = "IDLE"
        return m
