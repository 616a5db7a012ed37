"""Test peers for the framed link: a fault-injecting :class:`Transport` wrapper and the
Python device model (``protocol.DeviceFramer``) behind a :class:`Transport`.

:class:`FaultyTransport` sits between a host (``FramedTransport``) and its raw transport
and damages the bytes, seeded (``random.Random(seed)``: the same seed, the same faults):
per direction a :class:`Faults` of probabilities. Host -> device, per ``write`` (the framed
host writes one frame per call): ``truncate`` (cut it short at a random point),
``duplicate`` (send it twice), ``garbage`` (random bytes before it, SOF bytes among them);
per byte ``flip`` (one random bit) and ``drop``. Device -> host, per byte: ``flip``,
``drop``, ``garbage`` (random bytes inserted before it) and ``truncate`` (the rest of what
is buffered is lost). ``silent_after``: after that many writes the peer stops answering
(later writes vanish; once one has, reads time out). ``injected`` counts what was done.

:class:`LoopbackDevice` is ``DeviceFramer`` as a raw transport: ``write`` feeds it,
``read`` takes what it sent; when a read finds too few bytes the rx timeout is taken to
have passed (``quiet()``: a frame in progress is refused TRUNCATED) and, if still too few,
the read times out (:class:`LinkError`), at once: tests need no clock.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from ..driver.transport import LinkError, Transport
from . import protocol as P


@dataclass(frozen=True)
class Faults:
    flip: float = 0.0         # per byte: flip one random bit
    drop: float = 0.0         # per byte: lose it
    truncate: float = 0.0     # per write (host -> device) or per byte (device -> host)
    duplicate: float = 0.0    # per write: send it twice (host -> device only)
    garbage: float = 0.0      # per write / per byte: random bytes before it


NONE = Faults()


class FaultyTransport(Transport):
    def __init__(self, inner: Transport, seed: int = 0, tx: Faults = NONE, rx: Faults = NONE,
                 silent_after: int | None = None, max_garbage: int = 24):
        self.inner = inner
        self.rng = random.Random(seed)
        self.tx, self.rx = tx, rx
        self.silent_after = silent_after
        self.max_garbage = max_garbage
        self.writes = 0
        self.silent = False            # the peer stopped: set by the first write it drops
        self.injected: Counter = Counter()
        self._buf = bytearray()        # bytes read from inner, damaged, not yet handed out

    def _garbage(self) -> bytes:
        n = self.rng.randint(1, self.max_garbage)
        return bytes(P.SOF if self.rng.random() < 0.2 else self.rng.randrange(256)
                     for _ in range(n))

    def _bytewise(self, data: bytes, f: Faults, rx: bool) -> bytes:
        out = bytearray()
        rng = self.rng
        for b in data:
            if rx and f.garbage and rng.random() < f.garbage:
                out += self._garbage()
                self.injected["rx_garbage"] += 1
            if f.drop and rng.random() < f.drop:
                self.injected["rx_drop" if rx else "tx_drop"] += 1
                continue
            if f.flip and rng.random() < f.flip:
                b ^= 1 << rng.randrange(8)
                self.injected["rx_flip" if rx else "tx_flip"] += 1
            out.append(b)
        return bytes(out)

    def write(self, data: bytes) -> None:
        if self.silent_after is not None and self.writes >= self.silent_after:
            self.silent = True
        if self.silent:
            self.injected["silent"] += 1
            return
        self.writes += 1
        f, rng = self.tx, self.rng
        data = bytes(data)
        if f.truncate and rng.random() < f.truncate and data:
            data = data[:rng.randrange(len(data))]
            self.injected["tx_truncate"] += 1
        data = self._bytewise(data, f, rx=False)
        if f.garbage and rng.random() < f.garbage:
            data = self._garbage() + data
            self.injected["tx_garbage"] += 1
        self.inner.write(data)
        if f.duplicate and rng.random() < f.duplicate:
            self.inner.write(data)
            self.injected["tx_duplicate"] += 1

    def read(self, n: int) -> bytes:
        if self.silent:
            raise LinkError(f"waiting for {n} bytes: the peer stopped answering (injected)")
        while len(self._buf) < n:
            try:
                b = self.inner.read(1)
            except LinkError:
                raise                          # what is in _buf stays for the next read
            if self.rx.truncate and self.rng.random() < self.rx.truncate:
                self.injected["rx_truncate"] += 1
                self._drain_inner()
                continue
            self._buf += self._bytewise(b, self.rx, rx=True)
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def _drain_inner(self) -> None:
        drain = getattr(self.inner, "drain", None)
        if drain is not None:
            drain()

    def close(self) -> None:
        self.inner.close()


class LoopbackDevice(Transport):
    """``protocol.DeviceFramer`` behind the raw-transport interface (see the module)."""

    def __init__(self, processor: Callable[[bytes], bytes], **kw):
        self.device = P.DeviceFramer(processor, **kw)
        self.closed = False

    def write(self, data: bytes) -> None:
        self.device.receive(data)

    def read(self, n: int) -> bytes:
        out = self.device.out
        if len(out) < n:
            self.device.quiet()
        if len(out) < n:
            raise LinkError(f"waiting for {n - len(out)} of {n} bytes: no answer (timeout)")
        data = bytes(out[:n])
        del out[:n]
        return data

    def drain(self) -> None:
        """Lose everything sent but not yet read (a fault: the rest of a reply is cut)."""
        self.device.out.clear()

    def close(self) -> None:
        self.closed = True
