"""The host driver: byte-stream transports (``transport.py``) and the core's command set
above them (``core.py``). The same ``CoreDriver`` drives the simulated accelerator (a
``SubprocessTransport`` to the Verilator harness) and, with issue 9's framed transports, a
board."""

from .core import CoreDriver, CoreError, RunResult, SequencerError
from .transport import LinkError, SubprocessTransport, Transport

__all__ = ["CoreDriver", "CoreError", "LinkError", "RunResult", "SequencerError",
           "SubprocessTransport", "Transport"]
