"""The accelerator as a host sees it: the command processor in front of the core.

``Accelerator(cfg)`` has the command byte streams (``cmd_in``, ``cmd_out``) and ``busy``,
nothing else: what a UART (issue 9), the Verilator harness (``verilator/``) or a PCIe
window carries. Every other wire is between ``command.CommandProcessor`` and ``core.Core``,
whose signatures are made to connect one to one.
"""

from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from mmfree_fpga.core_config import CoreConfig
from mmfree_fpga.isa import Space

from .command import CommandProcessor, port_name
from .core import Core


class Accelerator(wiring.Component):
    """Ports: ``cmd_in`` (In stream, 8 bits), ``cmd_out`` (Out stream, 8 bits), ``busy``
    (Out: low exactly when the accelerator waits for the host's next byte; see
    ``CommandProcessor``). Latency and throughput are the command processor's (a byte per
    cycle each way) and the core's (its counters)."""

    cmd_in: In(stream.Signature(8))
    cmd_out: Out(stream.Signature(8))
    busy: Out(1)

    def __init__(self, cfg: CoreConfig):
        self.cfg = cfg
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.cp = cp = CommandProcessor(self.cfg)
        m.submodules.core = core = Core(self.cfg)
        wiring.connect(m, wiring.flipped(self.cmd_in), cp.cmd_in)
        wiring.connect(m, cp.cmd_out, wiring.flipped(self.cmd_out))
        for name in ("run", "reset_state", "reset_counters"):
            wiring.connect(m, getattr(cp, name), getattr(core, name))
        for name in ("records", "token_done"):
            wiring.connect(m, getattr(core, name), getattr(cp, name))
        for space in Space:
            wiring.connect(m, cp.mem(space), getattr(core, port_name(space)))
        m.d.comb += [cp.counters.eq(core.counters), self.busy.eq(cp.busy)]
        return m
