"""A board's UART as a :class:`~.transport.Transport`: pyserial under the same
``write`` / ``read`` interface the simulated accelerator's pipes have.

What this module adds to pyserial is the failure handling a user needs to read:

- No device at the port, a port another program holds (opened exclusively, so two hosts
  never interleave frames), no permission: one :class:`LinkError` each, naming the port and
  what to do.
- ``read(n)`` gives exactly ``n`` bytes or a :class:`LinkError` after ``timeout`` seconds
  without a byte; ``read_some`` gives what arrives within a deadline (the framed link's
  retry logic needs reads that can come back short).
- The FTDI latency timer. Linux's ``ftdi_sio`` holds received bytes for up to its
  ``latency_timer`` (16 ms by default) before handing them to the host, which alone caps a
  token-by-token exchange near 60 tokens/s. :func:`tune_latency_timer` sets it to 1 ms
  where the sysfs file is writable and otherwise returns the one line that does it.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

from .transport import BufferedTransport, LinkError

#: The ULX3S's FT231X tops out at 3 Mbaud.
DEFAULT_BAUD = 3_000_000
SYSFS_USB_SERIAL = Path("/sys/bus/usb-serial/devices")


def tune_latency_timer(port: str, sysfs: Path = SYSFS_USB_SERIAL, want_ms: int = 1):
    """Set the FTDI latency timer of ``port`` (e.g. ``/dev/ttyUSB0``) to ``want_ms``.

    Returns ``None`` when the port has no such timer (not an FTDI adapter) or it already is
    at most ``want_ms``, ``"set"`` after setting it, or the shell line a user runs to set it
    when the file is not writable.
    """
    name = os.path.basename(os.path.realpath(port))
    path = sysfs / name / "latency_timer"
    try:
        current = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    if current <= want_ms:
        return None
    try:
        path.write_text(f"{want_ms}\n")
        return "set"
    except OSError:
        return (f"echo {want_ms} | sudo tee {path}   # {name}'s FTDI latency timer is "
                f"{current} ms: it caps tokens/s")


class SerialTransport(BufferedTransport):
    """The UART at ``port``, 8N1 at ``baud``.

    ``timeout``: seconds without a byte after which ``read`` gives up. ``write`` blocks
    until the bytes are handed to the driver (``write_timeout`` bounds a stuck adapter).
    ``latency_note`` is the result of :func:`tune_latency_timer` for the port.
    """

    def __init__(self, port: str, baud: int = DEFAULT_BAUD, timeout: float = 2.0,
                 write_timeout: float = 10.0, sysfs: Path = SYSFS_USB_SERIAL):
        try:
            import serial
        except ImportError:
            raise LinkError("the serial backend needs pyserial: pip install pyserial") from None
        self.port, self.baud, self.timeout = port, baud, timeout
        self._serial_exception = serial.SerialException
        if not os.path.exists(port):
            raise LinkError(f"no device at {port} (is the board plugged in? "
                            f"ls /dev/ttyUSB* /dev/ttyACM*)")
        try:
            self.ser = serial.Serial(port, baud, timeout=0, write_timeout=write_timeout,
                                     exclusive=True)
        except serial.SerialException as e:
            raise LinkError(self._open_error(e)) from None
        except ValueError as e:
            raise LinkError(f"{port}: {e}") from None
        self.latency_note = tune_latency_timer(port, sysfs)
        self._buf = bytearray()
        self._closed = False

    def _open_error(self, e) -> str:
        err = getattr(e, "errno", None)
        text = str(e)
        if err == errno.EACCES or "Permission denied" in text:
            return (f"no permission to open {self.port}: add yourself to its group "
                    f"(sudo usermod -aG dialout $USER, then log in again)")
        if err in (errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK) or "lock" in text.lower():
            return f"{self.port} is busy: another program has it open"
        if err == errno.ENOENT:
            return f"no device at {self.port}"
        return f"cannot open {self.port}: {text}"

    # -- Transport --------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._closed:
            raise LinkError("write on a closed transport")
        try:
            self.ser.write(data)
            self.ser.flush()
        except self._serial_exception as e:
            raise LinkError(f"{self.port}: writing failed ({e}): was the board unplugged?") \
                from None

    def _pull(self, deadline: float) -> bool:
        """Wait for bytes until ``deadline``; True if some came."""
        while True:
            try:
                waiting = self.ser.in_waiting
                chunk = self.ser.read(max(1, waiting)) if waiting else b""
            except (self._serial_exception, OSError) as e:
                raise LinkError(f"{self.port}: reading failed ({e}): was the board "
                                f"unplugged?") from None
            if chunk:
                self._buf += chunk
                return True
            now = time.monotonic()
            if now >= deadline:
                return False
            time.sleep(min(0.0005, deadline - now))

    def read(self, n: int) -> bytes:
        self._check_open()
        while len(self._buf) < n:
            if not self._pull(time.monotonic() + self.timeout):
                raise LinkError(f"{self.port}: no answer for {self.timeout} s "
                                f"({len(self._buf)} of {n} bytes came)")
        return self._take(n)

    def _await_bytes(self, timeout: float) -> None:
        self._pull(time.monotonic() + timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.ser.close()
        except (self._serial_exception, OSError):
            pass
