"""The exported image: round trip, corruption, limits; the golden model built from it
against its own reference path and against the float model."""

import json

import numpy as np
import pytest
import torch

from mmfree_fpga.checkpoint import save_checkpoint
from mmfree_fpga.cli import DEFAULT_MODEL, main
from mmfree_fpga.export import export_checkpoint, export_model
from mmfree_fpga.golden import GoldenModel
from mmfree_fpga.image import ImageError, read_image, write_image
from mmfree_fpga.layout import FieldError, model_from_image, pack_codes, sections, unpack_codes
from mmfree_fpga.model import HGRNBitForCausalLM, ternarize
from mmfree_fpga.tokenizer import train_bpe
from util import tiny_config

SHIPPED_IMAGE = DEFAULT_MODEL.parent / "default.mmf"


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory):
    tok = train_bpe(["the cat sat on the mat and the dog ran in the park"] * 20, 97)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


@pytest.fixture
def ckpt(tmp_path, tiny_model, tokenizer_json):
    return save_checkpoint(tiny_model, tmp_path / "ck", tokenizer=tokenizer_json)


def test_pack_unpack():
    rng = np.random.default_rng(0)
    for k in (1, 3, 4, 5, 64, 67):
        codes = rng.integers(-1, 2, size=(7, k)).astype(np.int8)
        packed = pack_codes(codes)
        assert packed.shape == (7, -(-k // 4))
        assert np.array_equal(unpack_codes(packed, k), codes)
    assert pack_codes(np.array([[1, -1, 0, 1]], dtype=np.int8))[0, 0] == 0b01_00_11_01
    with pytest.raises(ImageError, match="0b10"):
        unpack_codes(np.array([[0b10]], dtype=np.uint8), 1)
    with pytest.raises(ImageError, match="padding"):
        unpack_codes(np.array([[0b01_00_00_00]], dtype=np.uint8), 3)


def test_round_trip(tmp_path, ckpt, tiny_model):
    out = tmp_path / "m.mmf"
    summary = export_checkpoint(ckpt, out)
    assert summary["ternary_weights"] == tiny_model.num_ternary_weights()
    meta, tensors = read_image(out)
    meta2, tensors2 = export_model(tiny_model, (ckpt / "tokenizer.json").read_bytes())
    assert json.loads(json.dumps(meta2)) == meta
    assert tensors.keys() == tensors2.keys()
    for name, t in tensors2.items():
        assert t == tensors[name] if isinstance(t, bytes) else np.array_equal(t, tensors[name])
    # quantized once from the latent weights: the codes are exactly ternarize(w)
    layout = model_from_image(out)
    codes, _ = ternarize(tiny_model.model.layers[1].attn.f_proj.weight.detach())
    assert np.array_equal(layout.layers[1].f_proj.codes, codes.numpy())
    # the writer writes exactly the sections the layout defines, in its order
    assert [(n, t.dtype if isinstance(t, np.ndarray) else None,
             t.shape if isinstance(t, np.ndarray) else None) for n, t in tensors2.items()] \
        == [tuple(sec) for sec in sections(tiny_model.config)]
    assert [name for name, _ in layout.bitlinears()] == list(meta2["bitlinear"])


def test_every_flipped_byte_is_caught(tmp_path, ckpt, capsys):
    out = tmp_path / "m.mmf"
    export_checkpoint(ckpt, out)
    data = bytearray(out.read_bytes())
    rng = np.random.default_rng(1)
    offsets = list(range(0, 512)) + rng.integers(512, len(data), 300).tolist()
    for off in offsets:
        bad = bytearray(data)
        bad[off] ^= 0x5A
        out.write_bytes(bad)
        with pytest.raises(ImageError):
            model_from_image(out)
    out.write_bytes(data[:len(data) // 2])
    assert main(["info", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


@pytest.mark.parametrize("case", ["magic", "version", "truncated", "numerics", "too_long",
                                  "missing", "shape", "frac"])
def test_bad_images_give_one_line(tmp_path, ckpt, tiny_model, case, capsys):
    out = tmp_path / "m.mmf"
    export_checkpoint(ckpt, out)
    data = bytearray(out.read_bytes())
    if case == "magic":
        data[:4] = b"GGUF"
        out.write_bytes(data)
    elif case == "version":
        import zlib
        data[4:6] = (99).to_bytes(2, "little")
        data[60:64] = zlib.crc32(bytes(data[:60])).to_bytes(4, "little")
        out.write_bytes(data)
    elif case == "truncated":
        out.write_bytes(data[:1000])
    else:
        meta, tensors = export_model(tiny_model, (ckpt / "tokenizer.json").read_bytes())
        if case == "numerics":
            meta["numerics_version"] = 2
        elif case == "too_long":
            meta["config"]["intermediate_size"] = 40000      # longer than MAX_K
        elif case == "missing":
            del tensors["layers.1.attn.o_proj.gain"]
        elif case == "frac":
            meta["layers"][2]["g_norm_frac"] = 32
        else:
            tensors["embedding"] = tensors["embedding"][:, :16]
        write_image(out, meta, tensors)
    rc = main(["run", "--backend", "golden", "--model", str(out), "--prompt", "the cat"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    expected = {"magic": "not an .mmf", "version": "newer", "truncated": "truncated",
                "numerics": "numerics version", "too_long": "exceeds",
                "missing": "missing section", "shape": "embedding",
                "frac": "layers.2: g_norm_frac = 32 does not fit the MLGRU's 5-bit gn_frac"}[case]
    assert expected in err


# (parameter, index, value, the message's tensor, meta entry and frac) for gains that no
# frac field holds: a peak of 2^15 or more gives gain_block a negative frac
HUGE_GAINS = {
    "g_norm": ("model.layers.0.attn.g_norm.weight", 0, 1e5,
               "model.layers.0.attn.g_norm.weight (peak |value| 100000): g_norm_frac = -2"),
    "pre": ("model.layers.1.mlp_norm.weight", 3, 40000.0,
            "model.layers.1.mlp_norm.weight (peak |value| 40000): pre_frac = -1"),
    "folded": ("model.layers.0.attn.i_proj.norm.weight", 0, 300.0,
               "the folded gain model.layers.0.attn.i_proj.norm.weight x "
               "model.layers.0.attn_norm.weight (peak |value| 90000): gain_frac = -2"),
    "embedding": ("model.embeddings.weight", 5, -2.0 ** 15,
                  "model.embeddings.weight (peak |value| 32768): embedding_frac = -1"),
}


@pytest.mark.parametrize("case", list(HUGE_GAINS))
def test_values_that_fit_no_field_are_refused_at_export(tmp_path, tiny_model, tokenizer_json,
                                                         case, capsys):
    name, index, value, message = HUGE_GAINS[case]
    params = dict(tiny_model.named_parameters())
    with torch.no_grad():
        params[name].view(-1)[index] = value
        if case == "folded":          # 300 * 300: each fits, their product does not
            params["model.layers.0.attn_norm.weight"].view(-1)[0] = value
    ck = save_checkpoint(tiny_model, tmp_path / "ck", tokenizer=tokenizer_json)
    with pytest.raises(FieldError) as e:
        export_checkpoint(ck, tmp_path / "m.mmf")
    assert str(e.value).startswith(f"cannot export {message} does not fit"), e.value
    assert "(0 .. " in str(e.value) and "2^15" in str(e.value)
    assert main(["export", str(ck), "-o", str(tmp_path / "m.mmf")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot export") and err.count("\n") == 1, err
    assert not (tmp_path / "m.mmf").exists()


@pytest.mark.parametrize("edit,message", [
    (lambda m, t: m["layers"][0].update(g_norm_frac=-1), "g_norm_frac = -1"),
    (lambda m, t: m["bitlinear"]["lm_head"].update(gain_frac=64),
     "bitlinear lm_head: gain_frac = 64 does not fit the norm units' 6-bit g_frac (0 .. 63)"),
    (lambda m, t: m["bitlinear"]["layers.1.attn.f_proj"].update(pre_frac=2.5),
     "pre_frac = 2.5 does not fit"),
    (lambda m, t: m.update(embedding_frac=-3), "embedding_frac = -3"),
    (lambda m, t: m["bitlinear"]["layers.0.mlp.down_proj"].update(w_scale=[1 << 15, 128]),
     "layers.0.mlp.down_proj w_scale: PF exponent 128 does not fit the gateware's 8-bit"),
    (lambda m, t: m["bitlinear"]["lm_head"].update(w_scale=[1 << 14, -30]),
     "PF mantissa 16384 is not normalized"),
    (lambda m, t: t["layers.2.lower_bound"].__setitem__(3, (1 << 24) + 1),
     "layers.2.lower_bound: lower bound 1.00000006 outside 0 .. 1.0"),
])
def test_values_that_fit_no_field_are_refused_at_load(tmp_path, ckpt, tiny_model, edit,
                                                       message):
    """A hand-edited image whose values the gateware cannot take is refused."""
    meta, tensors = export_model(tiny_model, (ckpt / "tokenizer.json").read_bytes())
    edit(meta, tensors)
    out = tmp_path / "m.mmf"
    write_image(out, meta, tensors)
    with pytest.raises(FieldError, match="does not fit|not normalized|outside") as e:
        model_from_image(out)
    assert message in str(e.value) and str(e.value).startswith(str(out)), e.value


def test_fast_path_equals_reference_path(ckpt, tiny_model):
    image = export_model(tiny_model, (ckpt / "tokenizer.json").read_bytes())
    fast, ref = GoldenModel(image, fast=True), GoldenModel(image, fast=False)
    for token in np.random.default_rng(2).integers(0, 97, 40):
        assert np.array_equal(fast.step(int(token)), ref.step(int(token)))


def test_golden_tracks_float_model(tiny_model):
    """Random tiny model: logits close, greedy tokens mostly agree (the real bar is
    `make fidelity` on the trained default model)."""
    torch.manual_seed(0)
    m = HGRNBitForCausalLM(tiny_config(hidden_size=64, intermediate_size=128)).freeze()
    g = GoldenModel(export_model(m, b"{}"))
    ids = torch.randint(0, 97, (1, 64), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        lf = m(ids)[0][0].numpy()
    li = np.stack([g.step(int(t)) for t in ids[0]]) / 65536
    scale = np.abs(lf).max()
    assert np.median(np.abs(li - lf)) < 0.02 * scale
    assert np.mean(li.argmax(-1) == lf.argmax(-1)) > 0.8


def test_shipped_image_is_a_fresh_export(tmp_path):
    out = tmp_path / "default.mmf"
    export_checkpoint(DEFAULT_MODEL, out)
    assert out.read_bytes() == SHIPPED_IMAGE.read_bytes()


def test_info_lists_sections(capsys):
    assert main(["info", str(SHIPPED_IMAGE)]) == 0
    out = capsys.readouterr().out
    assert "ternary weights: 6,160,384" in out and "lm_head.codes" in out


def test_golden_backend_greedy_equals_float_here(capsys):
    prompt = ["--prompt", "It is a truth universally acknowledged", "--max-new-tokens", "20"]
    assert main(["run", "--backend", "golden", "--model", str(SHIPPED_IMAGE), *prompt]) == 0
    golden = capsys.readouterr().out
    assert main(["run", "--backend", "float", *prompt]) == 0
    assert golden == capsys.readouterr().out    # 98 % top-1 agreement; this prompt agrees


def test_golden_run_needs_no_torch():
    """Running a prompt on the golden model imports neither torch nor the float model."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None\n"
            "from mmfree_fpga.cli import main\n"
            f"rc = main(['run', '--backend', 'golden', '--model', r'{SHIPPED_IMAGE}',"
            " '--prompt', 'In the beginning', '--max-new-tokens', '8'])\n"
            "assert 'mmfree_fpga.model' not in sys.modules\n"
            "sys.exit(rc)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("In the beginning")
