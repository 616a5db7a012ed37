"""The whole core, Verilated (the simulated accelerator of ``mmfree-fpga run --backend sim``),
driven through the command processor's byte stream by the host driver, against the golden
model: the shipped model's greedy tokens and every layer's output vector, a random model of
another shape through the same core configuration, and a refusal.

``MMFREE_SIM_LONG=1`` (``make sim-long``) runs >= 512 tokens over several prompts.
"""

import os

import numpy as np
import pytest
from sim_device import SHIPPED, require_verilator
from tokenizers import Tokenizer

from mmfree_fpga.compiler import SIM, compile_model
from mmfree_fpga.driver.backend import AcceleratorBackend
from mmfree_fpga.driver.core import SequencerError
from mmfree_fpga.golden import GoldenModel
from mmfree_fpga.isa import ErrorCode, Instruction, Opcode, Space, encode
from util import random_image

require_verilator()

PROMPTS = ["It is a truth universally acknowledged", "In the beginning God created",
           "Mr. Darcy said", "The fortune you seek", "And the LORD spake unto Moses"]



def _lockstep(backend: AcceleratorBackend, golden: GoldenModel, prompt_ids, new_tokens):
    """Greedy tokens on both; every token's per-layer vectors and top-k compared."""
    backend.reset()
    golden.reset()
    seq = list(prompt_ids)
    for i, tok in enumerate(prompt_ids[:-1]):
        trace = []
        golden.step(tok, trace)
        r = backend.driver.run([tok], 0)
        assert len(r.traces) == len(trace), i
        for (tag, got), want in zip(r.traces, trace, strict=True):
            assert np.array_equal(got, want), (i, tag)
    tok = prompt_ids[-1]
    for n in range(new_tokens):
        trace = []
        logits = golden.step(tok, trace)
        r = backend.driver.run([tok], 8)
        for (tag, got), want in zip(r.traces, trace, strict=True):
            assert np.array_equal(got, want), (n, tag, np.flatnonzero(got != want)[:8])
        order = sorted(range(len(logits)), key=lambda j: (-int(logits[j]), j))[:8]
        assert r.ids.tolist() == order, n
        assert r.logits.tolist() == [int(logits[j]) for j in order], n
        tok = order[0]
        seq.append(tok)
    return seq


def test_memories_start_at_zero(device):
    """The simulator zeroes what the gateware declares zero (Verilator --x-initial 0):
    nothing has written the end of SCRATCH or of STATE yet."""
    assert not device.read(Space.SCRATCH, SIM.scratch_words - 64, 64).any()
    assert not device.read(Space.STATE, SIM.state_words - 64, 64).any()


def test_shipped_model_64_tokens_every_layer(device):
    golden = GoldenModel(SHIPPED)
    compiled = compile_model(golden, SIM, trace=True)
    backend = AcceleratorBackend(device, compiled)
    tok = Tokenizer.from_str(golden.layout.tokenizer_json.decode())
    ids = tok.encode(PROMPTS[0]).ids
    seq = _lockstep(backend, golden, ids, 64)
    assert len(seq) == len(ids) + 64
    c = backend.driver.counters()
    # every token streams each of its matrices' weight words through the engine exactly
    # once (prompt tokens skip the lm_head)
    def words(w):
        return -(-w.codes.shape[0] // SIM.lanes) * w.codes.shape[1]

    per_token = sum(words(w) for _, w in compiled.layout.bitlinears())
    lm = words(compiled.layout.lm_head)
    assert c["TOKENS"] == len(ids) - 1 + 64
    assert c["ENGINE_BUSY"] == (len(ids) - 1) * (per_token - lm) + 64 * per_token


@pytest.mark.skipif(os.environ.get("MMFREE_SIM_LONG") != "1", reason="make sim-long")
def test_shipped_model_512_tokens_several_prompts(device):
    golden = GoldenModel(SHIPPED)
    backend = AcceleratorBackend(device, compile_model(golden, SIM, trace=True))
    tok = Tokenizer.from_str(golden.layout.tokenizer_json.decode())
    total = 0
    for p in PROMPTS:
        _lockstep(backend, golden, tok.encode(p).ids, 104)
        total += 104
    assert total >= 512


def test_other_shape_same_core(device):
    golden = GoldenModel(random_image(7, vocab_size=300, hidden_size=96, num_hidden_layers=3,
                                      intermediate_size=160))
    backend = AcceleratorBackend(device, compile_model(golden, SIM, trace=True))
    _lockstep(backend, golden, [5, 17, 299, 0], 12)


def test_refusal_leaves_the_link_in_step(device):
    golden = GoldenModel(SHIPPED)
    compiled = compile_model(golden, SIM)
    backend = AcceleratorBackend(device, compiled)
    device.write(Space.PROGRAM, 0, [encode(Instruction(Opcode.TRACE, src=0, len=4)), 0x0B])
    with pytest.raises(SequencerError) as e:
        device.run([1], 1)
    assert (e.value.code, e.value.pc) == (ErrorCode.ILLEGAL, 1)
    with pytest.raises(SequencerError):            # halted until reset
        device.run([1], 1)
    device.reset_state()
    device.write(Space.PROGRAM, 0, list(compiled.program))
    r = device.run([1], 1)
    assert len(r.ids) == 1
    del backend


def test_console_script_sim_equals_golden():
    """`mmfree-fpga run --backend sim` prints exactly what `--backend golden` prints."""
    import shutil
    import subprocess
    from pathlib import Path

    exe = Path(".venv/bin/mmfree-fpga")
    exe = str(exe) if exe.exists() else shutil.which("mmfree-fpga")
    outs = {}
    for backend in ("golden", "sim"):
        r = subprocess.run([exe, "run", "--backend", backend, "--model", SHIPPED, "--prompt",
                            "Mr. Darcy said", "--max-new-tokens", "12", "--ignore-eos"],
                           capture_output=True, text=True, timeout=1800)
        assert r.returncode == 0, r.stderr
        assert f"[{backend}]" in r.stderr
        outs[backend] = r.stdout
    assert outs["sim"] == outs["golden"]
    assert len(outs["sim"]) > len("Mr. Darcy said") + 10
