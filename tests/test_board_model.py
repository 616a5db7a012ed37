"""The shipped board model (``sw/mmfree_fpga/models/board``, image ``board.mmf``): sized so
that every ternary weight fits the ULX3S-85F's block-RAM weight budget of 6,144 words at
128 lanes (the embedding lives in SDRAM and does not count). It loads, its image is a fresh
export of the folder, it compiles to exactly 6,144 weight words, its golden-model text is
pinned, and on the simulated accelerator its greedy tokens and every layer's vector equal
the golden model's (reusing the ``device`` fixture's SIM build: no extra Verilator build)."""

import json
from pathlib import Path

import numpy as np
import pytest
from sim_device import require_verilator
from tokenizers import Tokenizer

from mmfree_fpga.checkpoint import load_checkpoint
from mmfree_fpga.cli import DEFAULT_MODEL
from mmfree_fpga.compiler import SIM, compile_model
from mmfree_fpga.core_config import CoreConfig
from mmfree_fpga.evaluate import evaluate_text
from mmfree_fpga.export import export_checkpoint
from mmfree_fpga.generate import Sampler, generate
from mmfree_fpga.golden import GoldenBackend, GoldenModel
from mmfree_fpga.isa import Space
from mmfree_fpga.model import BitLinear, weight_scale

ROOT = Path(__file__).parents[1]
BOARD = DEFAULT_MODEL.parent / "board"
BOARD_IMAGE = DEFAULT_MODEL.parent / "board.mmf"
#: the weight budget: 6,144 words of 128 ternary codes in block RAM
BUDGET_WORDS = 6144
#: a 128-lane core with room for the budget and the board's dimension limits
BOARD_CORE = CoreConfig(lanes=128, weight_words=BUDGET_WORDS, max_d=512, max_n=512,
                        max_inter=1024, max_layers=8, max_vocab=4096)
PROMPT = "It is a truth universally acknowledged"
#: greedy, 40 tokens, end of text ignored (``mmfree-fpga run --backend golden --model
#: sw/mmfree_fpga/models/board --ignore-eos --max-new-tokens 40``); </s><s> print as nothing
GOLDEN_TEXT = (" to be a friend.The time I have a little more to do.The time I have a lot of "
               "life.The time I have a little more to do.")


def test_board_model_loads():
    model = load_checkpoint(BOARD)
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.mlp_intermediate_size,
            cfg.vocab_size) == (128, 2, 256, 3584)
    assert model.num_parameters() == 1_248_256
    assert model.num_ternary_weights() == 786_432
    info = json.loads((BOARD / "training.json").read_text())
    assert info["parameters"] == model.num_parameters()
    assert Tokenizer.from_file(str(BOARD / "tokenizer.json")).get_vocab_size() == 3584


def test_board_model_quality():
    """Loss on the first 16 k held-out tokens: 3.9821 when measured (the whole split,
    `mmfree-fpga eval --model sw/mmfree_fpga/models/board`, is 3.7585: 1.583 bits per byte)."""
    result = evaluate_text(BOARD, ROOT / "data" / "val.txt.gz", max_tokens=16384)
    assert result["tokens"] == 16384
    assert abs(result["val_loss"] - 3.9821) < 2e-3, result


def test_board_codes_do_not_depend_on_summation_order():
    """The float32 latent weights keep 1e-5 * s from every ternary threshold |w| = s / 2, so
    no order of the absmean's sum (threads, SIMD width) can flip a code of the image."""
    model = load_checkpoint(BOARD)
    for name, m in model.named_modules():
        if isinstance(m, BitLinear):
            w = m.weight.detach().double()
            r = w.abs() / weight_scale(m.weight.detach()).double()
            assert (r - 0.5).abs().min() > 9e-6, name


def test_board_image_is_a_fresh_export(tmp_path):
    out = tmp_path / "board.mmf"
    export_checkpoint(BOARD, out)
    assert out.read_bytes() == BOARD_IMAGE.read_bytes()


def test_board_model_fits_the_weight_budget():
    """lm_head 3,584 words (3,584 rows x 1 word of 128 inputs) + 2 layers x 1,280 (i, f, g,
    o: 128 each; gate_proj 512; down_proj 256) = 6,144: the whole budget, all on chip."""
    compiled = compile_model(BOARD_IMAGE, BOARD_CORE, onchip_words=BUDGET_WORDS)
    assert compiled.footprint()[Space.WEIGHTS] == 6144
    assert compiled.weight_words_per_token() == {"onchip": 6144, "sdram": 0}
    assert compiled.weight_words_per_token(generated=False) == {"onchip": 2560, "sdram": 0}
    assert set(compiled.weight_placement().values()) == {"onchip"}
    assert compiled.symbols["lm_head"].length == 3584
    # the plain layout (no split) needs the same words
    assert compile_model(BOARD_IMAGE, BOARD_CORE).footprint()[Space.WEIGHTS] == 6144


def _greedy_ids(backend, prompt_ids, n):
    return list(generate(backend, prompt_ids, n, Sampler()))


def test_board_golden_text_is_pinned_and_deterministic():
    backend = GoldenBackend(BOARD_IMAGE)
    tok = Tokenizer.from_str(backend.model.layout.tokenizer_json.decode())
    ids = tok.encode(PROMPT).ids
    a = _greedy_ids(backend, ids, 40)
    b = _greedy_ids(backend, ids, 40)
    assert a == b
    assert tok.decode(a, skip_special_tokens=True) == GOLDEN_TEXT
    assert a[5:7] == [2, 1]          # " to be a friend." then </s> <s>: a new paragraph


@pytest.fixture(scope="module")
def board_sim(request):
    """The module's simulated accelerator (conftest's ``device``), or a skip without
    Verilator; the tests above run without it."""
    require_verilator()
    return request.getfixturevalue("device")


def test_board_model_on_the_simulator_equals_golden(board_sim):
    """Prompt + 24 greedy tokens: every layer's output vector and the top-8 ids and logits
    of each generated token, bit for bit (a few seconds once the simulator is built)."""
    from mmfree_fpga.driver.backend import AcceleratorBackend

    golden = GoldenModel(BOARD_IMAGE)
    compiled = compile_model(golden, SIM, trace=True)
    backend = AcceleratorBackend(board_sim, compiled)
    tok = Tokenizer.from_str(golden.layout.tokenizer_json.decode())
    ids = tok.encode(PROMPT).ids
    backend.reset()
    golden.reset()
    for i, t in enumerate(ids[:-1]):
        trace = []
        golden.step(t, trace)
        r = backend.driver.run([t], 0)
        assert len(r.traces) == len(trace) == 2, i
        for (tag, got), want in zip(r.traces, trace, strict=True):
            assert np.array_equal(got, want), (i, tag)
    t, out = ids[-1], []
    for n in range(24):
        trace = []
        logits = golden.step(t, trace)
        r = backend.driver.run([t], 8)
        for (tag, got), want in zip(r.traces, trace, strict=True):
            assert np.array_equal(got, want), (n, tag)
        order = sorted(range(len(logits)), key=lambda j: (-int(logits[j]), j))[:8]
        assert r.ids.tolist() == order, n
        assert r.logits.tolist() == [int(logits[j]) for j in order], n
        t = order[0]
        out.append(t)
    assert out == _greedy_ids(GoldenBackend(BOARD_IMAGE), ids, 24)


def test_board_files():
    names = {p.name for p in BOARD.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "training.json",
            "sweep.json"} <= names
    sweep = json.loads((BOARD / "sweep.json").read_text())
    assert all(r["weight_words_128_lanes"] <= BUDGET_WORDS for r in sweep.values())
    assert Path(BOARD_IMAGE).exists()
