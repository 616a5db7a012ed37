"""The reference executor: runs a compiled program word by word, as the core must.

:class:`Machine` holds the device's memories (``isa.Space``), the scalar registers, the
activation queue and the ``first`` flag, and runs one token per :meth:`Machine.run` by
*decoding* each PROGRAM word (so the encoding is exercised, not the compiler's objects) and
applying ``golden.py``'s unit function for it, reading the weights back from the WEIGHTS
memory in the engine's word layout (so the packing is exercised too). It is the ISA's
semantics made executable (the module docstring of ``isa.py``): sequential, every refusal
checked before an instruction has any effect, errors raised as :class:`MachineError`
subclasses carrying the pc, the word and the :class:`~mmfree_fpga.isa.ErrorCode` the
sequencer would report. After an error the machine is halted until :meth:`Machine.reset`,
as the core stops with an error state and never runs on.

The host-side command interface it models: :meth:`Machine.write` / :meth:`Machine.read` a
memory (refused out of range, never wrapped), :meth:`Machine.reset` (the next token starts
a sequence), :meth:`Machine.run` (one token, optional top-k).

:class:`MachineBackend` puts it behind ``generate.py``'s backend interface.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from .. import golden, isa
from .. import numerics as N
from ..core_config import SIM, CoreConfig
from ..isa import ErrorCode, Instruction, MatvecMode, Opcode, Space
from ..numerics import PF
from . import Compiled, compile_model


class MachineError(Exception):
    """A program error: the sequencer stops with ``code`` at ``pc`` (None: a host command)."""

    code = ErrorCode.NONE

    def __init__(self, message: str, pc: int | None = None, word: int | None = None):
        self.pc, self.word = pc, word
        where = "" if pc is None else f"pc {pc}: "
        super().__init__(f"{where}{message}")


class IllegalInstruction(MachineError):
    code = ErrorCode.ILLEGAL


class AddressError(MachineError):
    code = ErrorCode.ADDRESS

    def __init__(self, space: Space, addr: int, size: int, what: str, pc=None, word=None):
        self.space, self.addr, self.size = space, addr, size
        super().__init__(f"{what}: {space.name} address {addr:,} is out of range "
                         f"(the core's {space.name} has {size:,} words)", pc, word)


class LengthError(MachineError):
    code = ErrorCode.LENGTH


class OverlapError(MachineError):
    code = ErrorCode.OVERLAP


class QueueOverflow(MachineError):
    code = ErrorCode.QUEUE_OVERFLOW


class QueueUnderflow(MachineError):
    code = ErrorCode.QUEUE_UNDERFLOW


class QueueLeft(MachineError):
    code = ErrorCode.QUEUE_LEFT


class KMismatch(MachineError):
    code = ErrorCode.K_MISMATCH


class TokenError(MachineError):
    code = ErrorCode.TOKEN


class TopkError(MachineError):
    code = ErrorCode.TOPK


class MachineHalted(RuntimeError):
    """A run command while the machine is in an error state (reset it first)."""


def rms_rsqrt_k(u: np.ndarray, g_pre, g_frac: int, sqrt_k: PF) -> PF:
    """RMS's semantics for any ``sqrt_k`` immediate (``golden.rms_rsqrt`` with it)."""
    return golden.rms_rsqrt(u, g_pre, g_frac, sqrt_k)


def _ternary(codes: np.ndarray) -> np.ndarray:
    """2-bit codes -> {-1, 0, 1}; 0b10 counts as 0, as in the engine."""
    return np.where(codes == N.CODE_NEG, -1, np.where(codes == N.CODE_POS, 1, 0)).astype(np.int8)


class Machine:
    """The core as the ISA defines it: memories, registers, queue, one token per run."""

    def __init__(self, compiled: Compiled | CoreConfig):
        core = compiled if isinstance(compiled, CoreConfig) else compiled.core
        self.core = core
        self.mem: dict[Space, np.ndarray | list[int]] = {
            Space.WEIGHTS: np.zeros((core.weight_words, core.lanes // N.CODES_PER_BYTE),
                                    dtype=np.uint8),
            Space.PARAMS: np.zeros(core.param_words, dtype=np.int64),
            Space.EMBED: np.zeros(core.embed_words, dtype=np.int64),
            Space.SCRATCH: np.zeros(core.scratch_words, dtype=np.int64),
            Space.STATE: np.zeros(core.state_words, dtype=np.int64),
            Space.PROGRAM: [0] * core.program_words,
        }
        self._codes: dict[tuple[int, int, int], np.ndarray] = {}
        self.trace: list[tuple[int, np.ndarray]] = []
        if isinstance(compiled, Compiled):
            for space, image in compiled.images().items():
                self.write(space, 0, image)
        self.reset()

    # -- the host's commands ---------------------------------------------------------------

    def reset(self) -> None:
        """The next token is a sequence's first; clears an error state (not the memories)."""
        self.first = True
        self.regs = [N.PF_ZERO] * isa.NUM_REGS
        self.queue: deque = deque()
        self.error: MachineError | None = None

    def write(self, space: Space, addr: int, values) -> None:
        """Write words at ``addr``: WEIGHTS takes uint8 rows ``[n, lanes/4]`` or ints."""
        space = Space(space)
        mem, lanes = self.mem[space], self.core.lanes
        if space == Space.WEIGHTS and not (isinstance(values, np.ndarray) and values.ndim == 2):
            values = np.array([list(int(w).to_bytes(lanes // 4, "little")) for w in values],
                              dtype=np.uint8).reshape(-1, lanes // 4)
        n = len(values)
        self._check_host_range(space, addr, n, "write")
        if space == Space.PROGRAM:
            for i, w in enumerate(values):
                if not 0 <= int(w) < 1 << isa.WORD_BITS:
                    raise ValueError(f"program word {w!r} is not {isa.WORD_BITS} bits")
                mem[addr + i] = int(w)
            return
        values = np.asarray(values)
        if space == Space.WEIGHTS:
            if values.shape[1:] != mem.shape[1:]:
                raise ValueError(f"a WEIGHTS word is {lanes // 4} bytes at {lanes} lanes")
            self._codes.clear()          # decoded matrices are stale now
        else:
            bits = self.core.word_width(space)
            if values.size and not (np.all(values >= -(1 << (bits - 1)))
                                    and np.all(values < 1 << (bits - 1))):
                raise ValueError(f"a {space.name} word is {bits} bits (signed)")
        mem[addr:addr + n] = values

    def read(self, space: Space, addr: int, n: int):
        space = Space(space)
        self._check_host_range(space, addr, n, "read")
        mem = self.mem[space]
        return mem[addr:addr + n] if space == Space.PROGRAM else mem[addr:addr + n].copy()

    def run(self, token: int, topk: int | None = None):
        """Run one token; returns ``golden.topk``'s ``(ids, logits)`` when ``topk`` candidates
        are asked for, else None (a prompt token). ``self.trace`` gets the TRACE output."""
        if self.error is not None:
            raise MachineHalted(f"the machine stopped on an error ({self.error}); reset it")
        if not (isinstance(token, int | np.integer) and 0 <= token < 1 << isa.ROWS_BITS):
            raise ValueError(f"token {token!r} does not fit the run command's "
                             f"{isa.ROWS_BITS}-bit field")
        k_run = 0 if topk is None else int(topk)
        if not (topk is None or 1 <= k_run <= self.core.max_topk):
            raise ValueError(f"top-k needs 1 .. {self.core.max_topk} (max_topk), got {topk!r}")
        self.trace = []
        try:
            result = self._run(int(token), k_run)
        except MachineError as e:
            self.error = e
            raise
        self.first = False
        return result

    # -- the sequencer -------------------------------------------------------------------------

    def _run(self, token: int, k_run: int):
        program, result, pc = self.mem[Space.PROGRAM], None, 0
        self._ran_topk = False
        while True:
            if pc >= len(program):
                raise AddressError(Space.PROGRAM, pc, len(program), "instruction fetch", pc)
            word = program[pc]
            try:
                ins = isa.decode(word)
            except isa.DecodeError as e:
                raise IllegalInstruction(str(e), pc, word) from None
            if ins.op == Opcode.END or (ins.op == Opcode.SKIP_UNLESS_LAST and not k_run):
                break
            if ins.op != Opcode.SKIP_UNLESS_LAST:
                out = self._exec(ins, pc, word, token, k_run)
                if out is not None:
                    result = out
            pc += 1
        if self.queue:
            raise QueueLeft(f"the token ended with {len(self.queue)} activation vector(s) "
                            "left in the queue", pc, word)
        if k_run and not self._ran_topk:
            raise TopkError(f"{k_run} candidates were asked for but the token ended "
                            "without a TOPK", pc, word)
        return result

    def _exec(self, ins: Instruction, pc: int, word: int, token: int, k_run: int):
        core, S, P = self.core, self.mem[Space.SCRATCH], self.mem[Space.PARAMS]
        op = ins.op

        def fail(cls, msg):
            raise cls(f"{op.name}: {msg}", pc, word)

        def length(name, value, cap=None, capname=""):
            if value == 0:
                fail(LengthError, f"{name} = 0")
            if cap is not None and value > cap:
                fail(LengthError, f"{name} = {value:,} is over the core's {capname} ({cap:,})")

        def span(field, addr, n, space=None):
            space = space or isa.ADDRESS_SPACE[field]
            size = core.size(space)
            if addr + n > size:
                bad = max(addr, size)
                raise AddressError(space, bad, size, f"{op.name} {field} [{addr:,}, "
                                   f"{addr + n:,})", pc, word)
            return slice(addr, addr + n)

        def no_overlap(dst, srcs, n):
            for name, a in srcs:
                if a != dst and a < dst + n and dst < a + n:
                    fail(OverlapError, f"dst [{dst}, {dst + n}) overlaps {name} "
                                       f"[{a}, {a + n}) without being equal to it")

        def store(sl, v):
            assert np.all((v >= N.X_MIN) & (v <= N.X_MAX))   # the units saturate into X
            S[sl] = v

        if op == Opcode.EMBED:
            length("len", ins.len, core.max_d, "max_d")
            length("rows", ins.rows)
            dst = span("dst", ins.dst, ins.len)
            if token >= ins.rows:
                fail(TokenError, f"token {token:,} outside the table's {ins.rows:,} rows")
            row = span("base", ins.base + token * ins.len, ins.len)
            table = self.mem[Space.EMBED][row][None, :]
            store(dst, golden.embed(table, ins.frac, 0))
        elif op in (Opcode.RMS, Opcode.QUANT):
            length("len", ins.len, core.max_k, "max_k")
            u = S[span("src", ins.src, ins.len)]
            no_gain = op == Opcode.RMS and ins.no_gain
            g = None if no_gain else P[span("gain", ins.gain, ins.len)]
            if op == Opcode.RMS:
                self.regs[ins.reg] = rms_rsqrt_k(u, g, ins.frac, ins.sqrt_k)
            else:
                if len(self.queue) >= isa.QUEUE_DEPTH:
                    fail(QueueOverflow, f"the activation queue is full ({isa.QUEUE_DEPTH} "
                                        "vectors: the engine's two banks)")
                length("rows", ins.rows, core.max_rows, "max_rows")
                q, m = golden.absmax_quantize(u, g, ins.frac)
                self.queue.append((q, m, ins.len, ins.rows))
        elif op == Opcode.MATVEC:
            length("k", ins.k, core.max_k, "max_k")
            length("rows", ins.rows, core.max_rows, "max_rows")
            groups = -(-ins.rows // core.lanes)
            wsl = span("waddr", ins.waddr, groups * ins.k)
            mode = MatvecMode(ins.mode)
            dst = None if mode == MatvecMode.TOPK else span("dst", ins.dst, ins.rows)
            if not self.queue:
                fail(QueueUnderflow, "the activation queue is empty")
            if self.queue[0][2] != ins.k:
                fail(KMismatch, f"k = {ins.k} but the oldest activation vector has "
                                f"{self.queue[0][2]} entries")
            if self.queue[0][3] != ins.rows:
                fail(KMismatch, f"rows = {ins.rows} but the oldest activation vector was "
                                f"quantized for {self.queue[0][3]} rows")
            if mode == MatvecMode.TOPK:
                if self._ran_topk:
                    fail(TopkError, "a second TOPK in one token")
                if k_run > ins.rows:
                    fail(TopkError, f"{k_run} candidates asked of {ins.rows} rows")
            q, m, _, _ = self.queue.popleft()
            if mode == MatvecMode.TOPK:
                self._ran_topk = True
                if not k_run:
                    return None          # y would go nowhere: nothing to compute
            acc = golden.ternary_matvec(self._matrix(wsl, groups, ins.k, ins.rows), q)
            y = golden.dequantize(acc, m, self.regs[ins.reg], ins.w_scale)
            if mode == MatvecMode.STORE:
                store(dst, y)
            elif mode == MatvecMode.ADD:
                store(dst, golden.residual_add(S[dst], y))
            else:
                return golden.topk(y, k_run)
        elif op == Opcode.MLGRU:
            n = ins.n
            length("n", n, core.max_n, "max_n")
            zs = [S[span(f, getattr(ins, f), n)] for f in ("zi", "zf", "zg")]
            dst = span("dst", ins.dst, n)
            consts = P[span("lb", ins.lb, 2 * n)]
            if ins.layer >= core.max_layers:
                raise AddressError(Space.STATE, ins.layer * core.max_n, core.state_words,
                                   f"MLGRU layer {ins.layer} (max_layers {core.max_layers})",
                                   pc, word)
            no_overlap(ins.dst, [(f, getattr(ins, f)) for f in ("zi", "zf", "zg")], n)
            st = slice(ins.layer * core.max_n, ins.layer * core.max_n + n)
            state = self.mem[Space.STATE]
            h = np.zeros(n, dtype=np.int64) if self.first else state[st]
            o, h = golden.mlgru(*zs, h, consts[:n], consts[n:], ins.gn_frac)
            store(dst, o)
            assert np.all((h >= N.X_MIN) & (h <= N.X_MAX))
            state[st] = h
        elif op in (Opcode.GLU, Opcode.ADD):
            a, b = ("gate", "up") if op == Opcode.GLU else ("a", "b")
            length("len", ins.len)
            va, vb = S[span(a, getattr(ins, a), ins.len)], S[span(b, getattr(ins, b), ins.len)]
            dst = span("dst", ins.dst, ins.len)
            no_overlap(ins.dst, [(a, getattr(ins, a)), (b, getattr(ins, b))], ins.len)
            store(dst, golden.glu(va, vb) if op == Opcode.GLU else golden.residual_add(va, vb))
        elif op == Opcode.TRACE:
            length("len", ins.len)
            self.trace.append((ins.tag, S[span("src", ins.src, ins.len)].copy()))
        else:  # decode() admits only the opcodes above
            raise AssertionError(op)
        return None

    def _matrix(self, wsl: slice, groups: int, k: int, rows: int) -> np.ndarray:
        """The ternary matrix [rows, k] at WEIGHTS[wsl], unpacked from engine words."""
        key = (wsl.start, k, rows)
        if key not in self._codes:
            lanes = self.core.lanes
            codes = N.unpack_code_bytes(self.mem[Space.WEIGHTS][wsl])      # [groups*k, lanes]
            codes = codes.reshape(groups, k, lanes).transpose(0, 2, 1).reshape(-1, k)
            self._codes[key] = _ternary(codes[:rows])
        return self._codes[key]

    def _check_host_range(self, space: Space, addr: int, n: int, what: str) -> None:
        size = self.core.size(space)
        if addr < 0 or n < 0 or addr + n > size:
            raise AddressError(space, max(addr, size) if addr >= 0 else addr, size,
                               f"host {what} of {n:,} words at {addr:,}")


class MachineBackend:
    """The executor behind ``generate.py``'s loop: ``step(token)`` gives logits (float, real
    units) where the core returns candidates and ``-inf`` elsewhere, as the host sees the
    device: it samples among at most ``topk`` candidates (greedy needs one)."""

    name = "machine"

    def __init__(self, model, core: CoreConfig = SIM, topk: int | None = None):
        self.compiled = model if isinstance(model, Compiled) else compile_model(model, core)
        self.machine = Machine(self.compiled)
        self.config = self.compiled.config
        self.layout = self.compiled.layout
        cap = min(self.compiled.core.max_topk, self.config.vocab_size)
        self.topk = cap if topk is None else topk

    def reset(self) -> None:
        self.machine.reset()

    def step(self, token: int) -> np.ndarray:
        ids, logits = self.machine.run(token, self.topk)
        out = np.full(self.config.vocab_size, -np.inf)
        out[ids] = logits.astype(np.float64) / (1 << N.X_FRAC)
        return out
