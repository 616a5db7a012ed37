"""Which accelerator a command talks to: a board on a serial port or the simulated one.

``--backend serial`` opens the port (``--port``, else the only USB serial adapter found),
speaks the framed link and asks IDENTIFY; ``--backend sim`` starts the simulated
accelerator; ``--backend auto`` uses a board if one answers IDENTIFY within a second and the
simulated accelerator otherwise, and says which in one line on stderr. Every failure is a
:class:`~..generate.BackendError` with one clear message.

A board answers with its lanes and memory sizes, not with every limit the compiler needs
(max d, max intermediate size, ...): the host finds the :class:`CoreConfig` whose lanes and
memories those are among the known configurations (:data:`KNOWN_CORES`: the simulation
core, the out-of-context block-RAM core and every core of the board table, ``boards.py``).
"""

from __future__ import annotations

import glob
import sys

from .. import core_config
from ..boards import BOARDS
from ..commands import ProtocolError
from ..core_config import CoreConfig
from ..generate import BackendError
from ..isa import Space
from .core import CoreDriver, CoreError
from .transport import LinkError

#: Configurations a board may carry, by name (matched on IDENTIFY's lanes and sizes).
KNOWN_CORES = {"sim": core_config.SIM, "ulx3s-85f-bram": core_config.ULX3S_85F,
               **{b.name: b.core for b in BOARDS.values() if b.core is not None}}


def find_ports() -> list[str]:
    """USB serial adapters present (``/dev/ttyUSB*``, ``/dev/ttyACM*``), sorted."""
    return sorted(glob.glob("/dev/ttyUSB*") + glob.glob("/dev/ttyACM*"))


def core_of(ident) -> CoreConfig:
    """The known configuration whose lanes and memory sizes IDENTIFY reported."""
    for cfg in KNOWN_CORES.values():
        if ident.lanes == cfg.lanes and ident.words == {s: cfg.size(s) for s in Space}:
            return cfg
    sizes = ", ".join(f"{Space(s).name} {n:,}" for s, n in ident.words.items())
    raise BackendError(f"the device's core ({ident.lanes} lanes; {sizes}) is none of the "
                       f"known configurations ({', '.join(KNOWN_CORES)}): this host does "
                       f"not know its limits")


def open_serial(port: str | None, baud: int, timeout: float = 2.0) -> CoreDriver:
    """A driver for the board at ``port`` (None: the only adapter found), identified."""
    from ..link.framed import FramedTransport
    from .serial_port import SerialTransport

    if port is None:
        ports = find_ports()
        if not ports:
            raise BackendError("no board: no USB serial adapter found (/dev/ttyUSB*, "
                               "/dev/ttyACM*); give --port, or use --backend sim")
        if len(ports) > 1:
            raise BackendError(f"several serial adapters ({', '.join(ports)}): choose one "
                               f"with --port")
        port = ports[0]
    try:
        raw = SerialTransport(port, baud, timeout=timeout)
    except LinkError as e:
        raise BackendError(str(e)) from None
    if raw.latency_note not in (None, "set"):
        print(f"note: {raw.latency_note}", file=sys.stderr)
    framed = FramedTransport(raw, retries=3)
    drv = CoreDriver(framed, chunk_bytes=FramedTransport.max_write_data)
    try:
        drv.identify()
    except (LinkError, CoreError, ProtocolError) as e:
        drv.close()
        raise BackendError(f"{port}: no accelerator answers ({e})") from None
    return drv


def open_backend_driver(backend: str, port: str | None, baud: int, sdram=None,
                        core: CoreConfig | None = None):
    """``(driver, core configuration, name)`` for ``--backend`` sim, serial or auto;
    ``sdram`` (a ``core_config.SdramConfig``): the simulated accelerator's weights in SDRAM
    (a board's memory is the bitstream's); ``core``: the simulated accelerator's
    configuration (None: ``core_config.SIM``; a board table entry's for ``--board``)."""
    from .simulator import open_simulator

    core = core_config.SIM if core is None else core
    if sdram is not None and backend == "serial":
        raise BackendError("--memory sdram picks the simulated accelerator's memory; a "
                           "board's is its bitstream's (use --backend sim)")
    if backend == "serial":
        drv = open_serial(port, baud)
        return drv, core_of(drv.identity), "serial"
    if backend == "auto":
        ports = [port] if port else find_ports()
        for p in ports:
            try:
                drv = open_serial(p, baud, timeout=1.0)
            except BackendError as e:
                print(f"auto: {p}: {e}", file=sys.stderr)
                continue
            print(f"auto: using the board at {p}", file=sys.stderr)
            return drv, core_of(drv.identity), "serial"
        print("auto: no board answers; using the simulated accelerator (--backend sim)",
              file=sys.stderr)
    return open_simulator(core, sdram=sdram), core, "sim"
