"""The whole core in Amaranth's simulator against the reference executor (which is checked
against the golden model): every layer's output vector, the top-k candidates and the
recurrent state across tokens, bit for bit; every class of refusal, with the executor's
error code and pc; and the same results from a slow, gappy weight store (a long latency per
request, holes in the word stream) with the cycle counters accounting for the waits."""

import numpy as np
import pytest
from core_bench import run_core

from mmfree_fpga import golden
from mmfree_fpga.compiler import compile_model
from mmfree_fpga.compiler.execute import Machine, MachineError, MachineHalted
from mmfree_fpga.core_config import CoreConfig
from mmfree_fpga.isa import ErrorCode, Instruction, MatvecMode, Opcode, encode
from mmfree_fpga.numerics import PF
from util import random_image

CFG = CoreConfig(lanes=8, weight_words=1024, param_words=1024, embed_words=2048,
                 scratch_words=512, program_words=128, max_d=32, max_n=32, max_inter=64,
                 max_layers=2, max_vocab=64, max_topk=8)


def _reference(compiled, runs):
    mach, out = Machine(compiled), []
    for item in runs:
        if item[0] == "reset":
            mach.reset()
            continue
        _, tok, k = item
        try:
            result = mach.run(tok, k or None)
            out.append((list(mach.trace), result, None))
        except MachineError as e:
            out.append((list(mach.trace), None, (int(e.code), e.pc)))
        except MachineHalted:         # the core repeats the stored error
            out.append(([], None, (int(mach.error.code), mach.error.pc)))
    return out


def _check(compiled, runs, slow=None):
    got = run_core(CFG, compiled, runs, slow=slow)
    want = _reference(compiled, runs)
    assert len(got["runs"]) == len(want)
    for i, (((traces, result, error), ok), (wtraces, wresult, werror)) in enumerate(
            zip(got["runs"], want, strict=True)):
        assert error == werror, (i, error, werror)
        assert ok == (werror is None)
        assert [t for t, _ in traces] == [t for t, _ in wtraces], i
        for (tag, v), (_, w) in zip(traces, wtraces, strict=True):
            assert np.array_equal(v, w), (i, tag, np.flatnonzero(v != w)[:8])
        if wresult is None:
            assert result is None, i
        else:
            assert np.array_equal(result[0], wresult[0]), (i, result, wresult)
            assert np.array_equal(result[1], wresult[1]), (i, result, wresult)
    assert got["weights_error"] == 0          # no request past the end ever reached it
    return got


def test_two_layer_model_tokens_traces_and_candidates():
    img = random_image(1, vocab_size=40, hidden_size=16, num_hidden_layers=2, intermediate_size=32)
    compiled = compile_model(img, CFG, trace=True)
    runs = [("run", 5, 0), ("run", 7, 0), ("run", 39, 8), ("reset",), ("run", 7, 1),
            ("run", 0, 3)]
    got = _check(compiled, runs)
    c = got["counters"]
    assert c["TOKENS"] == 5 and c["INSTRUCTIONS"] > 0
    assert c["CYCLES"] >= c["ENGINE_BUSY"] + c["WAIT_VECTOR"] + c["SEQUENCER"]


def test_other_shape_and_partial_row_groups():
    # d = 24, I = 40: every product ends in a partial group of 8 lanes
    img = random_image(2, vocab_size=61, hidden_size=24, num_hidden_layers=1, intermediate_size=40)
    compiled = compile_model(img, CFG, trace=True)
    _check(compiled, [("run", 60, 0), ("run", 3, 8), ("run", 17, 2)])


def _program(instrs):
    img = random_image(3, vocab_size=40, hidden_size=16, num_hidden_layers=1, intermediate_size=32)
    compiled = compile_model(img, CFG)
    words = [encode(i) if isinstance(i, Instruction) else i for i in instrs]
    return compiled.__class__(**{**compiled.__dict__, "program": tuple(words)})


def _q(rows=16, n=16, src=0):
    return Instruction(Opcode.QUANT, src=src, len=n, gain=0, frac=14, rows=rows)


def _mv(rows=16, k=16, mode=MatvecMode.STORE, dst=64, waddr=0, reg=0):
    return Instruction(Opcode.MATVEC, waddr=waddr, k=k, rows=rows, dst=dst, reg=reg,
                       w_scale=PF(40000, -22), mode=mode)


END = Instruction(Opcode.END)


@pytest.mark.parametrize("name, prog, k", [
    ("unknown opcode", [0x0B], 0),
    ("erased word", [Instruction(Opcode.TRACE, src=0, len=1), 0], 0),
    ("reserved bit", [encode(END) | 1 << 100], 0),
    ("reserved mode", [_q(), encode(_mv()) | 3 << 118], 0),
    ("scratch out of range", [Instruction(Opcode.TRACE, src=510, len=4), END], 0),
    ("weights out of range", [_q(), _mv(waddr=1020), END], 0),
    ("params out of range", [Instruction(Opcode.QUANT, src=0, len=16, gain=1020, frac=14,
                                         rows=16), END], 0),
    ("length 0", [Instruction(Opcode.GLU, dst=0, gate=16, up=32, len=0), END], 0),
    ("overlap", [Instruction(Opcode.ADD, dst=4, a=0, b=32, len=16), END], 0),
    ("queue overflow", [_q(), _q(), _q(), END], 0),
    ("queue underflow", [_mv(), END], 0),
    ("queue left", [_q(), END], 0),
    ("k mismatch", [_q(n=8), _mv(k=16), END], 0),
    ("rows mismatch", [_q(rows=8), _mv(rows=16), END], 0),
    ("token", [Instruction(Opcode.EMBED, dst=0, len=16, frac=14, base=0, rows=3), END], 0),
    ("topk over rows", [_q(rows=4), _mv(rows=4, mode=MatvecMode.TOPK), END], 8),
    ("topk missing", [END], 3),
    ("pc past the program", [Instruction(Opcode.TRACE, src=0, len=1)] * CFG.program_words, 0),
])
def test_refusals_match_the_executor(name, prog, k):
    compiled = _program(prog)
    # the refused run, then a run while halted, then a reset and a good program would run
    got = _check(compiled, [("run", 5, k), ("run", 5, k)])
    (_, _, error), ok = got["runs"][0]
    assert not ok and error[0] != ErrorCode.NONE, name


def _random_program(rng, compiled):
    """A valid program of random instructions whose vectors overlap in every way the ISA
    allows (equal or disjoint ranges for the elementwise ops, any ranges elsewhere), so the
    pipes' element-level ordering is exercised: read after write, write after read and
    write after write between every pair of pipes, with slow readers (TRACE) and fast
    ones."""
    sym = compiled.symbols
    slots = [0, 16, 32, 48, 64, 80, 96]                    # 16-element vectors
    prog = [Instruction(Opcode.EMBED, dst=0, len=16, frac=14, base=0, rows=40),
            Instruction(Opcode.EMBED, dst=32, len=16, frac=12, base=0, rows=40)]
    queue, regs_set = 0, set()

    def vec():
        return int(rng.choice(slots)) + int(rng.integers(0, 3)) * int(rng.integers(0, 2))

    for _ in range(int(rng.integers(10, 22))):
        kind = rng.choice(["rms", "quant", "mv", "mlgru", "glu", "add", "trace", "war",
                           "waw", "rwar"])
        if kind == "rwar" and queue == 0 and regs_set:
            # the MATVEC takes R[r] when its vector's scale is there (a long QUANT's), so a
            # short RMS that rewrites r right after it must wait until it has
            r = int(rng.choice(sorted(regs_set)))
            prog += [_q(src=int(rng.choice(slots[:4])), n=64, rows=16),
                     Instruction(Opcode.MATVEC, waddr=int(rng.integers(0, 800)), k=64, rows=16,
                                 dst=int(rng.choice(slots)), reg=r, w_scale=PF(50000, -30),
                                 mode=MatvecMode.STORE),
                     Instruction(Opcode.RMS, src=vec(), len=1, gain=0, no_gain=1, frac=0,
                                 reg=r, sqrt_k=golden.sqrt_pf(1))]
            continue
        if kind in ("war", "waw") and queue < 2 and regs_set:
            # a later, faster pipe would overtake an earlier one on the same vector: a
            # MATVEC writing what a slow TRACE still reads, or an ADD writing what a
            # MATVEC has yet to write
            a, b, c = (int(v) for v in rng.choice(slots, 3, replace=False))
            if kind == "war":
                prog.append(Instruction(Opcode.TRACE, src=a, len=16, tag=len(prog)))
            prog += [_q(src=b), Instruction(
                Opcode.MATVEC, waddr=int(rng.integers(0, 600)), k=16, rows=16, dst=a,
                reg=int(rng.choice(sorted(regs_set))), w_scale=PF(50000, -28),
                mode=MatvecMode.STORE)]
            if kind == "waw":
                prog.append(Instruction(Opcode.ADD, dst=a, a=b, b=c, len=16))
            continue
        if kind == "rms":
            r = int(rng.integers(0, 4))
            prog.append(Instruction(Opcode.RMS, src=vec(), len=16, gain=0,
                                    no_gain=int(rng.integers(0, 2)), frac=14, reg=r,
                                    sqrt_k=golden.sqrt_pf(16)))
            regs_set.add(r)
        elif kind == "quant" and queue < 2:
            prog.append(_q(src=vec()))
            queue += 1
        elif kind == "mv" and queue and regs_set:
            mode = MatvecMode.ADD if rng.integers(0, 2) else MatvecMode.STORE
            prog.append(Instruction(Opcode.MATVEC, waddr=int(rng.integers(0, 600)), k=16,
                                    rows=16, dst=vec(), reg=int(rng.choice(sorted(regs_set))),
                                    w_scale=PF(int(rng.integers(1 << 15, 1 << 16)), -28),
                                    mode=mode))
            queue -= 1
        elif kind == "mlgru":
            zs = rng.choice(slots, 3)
            dst = int(rng.choice([s for s in slots if s not in zs] or [112]))
            prog.append(Instruction(Opcode.MLGRU, zi=int(zs[0]), zf=int(zs[1]), zg=int(zs[2]),
                                    dst=dst, n=16, layer=int(rng.integers(0, 2)),
                                    lb=sym["layers.0.lower_bound"].addr, gn_frac=14))
        elif kind in ("glu", "add"):
            a, b = (int(v) for v in rng.choice(slots, 2))
            dst = int(rng.choice([a, b, *[s for s in slots if s not in (a, b)]]))
            if kind == "glu":
                prog.append(Instruction(Opcode.GLU, dst=dst, gate=a, up=b, len=16))
            else:
                prog.append(Instruction(Opcode.ADD, dst=dst, a=a, b=b, len=16))
        elif kind == "trace":
            prog.append(Instruction(Opcode.TRACE, src=vec(), len=int(rng.integers(1, 20)),
                                    tag=len(prog)))
    while queue:
        prog.append(_mv(dst=vec()))
        queue -= 1
    prog += [Instruction(Opcode.TRACE, src=0, len=120, tag=999), END]
    if not regs_set:
        prog.insert(2, Instruction(Opcode.RMS, src=0, len=16, gain=0, no_gain=1, frac=0,
                                   reg=0, sqrt_k=golden.sqrt_pf(16)))
    return prog


@pytest.mark.parametrize("seed", range(8))
def test_random_programs_keep_sequential_semantics(seed):
    rng = np.random.default_rng(seed)
    img = random_image(3, vocab_size=40, hidden_size=16, num_hidden_layers=1, intermediate_size=32)
    base = compile_model(img, CFG)
    compiled = _program(_random_program(rng, base))
    got = _check(compiled, [("run", 3, 0), ("run", 11, 0)])
    assert all(ok for _, ok in got["runs"])             # valid programs: no refusal


@pytest.mark.parametrize("seed", range(4))
def test_random_programs_with_a_slow_gappy_weight_store(seed):
    """The same random programs with a slow, gappy weight store (weight_stubs.SlowWeights:
    every request 30 cycles late, holes in ~3/8 of the word stream's cycles): the engine's
    timing moves against every other pipe's, the results do not."""
    rng = np.random.default_rng(seed)
    img = random_image(3, vocab_size=40, hidden_size=16, num_hidden_layers=1, intermediate_size=32)
    compiled = _program(_random_program(rng, compile_model(img, CFG)))
    got = _check(compiled, [("run", 3, 0), ("run", 11, 0)],
                 slow={"latency": 30, "gap_per_256": 96, "seed": 0x5EED + seed})
    assert all(ok for _, ok in got["runs"]) and got["gaps"] > 0


def _rms(src, n, reg):
    return Instruction(Opcode.RMS, src=src, len=n, gain=0, no_gain=1, frac=0, reg=reg,
                       sqrt_k=golden.sqrt_pf(n))


def test_matvec_takes_its_register_after_the_rms_that_writes_it():
    """A long RMS of r1, then a short QUANT and the MATVEC that uses r1: the MATVEC's
    engine work starts at once, but its dequantizer must wait for the RMS (without that
    wait this program gives other values)."""
    embed = Instruction(Opcode.EMBED, dst=0, len=16, frac=14, base=0, rows=40)
    prog = [embed, _rms(0, 64, 1), _q(src=0, n=16, rows=16),
            Instruction(Opcode.MATVEC, waddr=0, k=16, rows=16, dst=96, reg=1,
                        w_scale=PF(50000, -30), mode=MatvecMode.STORE),
            Instruction(Opcode.TRACE, src=96, len=16, tag=1), END]
    _check(_program(prog), [("run", 3, 0)])


def test_register_reuse_right_after_a_matvec():
    """An RMS that rewrites a register right after the MATVEC that reads it: the MATVEC
    sees the old value (the RMS waits while a running MATVEC has yet to take it)."""
    e1 = Instruction(Opcode.EMBED, dst=0, len=16, frac=14, base=0, rows=40)
    e2 = Instruction(Opcode.EMBED, dst=32, len=16, frac=10, base=0, rows=40)
    prog = [e1, e2, _rms(0, 1, 0), _q(src=0, n=64, rows=16),
            Instruction(Opcode.MATVEC, waddr=0, k=64, rows=16, dst=128, reg=0,
                        w_scale=PF(50000, -30), mode=MatvecMode.STORE),
            _rms(32, 1, 0), Instruction(Opcode.TRACE, src=128, len=16, tag=1), END]
    _check(_program(prog), [("run", 3, 0)])


# -- a slow, gappy weight store (weight_stubs.SlowWeights between WeightMemory and the core) --

def _same_records(a, b):
    assert len(a["runs"]) == len(b["runs"])
    for ((ta, ra, ea), oka), ((tb, rb, eb), okb) in zip(a["runs"], b["runs"], strict=True):
        assert (ea, oka) == (eb, okb)
        assert [t for t, _ in ta] == [t for t, _ in tb]
        assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(ta, tb, strict=True))
        assert (ra is None) == (rb is None)
        if ra is not None:
            assert np.array_equal(ra[0], rb[0]) and np.array_equal(ra[1], rb[1])


def _accounts(c):
    """Every running cycle is in exactly one of the four categories."""
    assert c["CYCLES"] == (c["ENGINE_BUSY"] + c["ENGINE_WAIT_WEIGHTS"] + c["WAIT_VECTOR"]
                           + c["SEQUENCER"])


TWO_LAYER_RUNS = [("run", 5, 0), ("run", 7, 0), ("run", 39, 8)]


@pytest.fixture(scope="module")
def two_layer():
    img = random_image(1, vocab_size=40, hidden_size=16, num_hidden_layers=2, intermediate_size=32)
    compiled = compile_model(img, CFG, trace=True)
    return compiled, _check(compiled, TWO_LAYER_RUNS)


@pytest.mark.parametrize("latency, gap_per_256, seed", [(40, 64, 0xACE1), (0, 128, 0x1234)])
def test_slow_gappy_weights_same_tokens(two_layer, latency, gap_per_256, seed):
    """The two-layer model with every request delayed and holes in a quarter or half of
    the word stream's cycles: the same records bit for bit (and the executor's), the same
    tokens and engine work; only the waits move. This model is vector-bound (its vectors
    are 16 long, its products 32 words), so part of the engine's new waits falls where it
    waited for vector work before: the run grows by at most the extra weight waits, and
    WAIT_VECTOR shrinks by the rest."""
    compiled, base = two_layer
    slow = {"latency": latency, "gap_per_256": gap_per_256, "seed": seed}
    got = _check(compiled, TWO_LAYER_RUNS, slow=slow)
    _same_records(got, base)
    c, b = got["counters"], base["counters"]
    _accounts(c)
    _accounts(b)
    layout = compiled.layout

    def words(w):
        return -(-w.codes.shape[0] // CFG.lanes) * w.codes.shape[1]

    per_token = sum(words(w) for _, w in layout.bitlinears())
    prompt = sum(1 for _, _, k in TWO_LAYER_RUNS if k == 0)
    assert c["TOKENS"] == b["TOKENS"] == len(TWO_LAYER_RUNS)
    assert c["ENGINE_BUSY"] == b["ENGINE_BUSY"] == (
        len(TWO_LAYER_RUNS) * per_token - prompt * words(layout.lm_head))
    assert c["INSTRUCTIONS"] == b["INSTRUCTIONS"] and c["SEQUENCER"] == b["SEQUENCER"]
    # a hole counts in gaps when the store had a word and the engine wanted it: each is a
    # weight wait of the core
    assert got["gaps"] > 0 and c["ENGINE_WAIT_WEIGHTS"] >= got["gaps"]
    extra_waits = c["ENGINE_WAIT_WEIGHTS"] - b["ENGINE_WAIT_WEIGHTS"]
    extra = c["CYCLES"] - b["CYCLES"]
    assert 0 < extra <= extra_waits
    assert b["WAIT_VECTOR"] - c["WAIT_VECTOR"] == extra_waits - extra
    assert sum(got["cycles"]) == c["CYCLES"] and sum(base["cycles"]) == b["CYCLES"]


K_EB, ROWS_EB = 32, 128          # 16 row groups x 32 columns = 512 words per product


def _engine_bound():
    """Two products of one vector each, 512 words apiece, back to back: after the first
    vector's quantization the engine is the bottleneck (K = 32 >= 8 lanes, so the
    serializer and dequantizer keep up; STORE, nothing else runs)."""
    q = [Instruction(Opcode.QUANT, src=0, len=K_EB, gain=0, frac=14 - i, rows=ROWS_EB)
         for i in range(2)]
    mv = [Instruction(Opcode.MATVEC, waddr=512 * i, k=K_EB, rows=ROWS_EB, dst=128 * (i + 1),
                      reg=0, w_scale=PF(40000, -22), mode=MatvecMode.STORE) for i in range(2)]
    return _program([Instruction(Opcode.EMBED, dst=0, len=K_EB, frac=14, base=0, rows=40),
                     _rms(0, K_EB, 0), *q, *mv,
                     Instruction(Opcode.TRACE, src=128, len=2 * ROWS_EB, tag=1), END])


ENGINE_BOUND_RUNS = [("run", 5, 0), ("run", 7, 0)]


@pytest.fixture(scope="module")
def engine_bound():
    compiled = _engine_bound()
    return compiled, _check(compiled, ENGINE_BOUND_RUNS)


@pytest.mark.parametrize("latency, gap_per_256, seed",
                         [(0, 64, 1), (20, 100, 3), (200, 64, 0xBEEF)])
def test_slow_gappy_weights_cost_exactly_their_waits(engine_bound, latency, gap_per_256, seed):
    """With the engine the bottleneck every cycle it waits for a word delays the token by
    one: the run grows by exactly its extra ENGINE_WAIT_WEIGHTS, nothing else moves. And
    those are exactly the holes the engine met (``gaps``: the store had a word, the engine
    was ready) plus, once per token, the stub's request latency + 1 (its request
    register) on the first product: the engine already waits for that request in the
    baseline (the MATVEC issues behind the second QUANT, which waits for the first one's
    codes to reach the engine), so all of its delay shows. The second product's request
    is taken while the first one's 512 words stream, and its latency (< 512) is hidden:
    the prefetch the request interface is for."""
    compiled, base = engine_bound
    slow = {"latency": latency, "gap_per_256": gap_per_256, "seed": seed}
    got = _check(compiled, ENGINE_BOUND_RUNS, slow=slow)
    _same_records(got, base)
    c, b = got["counters"], base["counters"]
    _accounts(c)
    assert b["ENGINE_WAIT_WEIGHTS"] > 0       # the first request's latency shows already
    for name in ("ENGINE_BUSY", "WAIT_VECTOR", "SEQUENCER", "INSTRUCTIONS", "TOKENS"):
        assert c[name] == b[name], name
    assert c["TOKENS"] == len(ENGINE_BOUND_RUNS)
    assert c["ENGINE_BUSY"] == len(ENGINE_BOUND_RUNS) * 2 * 512
    extra_waits = c["ENGINE_WAIT_WEIGHTS"] - b["ENGINE_WAIT_WEIGHTS"]
    assert c["CYCLES"] - b["CYCLES"] == extra_waits
    assert extra_waits == got["gaps"] + len(ENGINE_BOUND_RUNS) * (latency + 1)
