"""The accelerator as a host sees it: the command processor in front of the core and its
weight store.

``Accelerator(cfg)`` has the command byte streams (``cmd_in``, ``cmd_out``) and ``busy``,
nothing else: what a UART (issue 9), the Verilator harness (``verilator/``) or a PCIe
window carries. Every other wire is between ``command.CommandProcessor``, ``core.Core``
and ``weights.WeightMemory``, whose signatures are made to connect one to one: the
processor's access ports of every space but WEIGHTS go to the core; its WEIGHTS port
(writes and reads by the host, between tokens) goes to the weight store, which the core
reads through its ``weight_req`` / ``weight_words`` stream pair only. A store with
another memory behind it (SDRAM with a prefetch FIFO) takes the same place with the same
ports.
"""

from amaranth import Cat, Module, Mux
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from mmfree_fpga import commands as C
from mmfree_fpga import isa
from mmfree_fpga.core_config import CoreConfig, SdramConfig
from mmfree_fpga.isa import Space

from .command import CommandProcessor, port_name
from .core import Core
from .gating import gate
from .link import FrameLink
from .weights import WeightMemory

#: The command processor's gating hold (``gate_idle``): longer than any stretch in which it
#: works with no valid at a port (decoding a header, the CRC unit's pipeline).
CP_HOLD = 64


class Accelerator(wiring.Component):
    """Ports: ``cmd_in`` (In stream, 8 bits), ``cmd_out`` (Out stream, 8 bits), ``busy``
    (Out: low exactly when the accelerator waits for the host's next byte; see
    ``CommandProcessor``). Latency and throughput are the command processor's (a byte per
    cycle each way), the core's (its counters) and the weight store's (``WeightMemory``:
    ``LATENCY`` cycles to a run's first word, then one word per cycle).

    With ``sdram`` (a ``SdramConfig``) the weights live in SDRAM instead: the store is
    ``sdram.SdramWeightStore`` on LiteDRAM's controller (``sdram.SdramController``), and
    the component has one more port, ``sdram`` (Out, ``sdram.controller.pins_signature``:
    the chip's pins, the data bus split; a board shell adds the tristate buffer and the
    SDRAM clock, a simulation the chip model). IDENTIFY then reports the memory and its
    packing, and its status: INITIALIZING until the controller's init and power-up check
    ended, ERROR if they failed; the counters gain ``commands.MemoryCounter``'s.

    The weight store's sticky ``error`` (a request or write out of range) is not wired
    out: the core refuses a MATVEC whose weight range is out of range at decode (an
    ERROR record), and the processor refuses a WRITE out of range, so neither reaches
    the store."""

    def __init__(self, cfg: CoreConfig, gate_idle: bool = False,
                 sdram: SdramConfig | None = None):
        self.cfg, self.gate_idle, self.sdram_cfg = cfg, gate_idle, sdram
        members = {"cmd_in": In(stream.Signature(8)), "cmd_out": Out(stream.Signature(8)),
                   "busy": Out(1)}
        if sdram is not None:
            from .sdram.controller import SdramController, pins_signature
            self.controller = SdramController(sdram.clock_hz,
                                              refresh_postponing=sdram.refresh_postponing)
            members["sdram"] = Out(pins_signature(self.controller.core.rowbits,
                                                  self.controller.core.bankbits,
                                                  self.controller.data_bits))
        super().__init__(members)

    def verilog_sources(self):
        """Verilog files a simulation compiles beside this design (the SDRAM controller)."""
        return self.controller.verilog_sources() if self.sdram_cfg is not None else []

    def elaborate(self, platform):
        m = Module()
        cfg, sd = self.cfg, self.sdram_cfg
        if sd is None:
            cp = CommandProcessor(cfg)
        else:
            cp = CommandProcessor(cfg, memory=C.MemoryKind.SDRAM, packing=sd.packing,
                                  onchip_words=sd.onchip_words)
        if self.gate_idle:      # simulation only (gating.py); it waits while a token runs
            gate(m, "cp", cp, hold=CP_HOLD)
        else:
            m.submodules.cp = cp
        m.submodules.core = core = Core(cfg, gate_idle=self.gate_idle,
                                        embed_external=sd is not None and sd.embed_in_sdram)
        if sd is None:
            m.submodules.weights = wmem = WeightMemory(
                cfg.lanes, cfg.weight_words, addr_bits=core.weight_addr_bits,
                count_bits=core.weight_count_bits, host_read=True)
            m.d.comb += cp.counters.eq(core.counters)
        else:
            from .sdram.weight_store import SdramWeightStore
            m.submodules.ctrl = ctrl = self.controller
            split = sd.onchip_words
            sdw = SdramWeightStore(
                cfg.lanes, cfg.weight_words - split, addr_bits=core.weight_addr_bits,
                count_bits=core.weight_count_bits, mem_addr_bits=ctrl.addr_bits,
                beat_bits=sd.beat_bits, prefetch_words=sd.prefetch_words,
                packing=sd.packing,
                embed_words=cfg.embed_words if sd.embed_in_sdram else 0,
                embed_addr_bits=core.abits[Space.EMBED], embed_count_bits=isa.LEN_BITS + 1)
            if split:       # the first words in block RAM (the compiler places by it)
                from .hybrid_weights import HybridWeightStore
                m.submodules.weights = wmem = HybridWeightStore(
                    cfg.lanes, cfg.weight_words, split, sdw,
                    addr_bits=core.weight_addr_bits, count_bits=core.weight_count_bits)
            else:
                m.submodules.weights = wmem = sdw
            if sd.embed_in_sdram:
                wiring.connect(m, core.embed_req, sdw.embed_req)
                wiring.connect(m, sdw.embed_data, core.embed_data)
                host_e = cp.mem(Space.EMBED)
                wiring.connect(m, host_e.write, sdw.embed_write)
                wiring.connect(m, host_e.read_addr, sdw.embed_read_addr)
                wiring.connect(m, sdw.embed_read_data, host_e.read_data)
            wiring.connect(m, sdw.cmd, ctrl.cmd)
            wiring.connect(m, sdw.wdata, ctrl.wdata)
            wiring.connect(m, ctrl.rdata, sdw.rdata)
            wiring.connect(m, ctrl.pins, wiring.flipped(self.sdram))
            # a write whose data came late (a store bug, never seen) is a broken memory too
            status = Mux(ctrl.init_error | ctrl.wdata_underrun, C.MemoryStatus.ERROR,
                         Mux(ctrl.init_done, C.MemoryStatus.READY,
                             C.MemoryStatus.INITIALIZING))
            m.d.comb += [
                cp.mem_status.eq(status),
                sdw.count_en.eq(core.busy),
                sdw.count_clear.eq(core.reset_counters.valid & core.reset_counters.ready),
                cp.counters.eq(Cat(core.counters, sdw.beats, sdw.misses, sdw.full)),
            ]
        wiring.connect(m, wiring.flipped(self.cmd_in), cp.cmd_in)
        wiring.connect(m, cp.cmd_out, wiring.flipped(self.cmd_out))
        for name in ("run", "reset_state", "reset_counters"):
            wiring.connect(m, getattr(cp, name), getattr(core, name))
        for name in ("records", "token_done"):
            wiring.connect(m, getattr(core, name), getattr(cp, name))
        for space in core.host_spaces:
            wiring.connect(m, cp.mem(space), getattr(core, port_name(space)))
        host_w = cp.mem(Space.WEIGHTS)
        wiring.connect(m, host_w.write, wmem.write)
        wiring.connect(m, host_w.read_addr, wmem.read_addr)
        wiring.connect(m, wmem.read_data, host_w.read_data)
        wiring.connect(m, core.weight_req, wmem.req)
        wiring.connect(m, wmem.words, core.weight_words)
        m.d.comb += self.busy.eq(cp.busy)
        return m


class LinkedAccelerator(wiring.Component):
    """The accelerator behind the framed link (``mmfree_fpga.link.protocol``): what a board's
    UART, or the simulated accelerator's pipes, carry. ``FrameLink`` checks every frame
    before a byte of it reaches the command processor and frames the replies.

    Ports: ``cmd_in`` (In stream, 8 bits: the link's ``rx``, always ready), ``cmd_out`` (Out
    stream, 8 bits: the link's ``tx``), ``busy`` (Out: low exactly when nothing can happen
    until a byte arrives: the link hunts for a frame and the processor waits; see
    ``FrameLink.busy``). The same names as :class:`Accelerator`'s, so the Verilator harness
    carries frames unchanged. ``link_args`` go to ``FrameLink`` (``heartbeat``,
    ``rx_timeout``, ...). Latency and throughput are the link's (a byte per cycle each way,
    a command's first byte 4 cycles after its frame's last CRC byte) plus the
    accelerator's.
    """

    def __init__(self, cfg: CoreConfig, gate_idle: bool = False,
                 sdram: SdramConfig | None = None, **link_args):
        self.cfg, self.gate_idle, self.link_args = cfg, gate_idle, link_args
        self.acc = Accelerator(cfg, gate_idle=gate_idle, sdram=sdram)
        members = {"cmd_in": In(stream.Signature(8)), "cmd_out": Out(stream.Signature(8)),
                   "busy": Out(1)}
        if sdram is not None:
            members["sdram"] = self.acc.signature.members["sdram"]
        super().__init__(members)

    def verilog_sources(self):
        return self.acc.verilog_sources()

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = link = FrameLink(**self.link_args)
        m.submodules.acc = acc = self.acc
        if "sdram" in self.signature.members:
            wiring.connect(m, acc.sdram, wiring.flipped(self.sdram))
        wiring.connect(m, wiring.flipped(self.cmd_in), link.rx)
        wiring.connect(m, link.tx, wiring.flipped(self.cmd_out))
        wiring.connect(m, link.cmd_out, acc.cmd_in)
        wiring.connect(m, acc.cmd_out, link.reply_in)
        m.d.comb += [link.cmd_busy.eq(acc.busy), self.busy.eq(link.busy)]
        return m
