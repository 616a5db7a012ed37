"""``FramedTransport``: the command byte stream of ``commands.py`` carried in the frames of
``link/protocol.py``, over any raw byte :class:`Transport` (a serial port, the simulator).

It is itself a :class:`Transport`, so ``CoreDriver`` runs on it unchanged: ``write`` takes
the driver's bytes, cuts them into whole commands (``protocol.command_size``), sends each in
one CMD frame and reads its whole reply (stop-and-wait, with the retries and the RUN replay
of the protocol's "Host recovery"); ``read`` hands out reply bytes in order. A command that
does not fit one frame is refused with a :class:`LinkError` that says what to do
(``CoreDriver(transport, chunk_bytes=protocol.MAX_WRITE_DATA)`` sizes WRITEs and READs for
it; ``max_write_data`` and ``max_run_tokens`` say the limits).

Timeouts are the raw transport's: its ``read`` raising :class:`LinkError` is what "no answer"
means here, so give it a timeout longer than the device's heartbeat period
(``protocol.DEFAULT_HEARTBEAT`` cycles).
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field

from .. import commands as C
from ..driver.transport import LinkError, Transport
from . import protocol as P

#: Garbage bytes tolerated in one attempt before it counts as failed (a babbling peer).
GARBAGE_LIMIT = 4 * (P.MAX_REPLY_PAYLOAD + P.OVERHEAD) + 1024


@dataclass
class LinkStats:
    commands: int = 0          # commands the driver sent
    frames_sent: int = 0       # CMD frames written (retries and replays included)
    retries: int = 0           # attempts after a command's first
    replays: int = 0           # RUN replays
    naks: dict = field(default_factory=dict)       # Nak name -> count
    failures: dict = field(default_factory=dict)   # failed-attempt kind -> count
    ignored_frames: int = 0    # good frames of another seq (stale) or of no use
    bytes_sent: int = 0
    bytes_received: int = 0


class _Executed(Exception):
    """A RUN ran but its reply was lost: the caller replays."""


@dataclass
class _Outcome:
    reply: bytes | None = None
    nak: P.NakInfo | None = None
    why: str = ""
    executed: bool = False     # a frame of this command's reply was seen


def _name(cmd: bytes) -> str:
    op = cmd[0]
    return C.Command(op).name if op in C.Command._value2member_map_ else f"opcode 0x{op:02x}"


class FramedTransport(Transport):
    """The framed link over ``raw``.

    ``retries``: attempts per command (a RUN's replay gets as many again) before
    :class:`LinkError`. ``first_seq``: the first sequence number (random by default, so a
    new session rarely starts on the device's last seq; it would cost one REPEAT). ``deadline``:
    seconds one command may take in all (None: no limit; heartbeats keep a long RUN alive).
    ``lanes``: the core's lanes if known (else learnt from IDENTIFY replies, or asked with an
    IDENTIFY of its own before the first WEIGHTS write). ``stats``: a :class:`LinkStats`.
    """

    max_write_data = P.MAX_WRITE_DATA
    max_run_tokens = P.MAX_RUN_TOKENS_PER_FRAME

    def __init__(self, raw: Transport, retries: int = 8, first_seq: int | None = None,
                 deadline: float | None = None, lanes: int | None = None):
        if retries < 1:
            raise ValueError("retries must be >= 1")
        self.raw = raw
        self.retries = retries
        self.deadline = deadline
        self.lanes = lanes
        self._seq = (first_seq if first_seq is not None else os.urandom(1)[0]) & 0xFF
        self._parser = P.FrameParser(P.MAX_REPLY_PAYLOAD)
        self._frames: deque[P.Frame] = deque()    # parsed, not yet looked at
        self._pending = bytearray()        # driver bytes not yet a whole command
        self._replies = bytearray()        # reply bytes not yet read by the driver
        self._history: list[int] = []      # tokens run since the last RESET_STATE
        self._history_ok = False           # False: a replay would not reproduce the state
        self._why_no_replay = "no RESET_STATE since the link was opened"
        self._synced = False               # a frame of this session was answered
        self.stats = LinkStats()
        self._closed = False

    # -- Transport ----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._closed:
            raise LinkError("write on a closed transport")
        self._pending += data
        while True:
            try:
                n = P.command_size(self._pending, self.lanes)
            except P.CommandError as e:
                self._pending.clear()
                raise LinkError(str(e)) from None
            except LookupError:
                self._learn_lanes()
                continue
            if n is None:
                return
            cmd = bytes(self._pending[:n])
            del self._pending[:n]
            self.stats.commands += 1
            self._replies += self._command(cmd)

    def read(self, n: int) -> bytes:
        if self._closed:
            raise LinkError("read on a closed transport")
        if len(self._replies) < n:
            if self._pending:
                raise LinkError(f"a read of {n} bytes while {len(self._pending)} bytes of a "
                                f"command are still to come ({_name(self._pending)}): the "
                                f"framed link sends whole commands only")
            raise LinkError(f"a read of {n} bytes, but the replies so far hold only "
                            f"{len(self._replies)}: the core answered less than the command "
                            f"set says (host and device disagree on a command's reply)")
        out = bytes(self._replies[:n])
        del self._replies[:n]
        return out

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.raw.close()

    # -- one command ---------------------------------------------------------------------------

    def _command(self, cmd: bytes) -> bytes:
        if cmd[0] == C.Command.RUN:
            reply = self._run(cmd)
        else:
            reply = self._exchange(cmd)
        self._snoop(cmd, reply)
        return reply

    def _run(self, cmd: bytes) -> bytes:
        t0 = time.monotonic()
        if not self._synced:
            # The device's last seq may be an earlier session's and equal ours: a REPEAT
            # would then look like a lost reply. An idempotent command first makes its last
            # seq one of this session's.
            self._exchange(C.encode_identify(), t0=t0)
        for _ in range(self.retries):
            try:
                return self._exchange(cmd, t0=t0)
            except _Executed:
                self._replay(t0)
        raise LinkError(f"RUN: its reply was lost {self.retries} times, even after replays")

    def _replay(self, t0: float) -> None:
        """RESET_STATE, then the tokens run since the last one (protocol: Host recovery)."""
        if not self._history_ok:
            raise LinkError(f"RUN: the core ran it but its reply was lost, and it cannot be "
                            f"replayed ({self._why_no_replay}); reset the state and run the "
                            f"sequence again")
        self.stats.replays += 1
        status = self._exchange(C.encode_reset_state(), t0=t0)
        if status[:1] != bytes([C.Status.OK]):
            raise LinkError(f"RUN replay: RESET_STATE answered {status[:1].hex()}")
        per = P.MAX_RUN_TOKENS_PER_FRAME
        for i in range(0, len(self._history), per):
            # a sign that it ran is enough: its reply is not wanted
            reply = self._exchange(C.encode_run(self._history[i:i + per], 0), t0=t0,
                                   ran_is_enough=True)
            if reply is not None and _run_error(reply):
                raise LinkError(f"RUN replay: a replayed RUN did not run cleanly "
                                f"({_run_error(reply)})")

    def _snoop(self, cmd: bytes, reply: bytes) -> None:
        """What the host must know of the core: its lanes, and the token history."""
        op = cmd[0]
        if op == C.Command.IDENTIFY and reply[:1] == bytes([C.Status.OK]):
            try:
                self.lanes = C.read_identify(C.bytes_reader(reply[1:])).lanes
            except (C.ProtocolError, EOFError):
                pass                 # the driver will say what is wrong with it
        elif op == C.Command.RESET_STATE and reply[:1] == bytes([C.Status.OK]):
            self._history, self._history_ok = [], True
        elif op == C.Command.WRITE:
            self._history_ok = False
            self._why_no_replay = "a WRITE came after the last RESET_STATE"
        elif op == C.Command.RUN and reply[:1] == bytes([C.Status.OK]):
            err = _run_error(reply)
            if err:
                self._history_ok = False
                self._why_no_replay = f"a RUN since the last RESET_STATE stopped ({err})"
            _, _, count = C.RUN_HEAD.unpack_from(cmd)
            self._history += [int.from_bytes(cmd[4 + 4 * i:8 + 4 * i], "little")
                              for i in range(count)]

    def _learn_lanes(self) -> None:
        reply = self._exchange(C.encode_identify())
        try:
            if reply[:1] != bytes([C.Status.OK]):
                raise C.ProtocolError(f"IDENTIFY answered status {reply[:1].hex()}")
            self.lanes = C.read_identify(C.bytes_reader(reply[1:])).lanes
        except (C.ProtocolError, EOFError) as e:
            self._pending.clear()
            raise LinkError(f"cannot size a WEIGHTS write: IDENTIFY failed ({e})") from None

    # -- frames ----------------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    def _exchange(self, cmd: bytes, t0: float | None = None,
                  ran_is_enough: bool = False) -> bytes | None:
        """Send ``cmd`` until a whole reply comes back; raises :class:`_Executed` (RUN only)
        when it ran but its reply was lost (returns None instead if ``ran_is_enough``: a
        replayed RUN, whose reply is not wanted), :class:`LinkError` after ``retries``
        attempts."""
        t0 = time.monotonic() if t0 is None else t0
        idempotent = cmd[0] not in P.NOT_IDEMPOTENT
        seq = self._next_seq()
        why = []
        for attempt in range(self.retries):
            if attempt:
                self.stats.retries += 1
            if self.deadline is not None and time.monotonic() - t0 > self.deadline:
                why.append(f"the {self.deadline} s deadline passed")
                break
            self._send(seq, cmd)
            res = self._collect(seq, t0)
            if res.reply is not None:
                self._synced = True
                return res.reply
            nak = res.nak
            executed = res.executed
            if nak is not None:
                name = nak.reason.name if isinstance(nak.reason, P.Nak) else str(nak.reason)
                self.stats.naks[name] = self.stats.naks.get(name, 0) + 1
                why.append(f"NAK {name}")
                if nak.reason == P.Nak.VERSION and nak.version != P.PROTOCOL_VERSION:
                    raise LinkError(self._version_message(nak.version))
                if nak.reason == P.Nak.BAD_LENGTH and len(cmd) > nak.max_payload:
                    raise LinkError(f"{_name(cmd)}: the device takes commands of at most "
                                    f"{nak.max_payload} bytes, this one has {len(cmd)}")
                if nak.reason == P.Nak.REPEAT:
                    executed = True       # (the first frame of a session is never a RUN)
            else:
                kind = res.why.split(":")[0]
                self.stats.failures[kind] = self.stats.failures.get(kind, 0) + 1
                why.append(res.why)
            if idempotent:
                seq = self._next_seq()
            elif executed and ran_is_enough:
                return None
            elif executed:
                raise _Executed()
        reasons = "; ".join(dict.fromkeys(why))
        raise LinkError(f"{_name(cmd)}: no good reply after {len(why)} attempts ({reasons})")

    def _send(self, seq: int, cmd: bytes) -> None:
        frame = P.encode_cmd(seq, cmd)
        self.stats.frames_sent += 1
        self.stats.bytes_sent += len(frame)
        self.raw.write(frame)

    def _version_message(self, device: int) -> str:
        return (f"the device speaks link protocol version {device}, this host version "
                f"{P.PROTOCOL_VERSION}: use a host and a bitstream (or simulator) of the "
                f"same version")

    def _next_frame(self) -> P.Frame:
        """The next good frame; LinkError when the raw transport times out with nothing
        left to parse."""
        parser = self._parser
        while not self._frames:
            try:
                data = self.raw.read(parser.wanted())
            except LinkError:
                self._frames += parser.flush()
                if not self._frames:
                    raise
                break
            self.stats.bytes_received += len(data)
            self._frames += parser.feed(data)
        return self._frames.popleft()

    def _collect(self, seq: int, t0: float) -> _Outcome:
        """Read frames until this seq's whole reply, a NAK about its frame, silence,
        a lost reply frame, too much garbage, or the deadline."""
        parser = self._parser
        data, index, seen = bytearray(), 0, False
        garbage0 = parser.garbage
        while True:
            if self.deadline is not None and time.monotonic() - t0 > self.deadline:
                return _Outcome(why=f"deadline: {self.deadline} s passed", executed=seen)
            try:
                f = self._next_frame()
            except LinkError as e:
                return _Outcome(why=f"no answer: {e}", executed=seen)
            if parser.garbage - garbage0 > GARBAGE_LIMIT:
                return _Outcome(why=f"garbage: more than {GARBAGE_LIMIT} bytes of no frame",
                                executed=seen)
            if f.version != P.PROTOCOL_VERSION:
                raise LinkError(self._version_message(f.version))
            if f.type == P.FrameType.NAK:
                info = P.parse_nak(f.payload)
                if info is None:
                    self.stats.ignored_frames += 1
                    continue
                # A NAK of a bad frame carries the seq as received: ours if it matches (a
                # NAK of garbage matches 1 time in 256: a harmless resend); one that does
                # not is garbage's, or ours with its seq byte hit (then: the timeout).
                if f.seq != seq or (seen and info.reason in P.ANONYMOUS_NAKS):
                    self.stats.ignored_frames += 1
                    continue
                return _Outcome(nak=info)
            if f.type in (P.FrameType.REPLY, P.FrameType.REPLY_END):
                if f.seq != seq or len(f.payload) < P.REPLY_INDEX.size:
                    self.stats.ignored_frames += 1
                    continue
                (idx,) = P.REPLY_INDEX.unpack_from(f.payload)
                seen = True
                if idx != index & 0xFFFF:
                    return _Outcome(why=f"lost reply frame: index {idx}, expected "
                                        f"{index & 0xFFFF}", executed=True)
                chunk = f.payload[P.REPLY_INDEX.size:]
                if chunk:
                    data += chunk
                    index += 1
                if f.type == P.FrameType.REPLY_END:
                    return _Outcome(reply=bytes(data))
                continue
            self.stats.ignored_frames += 1


def _run_error(reply: bytes) -> str:
    """'' if a RUN reply is OK and has no ERROR record, else what it has."""
    if reply[:1] != bytes([C.Status.OK]):
        st = reply[0] if reply else None
        return f"status {C.Status(st).name if st in C.Status._value2member_map_ else st}"
    pos = 1
    while pos < len(reply):
        kind = reply[pos]
        if kind == C.RecordType.TRACE and pos + 5 <= len(reply):
            n = int.from_bytes(reply[pos + 3:pos + 5], "little")
            pos += 5 + 4 * n
        elif kind == C.RecordType.RESULT and pos + 2 <= len(reply):
            pos += 2 + 8 * reply[pos + 1]
        elif kind == C.RecordType.ERROR:
            return "an ERROR record"
        elif kind == C.RecordType.DONE:
            return ""
        else:
            return "a malformed reply"
    return "a reply without DONE"
