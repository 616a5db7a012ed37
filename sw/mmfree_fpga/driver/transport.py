"""Byte-stream transports: what carries the command bytes to a core and its replies back.

:class:`Transport` is the whole interface a driver needs (``write``, ``read`` exactly n
bytes, ``read_some`` with a deadline, ``close``; a context manager).
:class:`SubprocessTransport` runs a simulator binary (the Verilator harness,
``mmfree_hw.verilator``) and talks to it over its stdin/stdout; ``serial_port.py`` has a
board's UART.
Every failure of the link is a :class:`LinkError` whose message says what happened.
"""

from __future__ import annotations

import abc
import os
import select
import subprocess
import tempfile
from collections.abc import Sequence

CHUNK = 1 << 16


class LinkError(IOError):
    """The link failed: end of stream, a timeout, a dead peer."""


class Transport(abc.ABC):
    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Send all of ``data``."""

    @abc.abstractmethod
    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes, or :class:`LinkError`."""

    def read_some(self, max_n: int, timeout: float) -> bytes:
        """Up to ``max_n`` bytes: what has arrived, else what arrives within ``timeout``
        seconds, possibly nothing (a framed link's retries need reads that come back
        short). This default waits for one byte with :meth:`read`; transports override it."""
        return self.read(1) if max_n > 0 else b""

    def close(self) -> None:  # noqa: B027 - a transport without resources needs nothing
        """Release the link (idempotent)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class BufferedTransport(Transport):
    """A transport that keeps what has arrived in ``_buf``: ``read`` and ``read_some`` take
    from it. Subclasses set ``_buf`` and ``_closed`` and implement :meth:`_await_bytes`."""

    _buf: bytearray
    _closed: bool

    @abc.abstractmethod
    def _await_bytes(self, timeout: float) -> None:
        """Add what arrives within ``timeout`` seconds to ``_buf`` (possibly nothing)."""

    def _take(self, n: int) -> bytes:
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def _check_open(self) -> None:
        if self._closed:
            raise LinkError("read on a closed transport")

    def read_some(self, max_n: int, timeout: float) -> bytes:
        self._check_open()
        if not self._buf:
            self._await_bytes(timeout)
        return self._take(max_n)


class SubprocessTransport(BufferedTransport):
    """Pipes to a child process that reads command bytes on stdin and writes replies on
    stdout (the simulated accelerator: ``SubprocessTransport([str(binary)])``).

    ``timeout``: seconds without any progress (no byte read or written) after which a
    read or write gives up (None: wait for ever; a dead child is noticed at once either
    way). Writes never deadlock against a child that is writing back: while a write
    waits, what the child sends is kept for the next reads. The child's stderr goes to a
    temporary file; a :class:`LinkError` about a dead child names its exit code and the
    end of that stderr. ``close`` ends the child's input (the harness exits on EOF) and
    waits for it.
    """

    def __init__(self, argv: Sequence[str], timeout: float | None = 300.0, env=None,
                 cwd=None):
        self.argv = [str(a) for a in argv]
        self.timeout = timeout
        self._stderr = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=self._stderr,
                                         bufsize=0, env=env, cwd=cwd)
        except OSError as e:
            self._stderr.close()
            raise LinkError(f"cannot start {self.argv[0]}: {e}") from e
        self._in = self.proc.stdin.fileno()
        self._out = self.proc.stdout.fileno()
        os.set_blocking(self._in, False)
        self._buf = bytearray()
        self._closed = False

    # -- helpers ----------------------------------------------------------------------------

    def stderr_tail(self, limit: int = 2000) -> str:
        self._stderr.seek(0, os.SEEK_END)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - limit))
        return self._stderr.read().decode(errors="replace")

    def _dead(self, what: str) -> LinkError:
        try:
            rc = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            rc = None
        state = f"exited with code {rc}" if rc is not None else "is still running"
        tail = self.stderr_tail().strip()
        tail = f"; its stderr ends:\n{tail}" if tail else " (nothing on its stderr)"
        return LinkError(f"{what}: the simulator {os.path.basename(self.argv[0])} {state}"
                         f"{tail}")

    def _wait(self, rlist, wlist, what: str):
        r, w, _ = select.select(rlist, wlist, [], self.timeout)
        if not r and not w:
            raise LinkError(f"{what}: no progress for {self.timeout} s (the simulator "
                            f"{os.path.basename(self.argv[0])} does not answer)")
        return r, w

    def _pull(self, what: str):
        chunk = os.read(self._out, CHUNK)
        if not chunk:
            raise self._dead(what)
        self._buf += chunk

    # -- Transport --------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._closed:
            raise LinkError("write on a closed transport")
        view = memoryview(data)
        while view:
            r, w = self._wait([self._out], [self._in], f"writing {len(view)} more bytes")
            if r:
                self._pull(f"the link ended while {len(view)} bytes were still to send")
            if w:
                try:
                    n = os.write(self._in, view[:CHUNK])
                except BlockingIOError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    raise self._dead(f"the link broke with {len(view)} bytes still to "
                                     f"send") from None
                view = view[n:]

    def read(self, n: int) -> bytes:
        self._check_open()
        while len(self._buf) < n:
            self._wait([self._out], [], f"waiting for {n - len(self._buf)} of {n} bytes")
            self._pull(f"end of stream after {len(self._buf)} of {n} bytes")
        return self._take(n)

    def _await_bytes(self, timeout: float) -> None:
        r, _, _ = select.select([self._out], [], [], timeout)
        if r:
            self._pull("end of stream")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

