"""The exported image: round trip, corruption, limits; the golden model built from it
against its own reference path and against the float model."""

import json

import numpy as np
import pytest
import torch

from mmfree_fpga.checkpoint import save_checkpoint
from mmfree_fpga.cli import DEFAULT_MODEL, main
from mmfree_fpga.export import (
    export_checkpoint,
    export_model,
    model_from_image,
    pack_codes,
    unpack_codes,
)
from mmfree_fpga.golden import GoldenModel
from mmfree_fpga.image import ImageError, read_image, write_image
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
                                  "missing", "shape"])
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
        else:
            tensors["embedding"] = tensors["embedding"][:, :16]
        write_image(out, meta, tensors)
    rc = main(["run", "--backend", "golden", "--model", str(out), "--prompt", "the cat"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    expected = {"magic": "not an .mmf", "version": "newer", "truncated": "truncated",
                "numerics": "numerics version", "too_long": "exceeds",
                "missing": "missing section", "shape": "embedding"}[case]
    assert expected in err


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
    assert main(["run", *prompt]) == 0
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
