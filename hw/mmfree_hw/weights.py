"""The weight store behind one stream: :class:`WeightMemory`, its on-chip (block RAM)
implementation. The engine reads weight words through the ``req`` / ``words`` pair only
(the core's ``weight_req`` / ``weight_words`` ports, connected in ``top.Accelerator``), so
an SDRAM implementation with a prefetch FIFO can take its place: the interface promises
words in request order, with any latency and any gaps, and nothing else. The core issues
a MATVEC's request as the instruction enters the engine's front, so a memory with a long
latency may take the next request while the current run's words still flow (this one
takes it at the edge of the current run's last read). The host fills the store through
``write`` and, built with ``host_read=True`` (as ``top.Accelerator`` does), reads it back
through ``read_addr`` / ``read_data`` (``command.mem_access_signature``'s semantics),
between runs.
"""

from amaranth import Module, Signal, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from mmfree_fpga import numerics as N


def request_layout(addr_bits: int = 24, count_bits: int = 20) -> data.StructLayout:
    """A read request: ``count`` words from word address ``addr`` on."""
    return data.StructLayout({"addr": unsigned(addr_bits), "count": unsigned(count_bits)})


def write_layout(word_bits: int, addr_bits: int = 24) -> data.StructLayout:
    """A write: one word ``data`` at word address ``addr``."""
    return data.StructLayout({"addr": unsigned(addr_bits), "data": unsigned(word_bits)})


class WeightMemory(wiring.Component):
    """``depth`` weight words of ``lanes`` 2-bit codes (the engine's word, lane l at bits
    [2l, 2l + 2)) in block RAM, read by request.

    Ports:

    - ``req``: In stream of :func:`request_layout` (``addr_bits``, ``count_bits``): a run of
      ``count`` words from ``addr``. A request with ``addr + count > depth`` is refused:
      it emits nothing and sets ``error`` (it never wraps); ``count`` = 0 emits nothing.
      The next request is taken at the edge that issues the current one's last read, so
      runs follow each other with no gap.
    - ``words``: Out stream of ``lanes * 2``-bit words, the requested runs in order.
    - ``write``: In stream of :func:`write_layout`, always ready (``write.ready`` is 1):
      each beat writes one word at its edge. An address >= depth is refused (nothing
      written) and sets ``error``. Writes are for the host filling the memory before a
      run: a read of an address written in the same cycle returns the old word.
    - ``read_addr``: In stream of ``addr_bits``-bit addresses, ``read_data``: Out stream of
      words; only with ``host_read=True`` (as ``top.Accelerator`` builds it; off by
      default, so the bare store keeps the ports its cocotb bench drives): the host's
      reads, with the semantics of ``command.mem_access_signature`` (one word per address,
      in order), so the command processor's WEIGHTS port connects to ``write``,
      ``read_addr`` and ``read_data`` one to one when ``addr_bits`` is that port's address
      width. Served only while no run is active: ``read_addr.ready`` is low while a
      request's reads are being issued, while ``req.valid`` is high (a request goes first)
      and while a host word is in flight or waits on ``read_data``; and ``req.ready`` is
      low while a host word is in flight or waits (the word sits in the output register
      that run reads pass through). Words of an earlier run still in the FIFO do not block
      a host read. Latency: ``HOST_READ_LATENCY`` = 2: a host read's word is valid 2
      cycles after the cycle whose edge took its address, and held until taken; one read
      at a time (the next address is taken the cycle after the word went), which is all
      the command processor asks (it keeps one read outstanding). An address >= ``depth``
      reads an unspecified word (the processor range-checks its READ commands).
    - ``error``: Out, sticky (cleared by reset only): a refused request or write happened.

    Datapath: a read address counter issues one block RAM read per cycle while the output
    FIFO (``FIFO_DEPTH`` = 4 entries, ``amaranth.lib.fifo.SyncFIFO``) has room for every
    read in flight, counted from registers (the FIFO's level and the two pipeline valid
    bits), so ``words.ready`` drives no enable but the FIFO's own read side: the block
    RAM's output goes straight into a register (an ECP5 DP16KD is ~6 ns clock-to-out
    without its output register, which Yosys does not use), the register into the FIFO.
    Back-pressure on ``words`` never loses a word: reads stop before the FIFO could fill.
    A host read uses the same read port (a 2:1 mux on its address, the run's counter while
    a run is active) and the same output register, which holds its word for ``read_data``
    (so the block RAM's slow output still drives one register only); the FIFO is not
    involved.

    Latency: ``LATENCY`` = 4: a run's first word is valid on ``words`` 4 cycles after the
    cycle whose edge accepted its request (read address, block RAM, output register,
    FIFO).
    Throughput: one word per cycle while ``words.ready`` is high, across requests: a run of
    N words has its last word valid N + 3 cycles after the request beat (N words in
    N + LATENCY cycles, counting the request's cycle). With ``words.ready`` low the FIFO
    fills (4 words) and reads pause; they resume one word per cycle when it drains.

    Resources: ``depth`` x ``lanes * 2`` bits of block RAM with one read and one write port
    (128 lanes: 256-bit words, 8 DP16KD per 512 words), a ``lanes * 2``-bit output register,
    the FIFO (4 x ``lanes * 2`` bits: distributed RAM or flip-flops), an ``addr_bits`` +1
    adder and comparator for the range check, counters. ECP5 (Yosys 0.70 synth_ecp5),
    128 lanes, depth 2,048 (512 kbit): 29 DP16KD, 64 TRELLIS_DPR16X4 (the FIFO), 575 LUT4
    (mostly the 4-way mux of the block RAM columns), 42 CCU2C, 823 FF; placed on the
    ECP5-85F (speed 6, bitstreams/ooc.py's harness) 111.9 MHz, bound by the DP16KD's
    clock-to-out (5.8 ns, no output register, as everywhere in the project) and that mux
    in front of the output register. (Measured before the host read path, which adds the
    address mux and three flip-flops, no data register.)
    """

    LATENCY = 4
    FIFO_DEPTH = 4
    HOST_READ_LATENCY = 2

    def __init__(self, lanes: int, depth: int, addr_bits: int = 24, count_bits: int = 20,
                 init=(), host_read: bool = False):
        if depth < 1 or depth > 1 << addr_bits:
            raise ValueError(f"depth must be in 1 .. 2^addr_bits ({1 << addr_bits})")
        self.lanes, self.depth = lanes, depth
        self.addr_bits, self.count_bits = addr_bits, count_bits
        self.word_bits = N.CODE_BITS * lanes
        self.init = list(init)
        self.host_read = host_read
        members = {
            "req": In(stream.Signature(request_layout(addr_bits, count_bits))),
            "words": Out(stream.Signature(self.word_bits)),
            "write": In(stream.Signature(write_layout(self.word_bits, addr_bits))),
            "error": Out(1),
        }
        if host_read:
            members["read_addr"] = In(stream.Signature(addr_bits))
            members["read_data"] = Out(stream.Signature(self.word_bits))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        depth = self.depth
        mem_addr = max(1, ceil_log2(depth))
        m.submodules.mem = mem = memory.Memory(shape=self.word_bits, depth=depth,
                                               init=self.init)
        wr = mem.write_port()
        rd = mem.read_port(domain="sync")

        # -- writes: always ready; out of range sets error ------------------------------------
        w_ok = self.write.payload.addr < depth
        m.d.comb += [
            self.write.ready.eq(1),
            wr.addr.eq(self.write.payload.addr[:mem_addr]),
            wr.data.eq(self.write.payload.data),
            wr.en.eq(self.write.valid & w_ok),
        ]
        with m.If(self.write.valid & ~w_ok):
            m.d.sync += self.error.eq(1)

        # -- reads: issue while the FIFO has room for everything in flight ------------------
        m.submodules.fifo = fifo = SyncFIFO(width=self.word_bits, depth=self.FIFO_DEPTH)
        active = Signal()
        addr = Signal(mem_addr)
        left = Signal(self.count_bits)             # reads of the run still to issue
        s1_valid, s2_valid = Signal(), Signal()    # read issued; block RAM data registered
        s2_data = Signal(self.word_bits, reset_less=True)

        issue = Signal()
        m.d.comb += issue.eq(active & (fifo.level + s1_valid + s2_valid < self.FIFO_DEPTH))
        last_issue = issue & (left == 1)
        # host reads: through the same read port and output register, between runs
        h_fire, h_s1, h_valid = Signal(), Signal(), Signal()   # taken; read; word waits
        host_free = ~h_s1 & ~h_valid
        m.d.comb += [
            rd.addr.eq(addr),
            rd.en.eq(issue | h_fire),
            self.req.ready.eq((~active | last_issue) & host_free),
        ]
        if self.host_read:
            m.d.comb += [
                self.read_addr.ready.eq(~active & ~self.req.valid & host_free),
                h_fire.eq(self.read_addr.valid & self.read_addr.ready),
                self.read_data.valid.eq(h_valid), self.read_data.payload.eq(s2_data),
            ]
            with m.If(~active):
                m.d.comb += rd.addr.eq(self.read_addr.payload[:mem_addr])
            m.d.sync += h_s1.eq(h_fire)
            with m.If(h_s1):
                m.d.sync += h_valid.eq(1)
            with m.Elif(self.read_data.ready):
                m.d.sync += h_valid.eq(0)
        m.d.sync += [s1_valid.eq(issue), s2_valid.eq(s1_valid)]
        with m.If(s1_valid | h_s1):
            m.d.sync += s2_data.eq(rd.data)
        m.d.comb += [
            fifo.w_en.eq(s2_valid), fifo.w_data.eq(s2_data),
            self.words.valid.eq(fifo.r_rdy), self.words.payload.eq(fifo.r_data),
            fifo.r_en.eq(self.words.ready),
        ]
        with m.If(issue):
            m.d.sync += [addr.eq(addr + 1), left.eq(left - 1)]
            with m.If(left == 1):
                m.d.sync += active.eq(0)

        # a request, taken at the edge of the previous run's last read (assigned last: wins)
        req = self.req.payload
        with m.If(self.req.valid & self.req.ready):
            with m.If(req.addr + req.count > depth):
                m.d.sync += self.error.eq(1)
            with m.Elif(req.count != 0):
                m.d.sync += [active.eq(1), addr.eq(req.addr[:mem_addr]), left.eq(req.count)]
        return m
