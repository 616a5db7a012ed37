"""Hugging Face-style checkpoint folders: ``config.json`` + ``*.safetensors`` (+ tokenizer).

The tensor names are those of the released ``mmfreelm`` HGRNBitForCausalLM, so a folder
written here loads there and the published MMfreeLM folders load here::

    model.embeddings.weight                    [V, d]   full precision
    model.lower_bounds                         [L, d]   (use_lower_bound)
    model.layers.{i}.attn_norm.weight          [d]
    model.layers.{i}.attn.{i,f,g}_proj.weight  [n, d]   latent weights of BitLinears
    model.layers.{i}.attn.{i,f,g}_proj.norm.weight [d]
    model.layers.{i}.attn.g_norm.weight        [n]
    model.layers.{i}.attn.o_proj.weight        [d, n]   (+ .norm.weight [n])
    model.layers.{i}.mlp_norm.weight           [d]
    model.layers.{i}.mlp.gate_proj.weight      [2I, d]  (+ .norm.weight [d])
    model.layers.{i}.mlp.down_proj.weight      [d, I]   (+ .norm.weight [I])
    model.norm.weight                          [d]
    lm_head.weight                             [V, d]   (+ lm_head.norm.weight [d])

Latent weights may be stored as bf16 or fp32; they are loaded as fp32. A sharded folder
(several ``*.safetensors``) and a legacy ``pytorch_model.bin`` load too.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from .config import ConfigError, HGRNBitConfig
from .model import HGRNBitForCausalLM

SAFETENSORS_NAME = "model.safetensors"
TOKENIZER_NAME = "tokenizer.json"


class CheckpointError(Exception):
    """A checkpoint folder that cannot be loaded; the message says why and where."""


def _read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    tensors: dict[str, torch.Tensor] = {}
    if files:
        for f in files:
            try:
                part = load_file(str(f))
            except (SafetensorError, OSError, ValueError, RuntimeError) as e:
                raise CheckpointError(f"{f}: corrupt or unreadable safetensors ({e})") from None
            dup = tensors.keys() & part.keys()
            if dup:
                raise CheckpointError(f"{f}: tensor {sorted(dup)[0]!r} also in another shard")
            tensors.update(part)
        return tensors
    legacy = folder / "pytorch_model.bin"
    if legacy.exists():
        try:
            return torch.load(legacy, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for a bad pickle
            raise CheckpointError(f"{legacy}: corrupt or unreadable ({e})") from None
    raise CheckpointError(f"{folder}: no *.safetensors (or pytorch_model.bin) weights found")


def load_config(folder: str | Path) -> HGRNBitConfig:
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a checkpoint folder (no such directory)")
    try:
        return HGRNBitConfig.load(folder / "config.json")
    except ConfigError as e:
        raise CheckpointError(f"{folder}: {e}") from None


def load_checkpoint(folder: str | Path) -> HGRNBitForCausalLM:
    """Load a checkpoint folder into a float32 model in eval mode."""
    folder = Path(folder)
    config = load_config(folder)
    tensors = _read_tensors(folder)
    model = HGRNBitForCausalLM(config)
    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]!r})")
        raise CheckpointError(f"{folder}: weights do not match config.json: "
                              + "; ".join(parts))
    for name, ref in expected.items():
        t = tensors[name]
        if tuple(t.shape) != tuple(ref.shape):
            raise CheckpointError(f"{folder}: tensor {name!r} has shape {tuple(t.shape)}, "
                                  f"config.json implies {tuple(ref.shape)}")
        if not t.is_floating_point():
            raise CheckpointError(f"{folder}: tensor {name!r} is {t.dtype}, expected float")
    model.load_state_dict({k: v.float() for k, v in tensors.items()})
    return model.eval()


def save_checkpoint(model: HGRNBitForCausalLM, folder: str | Path,
                    dtype: torch.dtype = torch.float32,
                    tokenizer: str | Path | None = None,
                    extra: dict | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (+ a copy of ``tokenizer.json``).

    ``extra`` is written to ``training.json`` (provenance: data, steps, losses).
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save(folder / "config.json")
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    tmp = folder / (SAFETENSORS_NAME + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    tmp.replace(folder / SAFETENSORS_NAME)  # never leave a half-written checkpoint behind
    if tokenizer is not None and Path(tokenizer).resolve() != (folder / TOKENIZER_NAME).resolve():
        shutil.copyfile(tokenizer, folder / TOKENIZER_NAME)
    if extra is not None:
        (folder / "training.json").write_text(json.dumps(extra, indent=2) + "\n")
    return folder
