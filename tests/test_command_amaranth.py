"""CommandProcessor in the Amaranth simulator against a Python model of the command set.

One testbench plays the core: every memory space served from a Python list (random write
back-pressure, read latency 0..3 cycles), and a fake sequencer that answers each run beat
with canned records (:func:`fake_sequencer`) and a token_done. The host side feeds bytes
with random gaps and takes replies with random back-pressure; the bytes that come back and
the memories afterwards must equal :class:`Model`'s. Also: cycle costs and the ``busy``
contract with no back-pressure, and real ``lib.memory`` memories through ``serve_memory``;
the CRC command (its algorithm is zlib.crc32's, the ChunkCRC unit alone, CRC = zlib.crc32
of what READ returns, its cycles behind serve_memory, the fake core and WeightMemory).
"""

import io
import random
import struct
import zlib

import numpy as np
import pytest
from amaranth import Module
from amaranth.lib import memory, wiring
from amaranth.sim import Simulator

from mmfree_fpga import commands as C
from mmfree_fpga.core_config import CoreConfig
from mmfree_fpga.isa import Space
from mmfree_hw.command import (
    CRC_ALGORITHM,
    ChunkCRC,
    CommandProcessor,
    port_name,
    serve_memories,
    serve_memory,
)
from mmfree_hw.weights import WeightMemory
from util import send

CFG = CoreConfig(lanes=32, weight_words=48, param_words=64, embed_words=96, scratch_words=32,
                 program_words=16, max_d=32, max_n=16, max_inter=32, max_layers=2,
                 max_vocab=2000, max_topk=8)
REPLY_LATENCY = 3            # cycles from a command's last byte taken to its reply's first
RUN_BEAT_LATENCY = 1         # cycles from a token's last id byte taken to its run beat
TOKEN_LIMIT = 1000           # the fake sequencer refuses token ids from here on
UNKNOWN_OPCODES = [0x00, max(C.Command) + 1, 0x42, 0x80, 0xFF]


def fake_sequencer(token, k_run, first, last, seq_first):
    """Records of one token and whether it ran: a TRACE echoing the run beat, a RESULT of
    k_run made-up candidates, or an ERROR (TOKEN) for an id >= TOKEN_LIMIT."""
    if token >= TOKEN_LIMIT:
        return C.encode_error(C.ErrorCode.TOKEN, token & 0xFFFF), False
    rec = C.encode_trace(token & 0xFFFF, [token & 0x7FFFFFFF, k_run, first, last, seq_first])
    if k_run:
        rec += C.encode_result([token + i for i in range(k_run)],
                               [-(1 << 31) + 5 * i if token % 2 else 100 - 7 * i
                                for i in range(k_run)])
    return rec, True


def counter_values(tokens):
    """What the fake core's counters read after ``tokens`` completed tokens."""
    return [(tokens * (i + 1) + 7 * i) & 0xFFFFFFFF for i in range(len(C.Counter))]


class Model:
    """The command set in Python: memories as lists, the fake sequencer above."""

    def __init__(self, cfg, build_id=0):
        self.cfg, self.build_id = cfg, build_id
        self.mem = {s: [0] * cfg.size(s) for s in Space}
        self.seq_first = 1
        self.tokens = 0

    def feed(self, data: bytes) -> bytes:
        r, out = io.BytesIO(data), bytearray()
        while opb := r.read(1):
            op = opb[0]
            if op == C.Command.IDENTIFY:
                out += C.identify_reply(self.cfg, self.build_id)
            elif op in (C.Command.WRITE, C.Command.READ, C.Command.CRC):
                space, addr, count = struct.unpack("<BII", r.read(9))
                if space not in Space._value2member_map_:
                    out.append(C.Status.BAD_SPACE)
                    continue
                nb = C.word_bytes(space, self.cfg.lanes)
                good = addr + count <= self.cfg.size(space)
                if op == C.Command.WRITE:
                    payload = r.read(count * nb)
                    if good:
                        for i in range(count):
                            self.mem[space][addr + i] = int.from_bytes(
                                payload[i * nb:(i + 1) * nb], "little")
                    out.append(C.Status.OK if good else C.Status.BAD_RANGE)
                elif good and op == C.Command.READ:
                    out.append(C.Status.OK)
                    for i in range(count):
                        out += self.mem[space][addr + i].to_bytes(nb, "little")
                elif good:
                    out += C.encode_crc_reply(zlib.crc32(b"".join(
                        self.mem[space][addr + i].to_bytes(nb, "little")
                        for i in range(count))))
                else:
                    out.append(C.Status.BAD_RANGE)
            elif op == C.Command.RESET_STATE:
                self.seq_first = 1
                out.append(C.Status.OK)
            elif op == C.Command.RUN:
                topk, n = struct.unpack("<BH", r.read(3))
                ids = np.frombuffer(r.read(4 * n), dtype="<u4")
                if topk > self.cfg.max_topk or n == 0:
                    out.append(C.Status.BAD_ARG)
                    continue
                out.append(C.Status.OK)
                for i, t in enumerate(ids):
                    last = i == n - 1
                    rec, ok = fake_sequencer(int(t), topk if last else 0, int(i == 0),
                                             int(last), self.seq_first)
                    self.seq_first = 0
                    out += rec
                    if not ok:
                        break
                    self.tokens += 1
                out += C.encode_done(counter_values(self.tokens))
            elif op == C.Command.COUNTERS:
                out.append(C.Status.OK)
                out += C.encode_counter_values(counter_values(self.tokens))
            elif op == C.Command.RESET_COUNTERS:
                self.tokens = 0
                out.append(C.Status.OK)
            else:
                out.append(C.Status.BAD_COMMAND)
        return bytes(out)


def simulate(dut, stream: bytes, n_out: int, *, seed=0, in_gap=0.0, out_stall=0.0,
             mem_stall=0.0, latencies=(1,), extra=20, early_done=False):
    """Run ``stream`` through the processor; returns (out bytes, fake core, log) where the
    log holds the cycles of every cmd_in/cmd_out transfer and the busy trace."""
    rng = random.Random(seed)
    core = Model(dut._cfg, dut.build_id)    # the testbench's memories and sequencer state
    log = {"in": [], "out": [], "busy": [], "run": []}
    got = bytearray()
    spaces = list(Space)
    done = [False]

    async def host_in(ctx):
        await send(ctx, dut.cmd_in, stream, 1.0 - in_gap, rng, [])

    budget = 10 * (len(stream) + n_out) + 2000      # a hung processor fails, not hangs

    async def host_out(ctx):
        cycle = 0
        while (len(got) < n_out or extra_left[0] > 0) and cycle < budget:
            if len(got) >= n_out:
                extra_left[0] -= 1
            ready = rng.random() >= out_stall
            ctx.set(dut.cmd_out.ready, ready)
            _, _, valid, payload, busy, in_v, in_r = await ctx.tick().sample(
                dut.cmd_out.valid, dut.cmd_out.payload, dut.busy, dut.cmd_in.valid,
                dut.cmd_in.ready)
            if valid and ready:
                got.append(payload)
                log["out"].append(cycle)
            if in_v and in_r:
                log["in"].append(cycle)
            log["busy"].append(busy)
            cycle += 1
        done[0] = True

    extra_left = [extra]

    async def fake_core(ctx):
        reads = {s: None for s in spaces}       # [cycle it becomes valid, word]
        seq = None                              # [record bytes left, ok] of a running token
        cycle = 0
        while not done[0]:
            # -- drive this cycle's inputs -------------------------------------------------
            for s in spaces:
                p = dut.mem(s)
                ctx.set(p.write.ready, rng.random() >= mem_stall)
                ctx.set(p.read_addr.ready, reads[s] is None)
                if reads[s] is None and ctx.get(p.read_addr.valid):
                    lat = rng.choice(latencies)
                    reads[s] = [cycle + lat, core.mem[s][ctx.get(p.read_addr.payload)],
                                False]
                r = reads[s]
                ctx.set(p.read_data.valid, r is not None and cycle >= r[0])
                ctx.set(p.read_data.payload, r[1] if r else 0)
            run_ready = seq is None and rng.random() >= mem_stall
            ctx.set(dut.run.ready, run_ready)
            rec_valid = seq is not None and bool(seq[0]) and (early_done
                                                              or rng.random() >= in_gap)
            ctx.set(dut.records.valid, rec_valid)
            ctx.set(dut.records.payload, seq[0][0] if rec_valid else 0)
            # early_done: token_done offered with the records (records.valid has no gaps)
            done_valid = seq is not None and (early_done or not seq[0]) \
                and rng.random() >= in_gap
            ctx.set(dut.token_done.valid, done_valid)
            ctx.set(dut.token_done.payload.ok, seq[1] if seq else 0)
            rs_ready, rc_ready = rng.random() >= mem_stall, rng.random() >= mem_stall
            ctx.set(dut.reset_state.ready, rs_ready)
            ctx.set(dut.reset_counters.ready, rc_ready)
            ctx.set(dut.counters, counter_values(core.tokens))
            watch = []
            for s in spaces:
                p = dut.mem(s)
                watch += [p.write.valid, p.write.payload.addr, p.write.payload.data,
                          p.read_addr.valid, p.read_data.ready]
            watch += [dut.run.valid, dut.run.payload, dut.records.ready, dut.token_done.ready,
                      dut.reset_state.valid, dut.reset_counters.valid]
            _, _, *v = await ctx.tick().sample(*watch)
            # -- transfers at this edge ---------------------------------------------------
            for i, s in enumerate(spaces):
                w_valid, w_addr, w_data, ra_valid, rd_ready = v[5 * i:5 * i + 5]
                p = dut.mem(s)
                if w_valid and ctx.get(p.write.ready):
                    core.mem[s][w_addr] = w_data
                r = reads[s]
                if r is not None and cycle >= r[0] and rd_ready:
                    reads[s] = None
            run_valid, run_payload, rec_ready, done_ready, rs_valid, rc_valid = v[-6:]
            if run_valid and run_ready:
                beat = (run_payload.token, run_payload.k_run, run_payload.first,
                        run_payload.last)
                log["run"].append((cycle, beat))
                rec, ok = fake_sequencer(*beat, core.seq_first)
                core.seq_first = 0
                seq = [list(rec), ok]
            elif rec_valid and rec_ready:
                seq[0].pop(0)
            elif done_valid and done_ready:
                assert not seq[0], "token_done taken before the last record byte"
                core.tokens += seq[1]
                seq = None
            if rs_valid and rs_ready:
                core.seq_first = 1
            if rc_valid and rc_ready:
                core.tokens = 0
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(host_in, background=True)      # host_out decides when it ends
    sim.add_testbench(host_out)
    sim.add_testbench(fake_core, background=True)
    sim.run()
    return bytes(got), core, log


def words_for(space, count, rng):
    bits = CFG.word_width(space)
    return [rng.randrange(1 << bits) for _ in range(count)]


def scripted_stream(rng):
    """Every command, every refusal, every space."""
    s = bytearray(C.encode_identify())
    for space in Space:
        size = CFG.size(space)
        n = min(size, 5)
        ws = words_for(space, n, rng)
        s += C.encode_write(space, size - n, ws, lanes=CFG.lanes)
        s += C.encode_read(space, size - n, n)
        s += C.encode_write(space, size - 2, words_for(space, 3, rng), lanes=CFG.lanes)
        s += C.encode_read(space, size - 2, 3)                      # BAD_RANGE
        s += C.encode_write(space, 0, [], lanes=CFG.lanes)          # count 0: OK
        s += C.encode_read(space, 0, 0)
        s += C.encode_read(space, size - n, n)                      # unchanged
        s += C.encode_crc(space, size - n, n) + C.encode_crc(space, size - n + 1, n - 2)
        s += C.encode_crc(space, 0, size)                           # the whole space
        s += C.encode_crc(space, 3, 0) + C.encode_crc(space, size, 0)   # count 0: 0
        s += C.encode_crc(space, size - 2, 3)                       # BAD_RANGE
        s += C.encode_crc(space, size + 1, 0)                       # BAD_RANGE, count 0
    s += C.encode_write_header(len(Space), 0, 3)                    # BAD_SPACE, no data
    s += C.encode_read(0xFF, 0, 1) + C.encode_crc(len(Space), 0, 1)
    s += C.encode_crc(Space.EMBED, 0xFFFFFFFF, 2)                   # addr + count wraps
    s += C.encode_write_header(Space.PARAMS, 0xFFFFFFFF, 2) + bytes(8)   # addr + count wraps
    s += C.encode_reset_counters() + C.encode_counters()
    s += C.encode_reset_state() + C.encode_run([3, 4, 5], 2)
    s += C.encode_run([6], 0) + C.encode_run([7, 8], CFG.max_topk)
    s += C.encode_run([9, 10], CFG.max_topk + 1)                    # BAD_ARG, ids dropped
    s += C.encode_run([], 1)                                        # BAD_ARG, none
    s += C.encode_run([11, TOKEN_LIMIT + 5, 12, 13], 3)             # ERROR stops the rest
    s += C.encode_run([TOKEN_LIMIT], 1)                             # ERROR on the last
    s += C.encode_counters() + bytes(UNKNOWN_OPCODES)               # unknown opcodes
    s += C.encode_reset_state() + C.encode_run([14], 1) + C.encode_identify()
    return bytes(s)


def random_stream(rng, n_cmds):
    s = bytearray()
    for _ in range(n_cmds):
        kind = rng.choice(["w", "w", "r", "r", "crc", "run", "ctr", "rst", "bad"])
        space = rng.choice(list(Space))
        size = CFG.size(space)
        addr = rng.randrange(size + 2)
        n = rng.randrange(0, 6)
        if kind == "w":
            s += C.encode_write_header(space, addr, n)
            s += C.words_to_bytes(space, words_for(space, n, rng), CFG.lanes)
        elif kind == "r":
            s += C.encode_read(space, addr, n)
        elif kind == "crc":
            s += C.encode_crc(space, addr, rng.choice([n, n, size - addr]) if addr <= size
                              else n)
        elif kind == "run":
            toks = [rng.choice([rng.randrange(TOKEN_LIMIT), TOKEN_LIMIT + 1])
                    if rng.random() < 0.2 else rng.randrange(TOKEN_LIMIT)
                    for _ in range(rng.randrange(0, 4))]
            s += C.encode_run(toks, rng.randrange(CFG.max_topk + 2))
        elif kind == "ctr":
            s += rng.choice([C.encode_counters(), C.encode_reset_counters(),
                             C.encode_identify()])
        elif kind == "rst":
            s += C.encode_reset_state()
        else:
            s += bytes([rng.choice(UNKNOWN_OPCODES)])
    return bytes(s)


def check(stream, build_id=0, crc_bytes=16, **kw):
    model = Model(CFG, build_id)
    want = model.feed(stream)
    got, core, log = simulate(CommandProcessor(CFG, build_id=build_id, crc_bytes=crc_bytes),
                              stream, len(want), **kw)
    assert got[:len(want)] == want, first_difference(got, want)
    assert len(got) == len(want), "extra bytes after the last reply"
    for s in Space:
        assert core.mem[s] == model.mem[s], s.name
    assert log["busy"][-1] == 0
    return log


def first_difference(got, want):
    i = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
             min(len(got), len(want)))
    return f"first difference at byte {i}: got {got[i:i + 12].hex()} want {want[i:i + 12].hex()}"


def test_every_command_in_order():
    check(scripted_stream(random.Random(1)), build_id=0xC0FFEE42)


@pytest.mark.parametrize("crc_bytes", [1, 3, 5, 64])
def test_crc_chunk_sizes(crc_bytes):
    """The CRC unit at other widths: a byte a cycle, chunks that divide no word (a partial
    last chunk), one wider than every word; under back-pressure."""
    check(scripted_stream(random.Random(20 + crc_bytes)), crc_bytes=crc_bytes, seed=crc_bytes,
          in_gap=0.2, out_stall=0.3, mem_stall=0.2, latencies=(0, 1, 2))


@pytest.mark.parametrize("seed", [2, 3])
def test_every_command_under_back_pressure(seed):
    check(scripted_stream(random.Random(seed)), seed=seed, in_gap=0.3, out_stall=0.4,
          mem_stall=0.3, latencies=(0, 1, 2, 3))


def test_token_done_offered_with_the_records():
    check(scripted_stream(random.Random(4)), seed=4, in_gap=0.3, out_stall=0.5,
          early_done=True)


@pytest.mark.parametrize("seed", [10, 11, 12])
def test_random_commands(seed):
    rng = random.Random(seed)
    check(random_stream(rng, 60), seed=seed, in_gap=0.2, out_stall=0.3, mem_stall=0.2,
          latencies=(0, 1, 3))


def test_unknown_opcode_then_in_step():
    log = check(bytes([0x00, 0x55]) + C.encode_identify())
    assert log["out"][:2]


def test_cycle_costs_and_busy():
    """One byte a cycle in and out with no back-pressure; the reply latencies of the
    docstring; busy low while waiting for the host, high while a token runs."""
    rng = random.Random(5)
    n = 40
    stream = (C.encode_write(Space.WEIGHTS, 0, words_for(Space.WEIGHTS, n, rng),
                             lanes=CFG.lanes)
              + C.encode_read(Space.WEIGHTS, 0, n) + C.encode_read(Space.EMBED, 0, n)
              + C.encode_identify())
    run = C.encode_run([1, 2], 1)
    stream += run
    want = Model(CFG).feed(stream)
    got, _, log = simulate(CommandProcessor(CFG), stream, len(want))
    assert got == want
    t_in, t_out = log["in"], log["out"]
    nw = len(C.encode_write_header(0, 0, n)) + n * 8
    # the header, one cycle to check it, then the data at a byte a cycle
    assert t_in[:10] == list(range(t_in[0], t_in[0] + 10))
    assert t_in[10:nw] == list(range(t_in[9] + 2, t_in[9] + 2 + nw - 10)), "1 byte/cycle"
    assert t_out[0] == t_in[nw - 1] + REPLY_LATENCY
    # READ of WEIGHTS: status + 40 words of 8 bytes, then READ of EMBED (2-byte words):
    read1 = t_out[1:1 + 1 + 8 * n]
    assert read1[0] == t_in[nw + 9] + REPLY_LATENCY
    assert read1[2] - read1[1] <= 2        # the first word: one cycle after the status
    assert read1[1:] == list(range(read1[1], read1[1] + len(read1) - 1))
    read2 = t_out[2 + 8 * n:3 + 8 * n + 2 * n]
    assert read2[1:] == list(range(read2[1], read2[1] + len(read2) - 1)), "1 byte/cycle"
    ident = t_out[-len(Model(CFG).feed(run)) - C.IDENTIFY_BYTES:][:C.IDENTIFY_BYTES]
    assert ident == list(range(ident[0], ident[0] + C.IDENTIFY_BYTES))
    (c1, _), (c2, _) = log["run"]
    assert c1 == t_in[-5] + RUN_BEAT_LATENCY and c2 == t_in[-1] + RUN_BEAT_LATENCY
    # busy: high while a token runs (from its run beat on), and until DONE's last byte is
    # out; low between tokens while the next id's bytes are due, and at the end
    assert all(log["busy"][c1:t_in[-4] - 1]) and all(log["busy"][c2:t_out[-1]])
    assert log["busy"][-1] == 0


def test_busy_waits_for_host_mid_command():
    """A WRITE whose data has a long gap: busy falls while the processor waits for it."""
    head = C.encode_write_header(Space.PARAMS, 0, 2) + bytes(4)
    rest = bytes(4)
    dut = CommandProcessor(CFG)
    busy = []

    async def bench(ctx):
        await send(ctx, dut.cmd_in, head, 1.0, None, [])
        for _ in range(6):
            *_, b = await ctx.tick().sample(dut.busy)
            busy.append(b)
        await send(ctx, dut.cmd_in, rest, 1.0, None, [])
        for _ in range(REPLY_LATENCY):
            await ctx.tick()
        # the status waits in the output register: busy stays high until it is taken
        assert ctx.get(dut.cmd_out.valid) and ctx.get(dut.cmd_out.payload) == C.Status.OK
        assert ctx.get(dut.busy)
        ctx.set(dut.cmd_out.ready, 1)
        await ctx.tick()
        assert not ctx.get(dut.busy) and not ctx.get(dut.cmd_out.valid)

    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def mem(ctx):
        for s in Space:
            ctx.set(dut.mem(s).write.ready, 1)
    sim.add_testbench(mem)
    sim.add_testbench(bench)
    sim.run()
    assert busy[-4:] == [0, 0, 0, 0]


class WithMemories(wiring.Component):
    """The processor with a ``lib.memory`` per space behind ``serve_memory`` (or, with
    ``weight_store``, WEIGHTS in a ``weights.WeightMemory`` as ``top.Accelerator`` has it,
    its request side idle); the run side answers nothing (no RUN is sent)."""

    def __init__(self, cfg, weight_store=False, **kw):
        self.proc = CommandProcessor(cfg, **kw)
        self._cfg, self._weight_store = cfg, weight_store
        sig = self.proc.signature.members
        super().__init__({"cmd_in": sig["cmd_in"], "cmd_out": sig["cmd_out"],
                          "busy": sig["busy"]})

    def elaborate(self, platform):
        m = Module()
        m.submodules.proc = proc = self.proc
        wiring.connect(m, wiring.flipped(self.cmd_in), proc.cmd_in)
        wiring.connect(m, proc.cmd_out, wiring.flipped(self.cmd_out))
        m.d.comb += self.busy.eq(proc.busy)
        if not self._weight_store:
            serve_memories(m, proc, self._cfg)
            return m
        for s in Space:
            if s != Space.WEIGHTS:
                mem = memory.Memory(shape=self._cfg.word_width(s), depth=self._cfg.size(s),
                                    init=[])
                m.submodules[port_name(s)] = mem
                serve_memory(m, mem, proc.mem(s), name=s.name.lower())
        port = proc.mem(Space.WEIGHTS)
        m.submodules.weights = store = WeightMemory(
            self._cfg.lanes, self._cfg.size(Space.WEIGHTS),
            addr_bits=len(port.read_addr.payload), host_read=True)
        wiring.connect(m, port.write, store.write)
        wiring.connect(m, port.read_addr, store.read_addr)
        wiring.connect(m, store.read_data, port.read_data)
        return m


def lib_simulate(stream: bytes, n_out: int, **kw):
    """``stream`` through :class:`WithMemories` (``kw``) with no back-pressure: (out bytes,
    edges of the cmd_in transfers, edges of the cmd_out transfers)."""
    dut = WithMemories(CFG, **kw)
    got, t_in, t_out = bytearray(), [], []

    async def host(ctx):
        await send(ctx, dut.cmd_in, stream, 1.0, None, t_in)

    async def sink(ctx):
        ctx.set(dut.cmd_out.ready, 1)
        edge = 0
        while len(got) < n_out:
            _, _, valid, payload = await ctx.tick().sample(dut.cmd_out.valid,
                                                           dut.cmd_out.payload)
            edge += 1
            if valid:
                got.append(payload)
                t_out.append(edge)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(host)
    sim.add_testbench(sink)
    sim.run()
    return bytes(got), t_in, t_out


def test_with_lib_memories():
    rng = random.Random(7)
    stream = bytearray()
    for space in Space:
        ws = words_for(space, 6, rng)
        stream += C.encode_write(space, 1, ws, lanes=CFG.lanes) + C.encode_read(space, 0, 8)
        stream += C.encode_crc(space, 0, 8) + C.encode_crc(space, 1, 6)
    want = Model(CFG).feed(bytes(stream))
    got, _, _ = lib_simulate(bytes(stream), len(want))
    assert got == want


# -- the CRC command -------------------------------------------------------------------------

def test_crc_algorithm_is_zlibs():
    """The catalog entry the gateware uses is zlib.crc32 (the host's), byte-wise and
    word-wise (a word's bytes little-endian)."""
    rng = random.Random(30)
    for n in (0, 1, 2, 7, 32, 100):
        data = bytes(rng.randrange(256) for _ in range(n))
        assert CRC_ALGORITHM(8).compute(data) == zlib.crc32(data)
        if n % 4 == 0:
            words = [int.from_bytes(data[i:i + 4], "little") for i in range(0, n, 4)]
            assert CRC_ALGORITHM(32).compute(words) == zlib.crc32(data)
    assert zlib.crc32(b"123456789") == 0xCBF43926       # the catalog's check value


@pytest.mark.parametrize("chunk_bytes,sizes", [(1, [1]), (5, [1, 2, 3, 5]), (16, [2, 4, 16])])
def test_chunk_crc_against_zlib(chunk_bytes, sizes):
    """ChunkCRC alone: chunks of every size in any order, restarts (start with and without
    valid), idle cycles; crc equals zlib.crc32 of the bytes since the last start."""
    rng = random.Random(chunk_bytes)
    dut = ChunkCRC(chunk_bytes, sizes)

    async def bench(ctx):
        acc = b""
        for i in range(120):
            start = i == 0 or rng.random() < 0.05
            valid = rng.random() < 0.8
            n = rng.choice(sizes)
            chunk = bytes(rng.randrange(256) for _ in range(n))
            junk = rng.getrandbits(8 * (chunk_bytes - n)) << 8 * n     # ignored bytes
            ctx.set(dut.start, start)
            ctx.set(dut.valid, valid)
            ctx.set(dut.nbytes, n)
            ctx.set(dut.data, int.from_bytes(chunk, "little") | junk)
            await ctx.tick()
            acc = (b"" if start else acc) + (chunk if valid else b"")
            assert ctx.get(dut.crc) == zlib.crc32(acc), i

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_crc_equals_zlib_of_read():
    """CRC's answer is zlib.crc32 of the bytes READ sends for the same range: every space,
    odd ranges, the whole space, count 0 (checked on the processor's own output, not only
    against the model)."""
    rng = random.Random(31)
    stream, ranges = bytearray(), {}
    for space in Space:
        size = CFG.size(space)
        stream += C.encode_write(space, 0, words_for(space, size, rng), lanes=CFG.lanes)
        ranges[space] = [(0, size), (1, size - 2), (size // 3, 3), (size - 1, 1), (5, 0)]
        for addr, count in ranges[space]:
            stream += C.encode_read(space, addr, count) + C.encode_crc(space, addr, count)
    want = Model(CFG).feed(bytes(stream))
    got, _, _ = simulate(CommandProcessor(CFG), bytes(stream), len(want), seed=31,
                         out_stall=0.2, latencies=(0, 1, 3))
    assert got == want
    r = C.bytes_reader(got)
    for space, rs in ranges.items():
        assert C.read_status(r) == C.Status.OK                          # its WRITE
        for _, count in rs:
            assert C.read_status(r) == C.Status.OK
            read_bytes = r(count * C.word_bytes(space, CFG.lanes))
            assert C.read_status(r) == C.Status.OK
            assert C.read_crc(r) == zlib.crc32(read_bytes), (space.name, count)
    with pytest.raises(EOFError):
        r(1)


#: CRC's cycles per word with no back-pressure and 1-cycle memories, for a word of one chunk
#: (at most crc_bytes; a word of k chunks takes max(k, this)): 1 behind serve_memory (its
#: read_addr is ready while it hands over a word, so the next address, offered in that
#: cycle, goes at once; the core's host ports are the same), 2 behind the fake core (it
#: takes an address only once its previous word has gone). top.Accelerator's WEIGHTS are
#: served by weights.WeightMemory: 3 (its host read's round trip).
CRC_CYCLES_PER_WORD = {"lib": 1, "fake": 2,
                       "store": 1 + WeightMemory.HOST_READ_LATENCY}
CRC_TAIL = 2            # cycles from feeding the last chunk to the CRC's first byte out
READ_LATENCY = {"lib": 1, "fake": 1, "store": WeightMemory.HOST_READ_LATENCY}


@pytest.mark.parametrize("space,crc_bytes,memory", [
    *[(s, b, mem) for s, b in [(Space.WEIGHTS, 16), (Space.EMBED, 16), (Space.PROGRAM, 8),
                               (Space.PROGRAM, 4), (Space.WEIGHTS, 1)]
      for mem in ("lib", "fake")],
    (Space.WEIGHTS, 16, "store"), (Space.WEIGHTS, 4, "store"), (Space.WEIGHTS, 2, "store")])
def test_crc_cycles(space, crc_bytes, memory):
    """The status REPLY_LATENCY cycles after the command's last byte; the first word taken
    READ_LATENCY cycles after the status went out, then a word every max(CRC_CYCLES_PER_WORD,
    chunks) cycles, each word's chunks fed in the cycles after it was taken; the u32
    CRC_TAIL cycles after the last chunk, at a byte a cycle; the next command taken at once
    (as after READ); busy high throughout."""
    rng = random.Random(32)
    n = 12                          # PROGRAM has 16 words
    stream = C.encode_write(space, 0, words_for(space, n, rng), lanes=CFG.lanes)
    head = len(stream)
    stream += C.encode_crc(space, 0, n) + C.encode_identify()
    want = Model(CFG).feed(stream)
    if memory != "fake":
        got, t_in, t_out = lib_simulate(stream, len(want), crc_bytes=crc_bytes,
                                        weight_store=memory == "store")
    else:
        got, _, log = simulate(CommandProcessor(CFG, crc_bytes=crc_bytes), stream, len(want))
        t_in, t_out = log["in"], log["out"]
    assert got == want and got[1] == C.Status.OK
    last_in = t_in[head + 9]                        # the CRC command's last byte
    status, crc4 = t_out[1], t_out[2:6]
    assert status == last_in + REPLY_LATENCY
    chunks = -(-C.word_bytes(space, CFG.lanes) // crc_bytes)
    per_word = max(CRC_CYCLES_PER_WORD[memory], chunks)
    first_word = status + READ_LATENCY[memory]
    assert crc4[0] == first_word + per_word * (n - 1) + chunks + CRC_TAIL
    assert crc4 == list(range(crc4[0], crc4[0] + 4))
    assert t_in[head + 10] == crc4[-1]
    if memory == "fake":
        assert all(log["busy"][last_in + 1:crc4[-1]])


def test_crc_whole_weights_cycles():
    """The whole WEIGHTS space behind serve_memory: a word a cycle (8-byte words, one
    chunk each), the cost the host pays after an upload."""
    size = CFG.size(Space.WEIGHTS)
    stream = C.encode_crc(Space.WEIGHTS, 0, size)
    want = Model(CFG).feed(stream)
    got, t_in, t_out = lib_simulate(stream, len(want))
    assert got == want
    assert t_out[1] - t_in[-1] == REPLY_LATENCY + 1 + (size - 1) + 1 + CRC_TAIL
