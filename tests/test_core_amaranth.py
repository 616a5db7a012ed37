"""The whole core in Amaranth's simulator against the reference executor (which is checked
against the golden model): every layer's output vector, the top-k candidates and the
recurrent state across tokens, bit for bit; and every class of refusal, with the executor's
error code and pc."""

import numpy as np
import pytest
import torch
from core_bench import run_core

from mmfree_fpga.compiler import compile_model
from mmfree_fpga.compiler.execute import Machine, MachineError, MachineHalted
from mmfree_fpga.core_config import CoreConfig
from mmfree_fpga.export import export_model
from mmfree_fpga.isa import ErrorCode, Instruction, MatvecMode, Opcode, encode
from mmfree_fpga.model import HGRNBitForCausalLM
from mmfree_fpga.numerics import PF
from util import tiny_config

CFG = CoreConfig(lanes=8, weight_words=1024, param_words=1024, embed_words=2048,
                 scratch_words=512, program_words=128, max_d=32, max_n=32, max_inter=64,
                 max_layers=2, max_vocab=64, max_topk=8)


def _image(seed, **kw):
    torch.manual_seed(seed)
    m = HGRNBitForCausalLM(tiny_config(**kw))
    with torch.no_grad():
        m.model.lower_bounds.normal_(0, 1)
        for name, p in m.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return export_model(m.eval(), b"{}")


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


def _check(compiled, runs):
    got = run_core(CFG, compiled, runs)
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
    return got


def test_two_layer_model_tokens_traces_and_candidates():
    img = _image(1, vocab_size=40, hidden_size=16, num_hidden_layers=2, intermediate_size=32)
    compiled = compile_model(img, CFG, trace=True)
    runs = [("run", 5, 0), ("run", 7, 0), ("run", 39, 8), ("reset",), ("run", 7, 1),
            ("run", 0, 3)]
    got = _check(compiled, runs)
    c = got["counters"]
    assert c["TOKENS"] == 5 and c["INSTRUCTIONS"] > 0
    assert c["CYCLES"] >= c["ENGINE_BUSY"] + c["WAIT_VECTOR"] + c["SEQUENCER"]


def test_other_shape_and_partial_row_groups():
    # d = 24, I = 40: every product ends in a partial group of 8 lanes
    img = _image(2, vocab_size=61, hidden_size=24, num_hidden_layers=1, intermediate_size=40)
    compiled = compile_model(img, CFG, trace=True)
    _check(compiled, [("run", 60, 0), ("run", 3, 8), ("run", 17, 2)])


def _program(instrs):
    img = _image(3, vocab_size=40, hidden_size=16, num_hidden_layers=1, intermediate_size=32)
    compiled = compile_model(img, CFG)
    words = [encode(i) if isinstance(i, Instruction) else i for i in instrs]
    return compiled.__class__(**{**compiled.__dict__, "program": tuple(words)})


def _q(rows=16, n=16, src=0):
    return Instruction(Opcode.QUANT, src=src, len=n, gain=0, frac=14, rows=rows)


def _mv(rows=16, k=16, mode=MatvecMode.STORE, dst=64, waddr=0):
    return Instruction(Opcode.MATVEC, waddr=waddr, k=k, rows=rows, dst=dst, reg=0,
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
