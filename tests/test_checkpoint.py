"""Checkpoint folders: released tensor names and config keys, round trips, bad input."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from mmfree_fpga.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mmfree_fpga.cli import main
from mmfree_fpga.config import ConfigError, HGRNBitConfig
from mmfree_fpga.model import HGRNBitForCausalLM
from util import tiny_config

RELEASED_NAMES_LAYER = [
    "attn_norm.weight", "attn.i_proj.weight", "attn.i_proj.norm.weight",
    "attn.f_proj.weight", "attn.f_proj.norm.weight", "attn.g_proj.weight",
    "attn.g_proj.norm.weight", "attn.g_norm.weight", "attn.o_proj.weight",
    "attn.o_proj.norm.weight", "mlp_norm.weight", "mlp.gate_proj.weight",
    "mlp.gate_proj.norm.weight", "mlp.down_proj.weight", "mlp.down_proj.norm.weight",
]


def released_names(layers: int) -> set[str]:
    names = {"model.embeddings.weight", "model.lower_bounds", "model.norm.weight",
             "lm_head.weight", "lm_head.norm.weight"}
    for i in range(layers):
        names |= {f"model.layers.{i}.{n}" for n in RELEASED_NAMES_LAYER}
    return names


def test_state_dict_uses_released_names(tiny_model):
    assert set(tiny_model.state_dict()) == released_names(3)
    sd = tiny_model.state_dict()
    assert sd["model.layers.0.mlp.gate_proj.weight"].shape == (2 * 48, 32)  # fused [2I, d]
    assert sd["model.layers.0.mlp.down_proj.weight"].shape == (32, 48)
    assert sd["model.lower_bounds"].shape == (3, 32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_round_trip(tmp_path, tiny_model, dtype):
    save_checkpoint(tiny_model, tmp_path / "ck", dtype=dtype)
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert cfg["model_type"] == "hgrn_bit"
    for key in ("hidden_size", "num_hidden_layers", "hidden_ratio", "intermediate_size",
                "vocab_size", "rms_norm_eps", "use_lower_bound", "num_heads", "expand_ratio",
                "attn_mode", "hidden_act", "bos_token_id", "eos_token_id"):
        assert key in cfg
    stored = load_file(str(tmp_path / "ck" / "model.safetensors"))
    assert set(stored) == released_names(3)
    assert all(t.dtype == dtype for t in stored.values())
    loaded = load_checkpoint(tmp_path / "ck")
    for name, t in tiny_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], t.to(dtype).float()), name
    ids = torch.arange(10)[None]
    with torch.no_grad():
        a, _ = loaded(ids)
        b, _ = load_checkpoint(tmp_path / "ck")(ids)
    assert torch.equal(a, b)


def test_hf_bookkeeping_keys_ignored_and_sharded_weights(tmp_path, tiny_model):
    folder = save_checkpoint(tiny_model, tmp_path / "ck")
    cfg = json.loads((folder / "config.json").read_text())
    cfg |= {"transformers_version": "4.40.0", "torch_dtype": "bfloat16"}
    (folder / "config.json").write_text(json.dumps(cfg))
    sd = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    names = sorted(sd)
    save_file({k: sd[k] for k in names[:20]}, str(folder / "model-00001-of-00002.safetensors"))
    save_file({k: sd[k] for k in names[20:]}, str(folder / "model-00002-of-00002.safetensors"))
    load_checkpoint(folder)


def _bad(tmp_path, tiny_model, mutate):
    folder = save_checkpoint(tiny_model, tmp_path / "ck")
    mutate(folder)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(folder)
    return str(e.value)


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        load_checkpoint(tmp_path / "nope")


def test_missing_config(tmp_path, tiny_model):
    msg = _bad(tmp_path, tiny_model, lambda f: (f / "config.json").unlink())
    assert "config.json" in msg


def test_corrupt_config(tmp_path, tiny_model):
    msg = _bad(tmp_path, tiny_model, lambda f: (f / "config.json").write_text("{oops"))
    assert "not valid JSON" in msg


def test_unknown_model_type(tmp_path, tiny_model):
    def mutate(f):
        cfg = json.loads((f / "config.json").read_text())
        (f / "config.json").write_text(json.dumps(cfg | {"model_type": "llama"}))
    assert "model_type" in _bad(tmp_path, tiny_model, mutate)


def test_truncated_weights(tmp_path, tiny_model):
    def mutate(f):
        p = f / "model.safetensors"
        p.write_bytes(p.read_bytes()[:1000])
    assert "corrupt" in _bad(tmp_path, tiny_model, mutate)


def test_garbage_weights(tmp_path, tiny_model):
    msg = _bad(tmp_path, tiny_model,
               lambda f: (f / "model.safetensors").write_bytes(b"\xff" * 64))
    assert "corrupt" in msg


def test_no_weights(tmp_path, tiny_model):
    msg = _bad(tmp_path, tiny_model, lambda f: (f / "model.safetensors").unlink())
    assert "no *.safetensors" in msg


def test_shape_mismatch(tmp_path, tiny_model):
    def mutate(f):
        cfg = json.loads((f / "config.json").read_text())
        (f / "config.json").write_text(json.dumps(cfg | {"hidden_size": 64}))
    assert "shape" in _bad(tmp_path, tiny_model, mutate)


def test_missing_and_unexpected_tensors(tmp_path, tiny_model):
    def mutate(f):
        sd = load_file(str(f / "model.safetensors"))
        sd.pop("lm_head.norm.weight")
        sd["model.layers.0.attn.h_conv1d.weight"] = torch.zeros(3)
        save_file(sd, str(f / "model.safetensors"))
    msg = _bad(tmp_path, tiny_model, mutate)
    assert "lm_head.norm.weight" in msg and "h_conv1d" in msg


def test_unsupported_configs():
    with pytest.raises(ConfigError, match="short_conv"):
        tiny_config(use_short_conv=True)
    with pytest.raises(ConfigError, match="expand_ratio"):
        tiny_config(expand_ratio=2)
    with pytest.raises(ConfigError, match="hidden_size"):
        HGRNBitConfig.from_dict({"model_type": "hgrn_bit", "hidden_size": "big"})
    with pytest.raises(ConfigError, match="JSON object"):
        HGRNBitConfig.from_dict([1, 2])


def test_released_370m_config_parses():
    """The config.json keys of the published MMfreeLM-370M folder."""
    cfg = HGRNBitConfig.from_dict({
        "architectures": ["HGRNBitForCausalLM"], "attn_mode": "fused_recurrent",
        "bos_token_id": 1, "conv_size": 4, "eos_token_id": 2, "expand_ratio": 1,
        "fuse_cross_entropy": True, "hidden_act": "swish", "hidden_ratio": 4,
        "hidden_size": 1024, "initializer_range": 0.02, "intermediate_size": None,
        "max_position_embeddings": 2048, "model_type": "hgrn_bit", "num_heads": 1,
        "num_hidden_layers": 24, "rms_norm_eps": 1e-06, "share_conv_kernel": True,
        "tie_word_embeddings": False, "torch_dtype": "float32",
        "transformers_version": "4.40.2", "use_cache": True, "use_lower_bound": True,
        "use_short_conv": False, "vocab_size": 32000})
    assert cfg.mlp_intermediate_size == 2816
    m = HGRNBitForCausalLM(cfg)
    assert 370e6 < m.num_parameters() < 380e6  # "370M"


@pytest.mark.parametrize("case", ["missing", "corrupt", "model_type", "shape"])
def test_cli_one_line_error(tmp_path, tiny_model, capsys, case):
    folder = save_checkpoint(tiny_model, tmp_path / "ck")
    if case == "missing":
        folder = tmp_path / "nope"
    elif case == "corrupt":
        (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    elif case == "model_type":
        (folder / "config.json").write_text('{"model_type": "gpt2"}')
    else:
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps(cfg | {"num_hidden_layers": 5}))
    rc = main(["run", "--model", str(folder), "--prompt", "hello"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
