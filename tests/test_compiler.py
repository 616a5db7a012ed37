"""The compiler and the reference executor: the shipped model and a random model of another
shape run bit-exactly against the golden model (tokens, top-k candidates and every layer's
output); hand-written programs check each instruction's semantics and every refusal."""

import dataclasses

import numpy as np
import pytest
from tokenizers import Tokenizer

from mmfree_fpga import golden, isa
from mmfree_fpga import numerics as N
from mmfree_fpga.cli import DEFAULT_MODEL
from mmfree_fpga.compiler import SIM, CoreConfig, DoesNotFit, compile_model
from mmfree_fpga.compiler.execute import (
    AddressError,
    IllegalInstruction,
    KMismatch,
    LengthError,
    Machine,
    MachineBackend,
    MachineHalted,
    OverlapError,
    QueueLeft,
    QueueOverflow,
    QueueUnderflow,
    TokenError,
    TopkError,
    rms_rsqrt_k,
)
from mmfree_fpga.generate import Sampler, generate
from mmfree_fpga.golden import GoldenBackend, GoldenModel
from mmfree_fpga.isa import ErrorCode, Instruction, MatvecMode, Opcode, Space, encode
from mmfree_fpga.numerics import PF
from util import random_image

SHIPPED = DEFAULT_MODEL.parent / "default.mmf"
PROMPT = "It is a truth universally acknowledged"


@pytest.fixture(scope="module")
def shipped():
    model = GoldenModel(SHIPPED)
    return model, compile_model(model, SIM, trace=True)


@pytest.fixture(scope="module")
def other_shape():
    # d, I, layers and V all unlike the shipped model's; rows not multiples of the lanes
    return random_image(hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                         vocab_size=150)


def _lockstep(model: GoldenModel, machine: Machine, prompt, new_tokens, k=8):
    """Prompt then greedy tokens on both; every layer's x and the top-k compared."""
    model.reset()
    machine.reset()
    tokens, out = list(prompt), []
    for i in range(len(prompt) + new_tokens - 1):
        tok = tokens[i]
        ref_trace = []
        logits = model.step(tok, ref_trace)
        last = i >= len(prompt) - 1
        got = machine.run(tok, k if last else None)
        assert [t for t, _ in machine.trace] == list(range(model.config.num_hidden_layers))
        for layer, ((_, x), ref) in enumerate(zip(machine.trace, ref_trace, strict=True)):
            assert np.array_equal(x, ref), f"token {i}, layer {layer}"
        if not last:
            assert got is None                  # prompt tokens skip the lm_head
            continue
        ids, vals = got
        ref_ids, ref_vals = golden.topk(logits, k)
        assert np.array_equal(ids, ref_ids) and np.array_equal(vals, ref_vals), f"token {i}"
        assert ids[0] == golden.argmax(logits)
        tokens.append(int(ids[0]))
        out.append(int(ids[0]))
    return out


# -- the shipped model ------------------------------------------------------------------------

def test_shipped_model_program_and_footprint(shipped):
    model, c = shipped
    cfg = model.config
    ops = [i.op for i in c.instructions()]
    assert len(ops) == 6 + cfg.num_hidden_layers * 19 == 120
    assert ops.count(Opcode.MATVEC) == 6 * cfg.num_hidden_layers + 1
    assert ops.count(Opcode.TRACE) == cfg.num_hidden_layers
    foot = c.footprint()
    assert foot[Space.WEIGHTS] == model.layout.ternary_weights // 128 == 48_128
    assert foot[Space.EMBED] == 4096 * 256
    assert foot[Space.SCRATCH] == 256 + 4 * 256 + 3 * 768
    assert foot[Space.PROGRAM] == 120
    assert c.weights.shape == (48_128, 32) and c.params.dtype == np.int32
    # every symbol lies inside its space and none overlaps another of the same space
    spans = sorted((s.space, s.addr, s.addr + s.length) for s in c.symbols.values())
    for (sp, _, end), (sp2, start2, _) in zip(spans, spans[1:], strict=False):
        assert sp != sp2 or end <= start2
    # the queue never holds more than the engine's two banks, and is empty at the end
    depth = 0
    for ins in c.instructions():
        depth += {Opcode.QUANT: 1, Opcode.MATVEC: -1}.get(ins.op, 0)
        assert 0 <= depth <= isa.QUEUE_DEPTH
    assert depth == 0
    assert c.disassemble().count("\n") == 119 and len(c.program_bytes()) == 120 * 16


def test_shipped_weights_are_engine_words(shipped):
    model, c = shipped
    layer = model.layout.layers[3]
    for name, w in (("layers.3.attn.f_proj", layer.f_proj), ("lm_head", model.layout.lm_head)):
        sym = c.symbols[name]
        assert sym.space == Space.WEIGHTS
        words = N.engine_word_ints(w.codes, 128)
        assert sym.length == len(words)
        assert [c.weight_word(sym.addr + j) for j in (0, 1, len(words) - 1)] == \
            [words[0], words[1], words[-1]]
    sym = c.symbols["layers.2.mlp.down_proj.gain"]
    assert np.array_equal(c.params[sym.addr:sym.addr + sym.length],
                          model.layout.layers[2].down_proj.gain)
    lb = c.symbols["layers.2.lower_bound"]
    assert c.symbols["layers.2.g_norm"].addr == lb.addr + lb.length   # the MLGRU's rule


def test_shipped_model_bit_exact_64_tokens(shipped):
    model, c = shipped
    layout = model.layout
    tok = Tokenizer.from_str(layout.tokenizer_json.decode())
    prompt = tok.encode(PROMPT).ids
    assert len(prompt) > 3
    out = _lockstep(model, Machine(c), prompt, 64)
    assert len(out) == 64 and len(set(out)) > 5


def test_machine_backend_in_the_generation_loop(shipped):
    model, c = shipped
    prompt = Tokenizer.from_str(model.layout.tokenizer_json.decode()).encode(PROMPT).ids
    ref = list(generate(GoldenBackend(SHIPPED), prompt, 16, Sampler()))
    backend = MachineBackend(c)
    assert backend.topk == 64
    assert list(generate(backend, prompt, 16, Sampler())) == ref
    logits = backend.step(ref[-1])
    assert np.isfinite(logits).sum() == 64


# -- a model of another shape, the same core --------------------------------------------------

def test_other_shape_same_core_bit_exact(other_shape):
    model = GoldenModel(other_shape)
    cfg = model.config
    assert (cfg.hidden_size, cfg.mlp_intermediate_size, cfg.num_hidden_layers,
            cfg.vocab_size) == (48, 80, 2, 150)
    c = compile_model(other_shape, SIM, trace=True)
    rng = np.random.default_rng(5)
    out = _lockstep(model, Machine(c), rng.integers(0, 150, 7).tolist(), 40, k=SIM.max_topk)
    assert len(out) == 40


def test_other_lanes_bit_exact(other_shape):
    core = dataclasses.replace(SIM, lanes=32)        # other words, other row groups
    c = compile_model(other_shape, core, trace=True)
    assert c.weights.shape[1] == 8
    _lockstep(GoldenModel(other_shape), Machine(c), [3, 1, 4, 1, 5], 10, k=5)


def test_reset_starts_a_sequence(other_shape):
    m = Machine(compile_model(other_shape, SIM))
    runs = []
    for _ in range(2):
        m.reset()
        runs.append([m.run(t, 3) for t in (7, 8, 9)])
    for a, b in zip(*runs, strict=True):
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(runs[0][0][1], runs[0][1][1])


# -- refusals of the compiler -----------------------------------------------------------------

def test_does_not_fit_names_the_memory(shipped):
    _, c = shipped
    with pytest.raises(DoesNotFit) as e:
        compile_model(c.layout, dataclasses.replace(SIM, weight_words=40_960))
    assert str(e.value) == ("the model does not fit the core:\n  WEIGHTS: the model needs "
                            "48,128 words of 256 bits, the core has 40,960 (short by 7,168)")
    assert isinstance(e.value, ValueError)


def test_does_not_fit_lists_every_shortfall(shipped):
    _, c = shipped
    tight = dataclasses.replace(SIM, param_words=10_000, embed_words=1 << 19,
                                scratch_words=3_000, program_words=100, max_d=128, max_n=200,
                                max_inter=512, max_layers=4, max_vocab=4000, max_topk=64)
    with pytest.raises(DoesNotFit) as e:
        compile_model(c.layout, tight, trace=True)
    assert e.value.shortfalls == [
        "hidden size d: the model has 256, the core's max_d is 128 (over by 128)",
        "MLGRU width n: the model has 256, the core's max_n is 200 (over by 56)",
        "intermediate size I: the model has 768, the core's max_inter is 512 (over by 256)",
        "layers: the model has 6, the core's max_layers is 4 (over by 2)",
        "vocabulary: the model has 4,096, the core's max_vocab is 4,000 (over by 96)",
        "PARAMS: the model needs 18,944 words of 32 bits, the core has 10,000 "
        "(short by 8,944)",
        "EMBED: the model needs 1,048,576 words of 16 bits, the core has 524,288 "
        "(short by 524,288)",
        "SCRATCH: the model needs 3,584 words of 32 bits, the core has 3,000 (short by 584)",
        "PROGRAM: the model needs 120 words of 128 bits, the core has 100 (short by 20)",
    ]
    # the trace costs program words only
    compile_model(c.layout, dataclasses.replace(SIM, program_words=114))
    with pytest.raises(DoesNotFit, match="PROGRAM: the model needs 120 words"):
        compile_model(c.layout, dataclasses.replace(SIM, program_words=114), trace=True)


# -- hand-written programs on a small core -----------------------------------------------------

SMALL = CoreConfig(lanes=8, weight_words=64, param_words=64, embed_words=64, scratch_words=64,
                   program_words=32, max_d=16, max_n=16, max_inter=16, max_layers=2,
                   max_vocab=16, max_topk=4)
R1 = golden.sqrt_pf(12)


def _machine(prog, core=SMALL):
    m = Machine(core)
    m.write(Space.PROGRAM, 0, [encode(i) if isinstance(i, Instruction) else i for i in prog])
    return m


def _q(src=0, n=12, gain=0, frac=14, rows=12):
    return Instruction(Opcode.QUANT, src=src, len=n, gain=gain, frac=frac, rows=rows)


def _mv(mode=MatvecMode.STORE, k=12, rows=12, dst=20, waddr=0, reg=1):
    return Instruction(Opcode.MATVEC, waddr=waddr, k=k, rows=rows, dst=dst, reg=reg,
                       w_scale=PF(40000, -22), mode=mode)


END = Instruction(Opcode.END)


def test_every_instruction_against_the_golden_units():
    rng = np.random.default_rng(3)
    emb = rng.integers(-2**15, 2**15, (4, 12))                   # 4 tokens of d = 12
    gain = rng.integers(8000, 30000, 12)
    lb = np.sort(rng.integers(0, N.GATE_ONE, 12))
    gn = rng.integers(5000, 20000, 12)
    t = rng.integers(-1, 2, (12, 12)).astype(np.int8)            # 2 row groups of 8 lanes
    prog = [
        Instruction(Opcode.EMBED, dst=0, len=12, frac=13, base=4, rows=4),
        Instruction(Opcode.RMS, src=0, len=12, gain=0, frac=14, reg=1, sqrt_k=R1),
        _q(), _q(), _mv(dst=20), _mv(MatvecMode.ADD, dst=0),      # zi at 20; x += y
        Instruction(Opcode.MLGRU, zi=20, zf=0, zg=20, dst=40, n=12, layer=1, lb=12,
                    gn_frac=14),
        Instruction(Opcode.GLU, dst=52, gate=40, up=0, len=12),
        Instruction(Opcode.ADD, dst=52, a=52, b=20, len=12),
        Instruction(Opcode.TRACE, src=52, len=12, tag=9),
        Instruction(Opcode.SKIP_UNLESS_LAST),
        Instruction(Opcode.RMS, src=52, len=12, no_gain=1, reg=2, sqrt_k=R1),
        _q(src=52), _mv(MatvecMode.TOPK, reg=2),
        END,
    ]
    m = _machine(prog)
    m.write(Space.EMBED, 4, emb.reshape(-1))
    m.write(Space.PARAMS, 0, np.concatenate([gain, lb, gn]))
    m.write(Space.WEIGHTS, 0, N.engine_words(t, 8))
    h = np.zeros(12, dtype=np.int64)
    for step, (tok, k) in enumerate([(2, None), (3, 4), (1, 2)]):
        x = golden.embed(emb, 13, tok)
        r = golden.rms_rsqrt(x, gain, 14)
        q, mx = golden.absmax_quantize(x, gain, 14)
        zi = golden.dequantize(golden.ternary_matvec(t, q), mx, r, PF(40000, -22))
        x = golden.residual_add(x, zi)                          # the same q twice
        o, h = golden.mlgru(zi, x, zi, h, lb, gn, 14)
        v = golden.residual_add(golden.glu(o, x), zi)
        got = m.run(tok, k)
        assert [tag for tag, _ in m.trace] == [9] and np.array_equal(m.trace[0][1], v)
        assert np.array_equal(m.read(Space.SCRATCH, 0, 12), x)
        assert np.array_equal(m.read(Space.STATE, SMALL.max_n, 12), h), step
        if k is None:
            assert got is None
            continue
        q, mx = golden.absmax_quantize(v, gain, 14)
        logits = golden.dequantize(golden.ternary_matvec(t, q), mx, golden.rms_rsqrt(v, None),
                                   PF(40000, -22))
        ids, vals = golden.topk(logits, k)
        assert np.array_equal(got[0], ids) and np.array_equal(got[1], vals)


def test_rms_immediate_is_golden_sqrt():
    rng = np.random.default_rng(8)
    for n in (1, 5, 256, 768):
        for scale in (0, 1, 1 << 20, 1 << 31):
            u = rng.integers(-scale, scale, n) if scale else np.zeros(n, np.int64)
            g = rng.integers(-2**15, 2**15, n)
            for gp in (None, g):
                assert rms_rsqrt_k(u, gp, 14, golden.sqrt_pf(n)) == golden.rms_rsqrt(u, gp, 14)
                ref = golden.rms_rsqrt(u, gp, 14)
                # a doubled immediate doubles R (the mantissa path is the unit's own)
                two = golden.sqrt_pf(n)._replace(exp=golden.sqrt_pf(n).exp + 1)
                assert rms_rsqrt_k(u, gp, 14, two) == ref._replace(exp=ref.exp + (ref.mant > 0))


def _fails(prog, cls, match, token=0, k=None, setup=None):
    m = _machine(prog)
    if setup:
        setup(m)
    with pytest.raises(cls, match=match) as e:
        m.run(token, k)
    assert e.value.code == cls.code and e.value.pc is not None
    with pytest.raises(MachineHalted):             # it never runs on
        m.run(token, k)
    m.reset()
    return e.value


@pytest.mark.parametrize("word", [0, 0xFF, 0x0B, encode(END) | 1 << 127])
def test_illegal_words_stop_the_machine(word):
    e = _fails([Instruction(Opcode.TRACE, src=0, len=1), word], IllegalInstruction,
               "pc 1: ", k=None)
    assert e.pc == 1 and e.word == word and e.code == ErrorCode.ILLEGAL


def test_out_of_range_addresses_are_refused():
    e = _fails([_q(), _mv(waddr=60)], AddressError,
               r"MATVEC waddr \[60, 84\): WEIGHTS address 64 is out of range "
               r"\(the core's WEIGHTS has 64 words\)")
    assert (e.space, e.addr, e.size, e.pc) == (Space.WEIGHTS, 64, 64, 1)
    _fails([_q(gain=60)], AddressError, "PARAMS address 64 is out of range")
    _fails([_q(src=63, n=2)], AddressError, "SCRATCH address 64")
    _fails([Instruction(Opcode.EMBED, dst=0, len=16, base=40, rows=4)], AddressError,
           "EMBED address 64", token=1)
    _fails([Instruction(Opcode.MLGRU, n=4, zi=0, zf=4, zg=8, dst=12, layer=2)],
           AddressError, r"layer 2 \(max_layers 2\): STATE address 32")
    _fails([Instruction(Opcode.TRACE, src=0, len=1)] * SMALL.program_words, AddressError,
           "instruction fetch: PROGRAM address 32 is out of range")
    m = Machine(SMALL)
    with pytest.raises(AddressError, match="host write of 2 words at 63: SCRATCH address 64"):
        m.write(Space.SCRATCH, 63, [1, 2])
    with pytest.raises(AddressError, match="PROGRAM"):
        m.read(Space.PROGRAM, 0, 33)


def test_queue_misuse_is_refused():
    _fails([_q(), _q(), _q()], QueueOverflow, "pc 2: QUANT: the activation queue is full")
    _fails([_mv()], QueueUnderflow, "pc 0: MATVEC: the activation queue is empty")
    _fails([_q(n=8), _mv(k=12)], KMismatch, "k = 12 but the oldest activation vector has 8")
    _fails([_q(rows=13), _mv(rows=12)], KMismatch, "rows = 12 but the oldest activation "
           "vector was quantized for 13 rows")
    _fails([_q(), END], QueueLeft, "pc 1: the token ended with 1 activation vector")
    # a skipped lm_head must not leave its input queued either
    _fails([_q(), Instruction(Opcode.SKIP_UNLESS_LAST), _mv(MatvecMode.TOPK), END],
           QueueLeft, "pc 1:")


def test_other_refusals():
    _fails([Instruction(Opcode.EMBED, dst=0, len=4, rows=3)], TokenError,
           "token 3 outside the table's 3 rows", token=3)
    _fails([_q(n=0)], LengthError, "len = 0")
    _fails([_q(n=17)], LengthError, r"len = 17 is over the core's max_k \(16\)")
    _fails([_q(), _mv(rows=33)], LengthError, "rows = 33 is over the core's max_rows")
    _fails([Instruction(Opcode.GLU, dst=2, gate=0, up=8, len=4)], OverlapError,
           r"dst \[2, 6\) overlaps gate \[0, 4\)")
    _fails([_q(rows=3), _mv(MatvecMode.TOPK, rows=3), END], TopkError, "4 candidates asked of 3",
           k=4)
    _fails([_q(), _q(), _mv(MatvecMode.TOPK), _mv(MatvecMode.TOPK), END], TopkError,
           "a second TOPK", k=1)
    _fails([END], TopkError, "without a TOPK", k=1)
    m = _machine([END])
    for bad in (dict(token=-1), dict(token=1 << 20), dict(token=0, topk=5),
                dict(token=0, topk=0)):
        with pytest.raises(ValueError):
            m.run(**bad)
    # in-place is allowed: element j overwrites element j only
    m = _machine([Instruction(Opcode.ADD, dst=0, a=0, b=0, len=4), END])
    m.write(Space.SCRATCH, 0, [1, -2, N.X_MAX, 4])
    m.run(0)
    assert m.read(Space.SCRATCH, 0, 4).tolist() == [2, -4, N.X_MAX, 8]


# -- WEIGHTS split between block RAM and SDRAM (onchip_words) ---------------------------------

SHIPPED_WORDS = 48_128


def _runs(c):
    """(symbol, waddr, words) of each MATVEC, in program order."""
    by_addr = {s.addr: name for name, s in c.symbols.items() if s.space == Space.WEIGHTS}
    out = []
    for ins in c.instructions():
        if ins.op == Opcode.MATVEC:
            out.append((by_addr[ins.waddr], ins.waddr, -(-ins.rows // c.core.lanes) * ins.k))
    return out


@pytest.mark.parametrize("budget", [0, 500, 1000, 4096, 8192, 16_384, SHIPPED_WORDS, 1 << 20])
def test_onchip_budget_placement(shipped, budget):
    model, ref = shipped
    c = compile_model(model, SIM, trace=True, onchip_words=budget)
    assert c.onchip_words == budget and ref.onchip_words is None
    place = c.weight_placement()
    runs = _runs(c)
    # the symbols are in execution order, every MATVEC reads its own symbol's words
    assert [name for name, _, _ in runs] == list(place)
    for name, addr, words in runs:
        assert c.symbols[name].addr == addr and c.symbols[name].length == words
    # each part back to back in execution order: on chip from 0, in SDRAM from the budget
    tops = {"onchip": 0, "sdram": budget}
    for name, addr, words in runs:
        assert addr == tops[place[name]], name
        tops[place[name]] += words
    on_top = tops["onchip"]
    assert on_top <= budget
    # the greedy keeps the most the budget allows (every shipped size is k x 512 words)
    per_token = c.weight_words_per_token()
    assert per_token["onchip"] == on_top == min(budget, SHIPPED_WORDS) // 512 * 512
    assert per_token["onchip"] + per_token["sdram"] == SHIPPED_WORDS
    lm = c.symbols["lm_head"].length
    prompt = c.weight_words_per_token(generated=False)
    assert prompt[place["lm_head"]] == per_token[place["lm_head"]] - lm
    # the same words, the padding zeros, the rest of the image untouched
    for name in place:
        s, r = c.symbols[name], ref.symbols[name]
        assert np.array_equal(c.weights[s.addr:s.addr + s.length],
                              ref.weights[r.addr:r.addr + r.length])
    assert not c.weights[on_top:budget].any()
    assert len(c.weights) == (budget + per_token["sdram"] if per_token["sdram"] else on_top)
    assert np.array_equal(c.params, ref.params) and np.array_equal(c.embed, ref.embed)
    if budget == 0 or budget >= SHIPPED_WORDS:
        # all in SDRAM or all on chip: the default layout and program, byte for byte
        assert set(place.values()) == {"sdram" if budget == 0 else "onchip"}
        assert c.program == ref.program and c.symbols == ref.symbols
        assert np.array_equal(c.weights, ref.weights)


def test_no_budget_has_no_placement(shipped):
    model, ref = shipped
    with pytest.raises(ValueError, match="without onchip_words"):
        ref.weight_placement()
    with pytest.raises(ValueError, match="without onchip_words"):
        ref.weight_words_per_token()
    with pytest.raises(ValueError, match="onchip_words must be >= 0"):
        compile_model(model, SIM, onchip_words=-1)


def test_onchip_budget_padding_must_fit(shipped):
    model, _ = shipped
    exact = dataclasses.replace(SIM, weight_words=SHIPPED_WORDS)
    compile_model(model, exact, onchip_words=0)
    compile_model(model, exact, onchip_words=4096)
    with pytest.raises(DoesNotFit, match=r"WEIGHTS: the model needs 48,616 words"):
        compile_model(model, exact, onchip_words=1000)     # 512 on chip, 488 padding


@pytest.mark.parametrize("budget", [4096, 16_384])
def test_onchip_budget_bit_exact(shipped, budget):
    model, _ = shipped
    c = compile_model(model, SIM, trace=True, onchip_words=budget)
    prompt = Tokenizer.from_str(model.layout.tokenizer_json.decode()).encode(PROMPT).ids
    out = _lockstep(model, Machine(c), prompt[:3], 3)
    assert len(out) == 3
