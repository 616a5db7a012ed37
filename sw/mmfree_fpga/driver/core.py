"""``CoreDriver``: the core's command set (``mmfree_fpga.commands``) over a transport.

Every reply's status is checked: anything but OK raises :class:`CoreError` naming the
command and the status. A RUN whose sequencer stopped raises :class:`SequencerError`
(after the whole reply has been read, so the link stays in step) carrying the partial
result. Large writes and reads go in chunks of ``chunk_bytes`` of payload (one NumPy
conversion for the whole array, then slices). An upload is verified with the core's CRC
command (``write(..., verify=True)`` or :meth:`CoreDriver.verify`): one CRC of the whole
range, computed by the core from its memory, against ``commands.words_crc`` of the words
sent; a mismatch raises :class:`VerifyError`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .. import commands as C
from ..isa import Space
from .transport import Transport


class CoreError(RuntimeError):
    """The core refused a command (a non-OK status)."""

    def __init__(self, command: str, status):
        self.command, self.status = command, status
        name = status.name if isinstance(status, C.Status) else f"unknown status {status}"
        super().__init__(f"{command}: the core answered {name}")


class VerifyError(RuntimeError):
    """A range's CRC on the core is not that of the words the host wrote there."""

    def __init__(self, space: Space, addr: int, count: int, device: int, host: int):
        self.space, self.addr, self.count = Space(space), addr, count
        self.device, self.host = device, host
        super().__init__(f"{self.space.name}[{addr}:+{count}] does not hold what was written: "
                         f"the core's CRC is 0x{device:08x}, the words sent give "
                         f"0x{host:08x}")


class MemoryNotReady(RuntimeError):
    """The core's weight memory cannot be used: its controller reported an init error, the
    memory failed its power-up check, or the init did not end in time (IDENTIFY's
    ``mem_status``)."""


@dataclass
class RunResult:
    traces: list = field(default_factory=list)        # [(tag, np.ndarray int64)]
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    logits: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    counters: dict = field(default_factory=dict)
    error: tuple | None = None                        # (ErrorCode, pc) if it stopped


class SequencerError(CoreError):
    """The sequencer stopped during a RUN (an ERROR record)."""

    def __init__(self, code, pc: int, result: RunResult):
        self.code, self.pc, self.result = code, pc, result
        name = code.name if isinstance(code, C.ErrorCode) else f"unknown code {code}"
        RuntimeError.__init__(self, f"RUN: the sequencer stopped with {name} at pc {pc} "
                                    f"(after {result.counters.get('TOKENS', '?')} tokens)")
        self.command, self.status = "RUN", C.Status.OK


class CoreDriver:
    """Drives one core through a :class:`Transport`. The first call that needs the core's
    parameters (word widths, counter count) runs IDENTIFY, which checks magic and version."""

    def __init__(self, transport: Transport, chunk_bytes: int | None = None):
        self.transport = transport
        # a framed transport says how many bytes of words one WRITE frame carries
        self.chunk_bytes = chunk_bytes or getattr(transport, "max_write_data", 1 << 16)
        self._identity: C.Identity | None = None

    # -- plumbing ---------------------------------------------------------------------------

    def _read(self, n: int) -> bytes:
        return self.transport.read(n)

    def _status(self, command: str):
        s = C.read_status(self._read)
        if s != C.Status.OK:
            raise CoreError(command, s)

    def close(self):
        self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def identity(self) -> C.Identity:
        if self._identity is None:
            self.identify()
        return self._identity

    # -- commands ---------------------------------------------------------------------------

    def identify(self) -> C.Identity:
        """IDENTIFY: the core's version, lanes, space sizes, max_topk, counter count and
        build id. A core of another command-set version is refused (``commands.VersionMismatch``,
        naming both versions)."""
        self.transport.write(C.encode_identify())
        self._status("IDENTIFY")
        self._identity = C.read_identify(self._read)
        return self._identity

    def wait_memory(self, timeout_s: float = 5.0) -> C.Identity:
        """IDENTIFY until the weight memory is ready (an SDRAM controller runs its init and
        power-up check for ~0.5 ms after reset); :class:`MemoryNotReady` if it reports an
        error, or is still initializing after ``timeout_s``. Nothing is written first, so a
        refused memory's contents and the core's state stay as they were."""
        t0 = time.monotonic()
        while True:
            ident = self.identify()
            where = ("its SDRAM" if ident.memory == C.MemoryKind.SDRAM
                     else "its weight memory")
            if ident.mem_status & C.MemoryStatus.ERROR:
                raise MemoryNotReady(
                    f"the device reports that {where} failed: the controller's init or the "
                    f"power-up memory check went wrong (IDENTIFY's memory status "
                    f"0x{int(ident.mem_status):02x}); check the board's SDRAM, its clock "
                    f"and the bitstream's memory configuration, then reset the board")
            if not ident.mem_status & C.MemoryStatus.INITIALIZING:
                return ident
            if time.monotonic() - t0 > timeout_s:
                raise MemoryNotReady(f"{where} was still initializing {timeout_s:.0f} s "
                                     f"after the first IDENTIFY: the controller's init "
                                     f"sequence does not end")
            time.sleep(0.01)

    def word_bytes(self, space: Space) -> int:
        return C.word_bytes(space, self.identity.lanes)

    def write(self, space: Space, addr: int, words, verify: bool = False) -> None:
        """Write ``words`` (see ``commands.words_to_bytes``: uint8 rows, or integers) at
        ``addr`` of ``space``. Chunks are sent back to back, then their statuses read.
        ``verify``: then one CRC of the whole range must equal that of the bytes sent
        (:class:`VerifyError` if not)."""
        space = Space(space)
        nb = self.word_bytes(space)
        data = C.words_to_bytes(space, words, self.identity.lanes)
        count = len(data) // nb
        per = max(1, self.chunk_bytes // nb)
        n_chunks = 0
        for first in range(0, max(count, 1), per):
            n = min(per, count - first)
            self.transport.write(C.encode_write_header(space, addr + first, n)
                                 + data[first * nb:(first + n) * nb])
            n_chunks += 1
        bad = None
        for _ in range(n_chunks):
            s = C.read_status(self._read)
            if s != C.Status.OK and bad is None:
                bad = s
        if bad is not None:
            raise CoreError(f"WRITE {space.name}[{addr}:+{count}]", bad)
        if verify:
            self.check_crc(space, addr, count, C.words_crc(space, words, self.identity.lanes))

    def crc(self, space: Space, addr: int, count: int) -> int:
        """CRC: the core's CRC-32 (``zlib.crc32``) of the bytes a READ of ``count`` words
        from ``addr`` of ``space`` would return, without the words crossing the link."""
        space = Space(space)
        self.transport.write(C.encode_crc(space, addr, count))
        self._status(f"CRC {space.name}[{addr}:+{count}]")
        return C.read_crc(self._read)

    def verify(self, space: Space, addr: int, words) -> None:
        """Check that ``addr`` of ``space`` holds ``words`` (any form ``write`` takes) with
        one CRC (:class:`VerifyError` if not)."""
        space = Space(space)
        lanes = self.identity.lanes
        count = len(C.words_to_bytes(space, words, lanes)) // self.word_bytes(space)
        self.check_crc(space, addr, count, C.words_crc(space, words, lanes))

    def check_crc(self, space: Space, addr: int, count: int, host: int) -> None:
        """:class:`VerifyError` unless the core's CRC of the range is ``host``."""
        device = self.crc(space, addr, count)
        if device != host:
            raise VerifyError(space, addr, count, device, host)

    def read(self, space: Space, addr: int, count: int) -> np.ndarray:
        """``count`` words from ``addr`` of ``space`` (``commands.bytes_to_words``: int16 /
        int32 for the narrow spaces, uint8 rows for WEIGHTS and PROGRAM)."""
        space = Space(space)
        nb = self.word_bytes(space)
        per = max(1, self.chunk_bytes // nb)
        parts = []
        for first in range(0, max(count, 1), per):
            n = min(per, count - first)
            self.transport.write(C.encode_read(space, addr + first, n))
            self._status(f"READ {space.name}[{addr + first}:+{n}]")
            parts.append(self._read(n * nb))
        return C.bytes_to_words(space, b"".join(parts), self.identity.lanes)

    def reset_state(self) -> None:
        """The next token starts a sequence (its MLGRU takes h = 0)."""
        self.transport.write(C.encode_reset_state())
        self._status("RESET_STATE")

    def run(self, tokens, topk: int, check: bool = True) -> RunResult:
        """Run ``tokens`` one after another; candidates (``topk``) for the last one only.
        More than one RUN's worth (65,535, or the transport's ``max_run_tokens``: a frame
        of the framed link holds 511) is sent as several RUNs. ``check``: raise
        :class:`SequencerError` if the sequencer stopped (else ``result.error`` says so)."""
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if len(tokens) == 0:
            raise ValueError("run needs at least one token")
        n_ctr = self.identity.n_counters
        result = RunResult()
        per_run = min(C.MAX_RUN_TOKENS, getattr(self.transport, "max_run_tokens",
                                                C.MAX_RUN_TOKENS))
        for first in range(0, len(tokens), per_run):
            part = tokens[first:first + per_run]
            last = first + len(part) == len(tokens)
            self.transport.write(C.encode_run(part, topk if last else 0))
            self._status(f"RUN of {len(part)} tokens, topk {topk if last else 0}")
            for rec in C.read_run_records(self._read, n_ctr):
                if isinstance(rec, C.Trace):
                    result.traces.append((rec.tag, rec.values))
                elif isinstance(rec, C.Result):
                    result.ids, result.logits = rec.ids, rec.logits
                elif isinstance(rec, C.Error):
                    result.error = (rec.code, rec.pc)
                else:
                    result.counters = dict(zip(self.identity.counter_names, rec.counters,
                                               strict=True))
            if result.error is not None:
                break
        if check and result.error is not None:
            raise SequencerError(*result.error, result)
        return result

    def counters(self) -> dict:
        self.transport.write(C.encode_counters())
        self._status("COUNTERS")
        values = C.read_counter_values(self._read, self.identity.n_counters)
        return dict(zip(self.identity.counter_names, values, strict=True))

    def reset_counters(self) -> None:
        self.transport.write(C.encode_reset_counters())
        self._status("RESET_COUNTERS")
