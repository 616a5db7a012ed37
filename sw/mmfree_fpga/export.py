"""Float checkpoint -> exported image (``.mmf``), and image -> the golden model's layout.

    mmfree-fpga export CHECKPOINT -o model.mmf
    mmfree-fpga info model.mmf

The container (header, section table, CRCs) is specified in ``image.py``. This module fixes
what the sections hold (numerics version 1, NUMERICS.md):

=================================  ============  ==========================================
section                            dtype, shape  meaning
=================================  ============  ==========================================
``embedding``                      int16 [V, d]  embedding / 2^embedding_frac
``layers.{i}.lower_bound``         uint32 [n]    forget-gate lower bound, Q0.24 (row 0 = 0)
``layers.{i}.g_norm``              int16 [n]     g_norm gain / 2^g_norm_frac
``{W}.codes``                      uint8 [N, K/4] ternary codes, 4 per byte, LSB first:
                                                 0b00 = 0, 0b01 = +1, 0b11 = -1 (0b10 is
                                                 invalid); rows padded with 0 to 4k codes
``{W}.gain``                       int16 [K]     folded gain G / 2^gain_frac (absmax input)
``{W}.pre``                        int16 [K]     the preceding RMSNorm's gain / 2^pre_frac
                                                 (for 1/rms; absent where there is none)
``tokenizer``                      bytes         the tokenizer.json the model was trained with
=================================  ============  ==========================================

``{W}`` is ``layers.{i}.attn.{i,f,g,o}_proj``, ``layers.{i}.mlp.{gate,down}_proj`` or
``lm_head``. Per-tensor scalars live in the JSON meta: ``w_scale`` (s_w / 127 as a PF
``[mant, exp]``), ``gain_frac``, ``pre_frac``; plus the model config, ``embedding_frac``,
``g_norm_frac`` per layer and ``numerics_version``.

Quantize once, from latent weights: codes and absmean scale come from ``model.ternarize``
on the checkpoint's latent weights, the same function the float model runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import numerics as N
from .config import ConfigError, HGRNBitConfig
from .golden import BitLinearWeights
from .image import ImageError, read_image, write_image
from .numerics import PF

CODE_BITS = {0: 0b00, 1: 0b01, -1: 0b11}


def pack_codes(codes: np.ndarray) -> np.ndarray:
    """int8 codes [N, K] in {-1, 0, 1} -> uint8 [N, ceil(K/4)], 2 bits each, LSB first."""
    n, k = codes.shape
    padded = np.zeros((n, -(-k // 4) * 4), dtype=np.uint8)
    padded[:, :k] = codes.astype(np.int64) & 0b11          # two's complement in 2 bits
    p = padded.reshape(n, -1, 4)
    return (p[..., 0] | p[..., 1] << 2 | p[..., 2] << 4 | p[..., 3] << 6).astype(np.uint8)


def unpack_codes(packed: np.ndarray, k: int, name: str = "codes") -> np.ndarray:
    fields = np.stack([(packed >> s) & 0b11 for s in (0, 2, 4, 6)], axis=-1)
    fields = fields.reshape(packed.shape[0], -1)
    if np.any(fields == 0b10):
        raise ImageError(f"{name}: invalid ternary code 0b10")
    if np.any(fields[:, k:]):
        raise ImageError(f"{name}: non-zero padding codes")
    return np.where(fields[:, :k] == 0b11, -1, fields[:, :k]).astype(np.int8)


# -- export ------------------------------------------------------------------------------------

def _bitlinears(config: HGRNBitConfig):
    """(image name, checkpoint prefix, preceding norm or None) of every BitLinear, in order."""
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}"
        for proj in ("i_proj", "f_proj", "g_proj"):
            yield f"layers.{i}.attn.{proj}", f"{p}.attn.{proj}", f"{p}.attn_norm"
        yield f"layers.{i}.attn.o_proj", f"{p}.attn.o_proj", None
        yield f"layers.{i}.mlp.gate_proj", f"{p}.mlp.gate_proj", f"{p}.mlp_norm"
        yield f"layers.{i}.mlp.down_proj", f"{p}.mlp.down_proj", None
    yield "lm_head", "lm_head", "model.norm"


def export_model(model, tokenizer_json: bytes) -> tuple[dict, dict[str, np.ndarray | bytes]]:
    """A float ``HGRNBitForCausalLM`` -> (meta, tensors) of the image."""
    import torch

    from .model import ternarize

    config = model.config
    sd = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    tensors: dict[str, np.ndarray] = {}
    per_tensor: dict[str, dict] = {}

    emb = sd["model.embeddings.weight"].double().numpy()
    emb_q, emb_frac = N.gain_block(emb)        # same int16 block format as the gains
    tensors["embedding"] = emb_q

    with torch.no_grad():
        lbs = model.model.forget_lower_bounds()
    layer_meta = []
    for i in range(config.num_hidden_layers):
        lb = np.zeros(config.input_dim) if lbs is None else lbs[i].double().numpy()
        tensors[f"layers.{i}.lower_bound"] = np.round(lb * N.GATE_ONE).astype(np.uint32)
        gn, gn_frac = N.gain_block(sd[f"model.layers.{i}.attn.g_norm.weight"].double().numpy())
        tensors[f"layers.{i}.g_norm"] = gn
        layer_meta.append({"g_norm_frac": gn_frac})

    for name, prefix, pre in _bitlinears(config):
        codes, s = ternarize(sd[f"{prefix}.weight"])
        tensors[f"{name}.codes"] = pack_codes(codes.numpy())
        g = sd[f"{prefix}.norm.weight"].double().numpy()
        entry = {"w_scale": list(N.pf_from_float(float(s) / N.ACT_MAX)), "k": codes.shape[1]}
        if pre is not None:
            gp = sd[f"{pre}.weight"].double().numpy()
            tensors[f"{name}.pre"], entry["pre_frac"] = N.gain_block(gp)
            g = g * gp
        tensors[f"{name}.gain"], entry["gain_frac"] = N.gain_block(g)
        per_tensor[name] = entry

    tensors["tokenizer"] = bytes(tokenizer_json)
    meta = {
        "format": "mmfree-fpga model image",
        "numerics_version": N.NUMERICS_VERSION,
        "config": config.to_dict(),
        "embedding_frac": emb_frac,
        "layers": layer_meta,
        "bitlinear": per_tensor,
    }
    return meta, tensors


def export_checkpoint(folder: str | Path, out: str | Path) -> dict:
    """Read a checkpoint folder and write its image; returns a summary for the CLI."""
    from .checkpoint import load_checkpoint
    from .tokenizer import load_tokenizer

    folder = Path(folder)
    model = load_checkpoint(folder)
    load_tokenizer(folder)                      # fails clearly if it is missing or broken
    meta, tensors = export_model(model, (folder / "tokenizer.json").read_bytes())
    layout = model_from_image((meta, tensors))  # refuse now what the golden model cannot hold
    write_image(out, meta, tensors)
    return {"image": str(out), "bytes": Path(out).stat().st_size,
            "ternary_weights": layout.ternary_weights, "sections": len(tensors)}


# -- the golden model's view ------------------------------------------------------------------

@dataclass
class LayerWeights:
    i_proj: BitLinearWeights
    f_proj: BitLinearWeights
    g_proj: BitLinearWeights
    o_proj: BitLinearWeights
    gate_proj: BitLinearWeights
    down_proj: BitLinearWeights
    lower_bound: np.ndarray
    g_norm: np.ndarray
    g_norm_frac: int


@dataclass
class ModelLayout:
    config: HGRNBitConfig
    embedding: np.ndarray
    embedding_frac: int
    layers: list[LayerWeights]
    lm_head: BitLinearWeights
    tokenizer_json: bytes
    ternary_weights: int


def model_from_image(image) -> ModelLayout:
    """An image (path, or (meta, tensors)) -> checked weights for the golden model.

    Raises ImageError for anything the golden model cannot hold: another numerics version,
    an invalid config, a missing tensor, a shape that disagrees with the config, a dot
    product longer than the formats are proven for, an invalid ternary code.
    """
    meta, tensors = read_image(image) if isinstance(image, str | Path) else image
    where = str(image) if isinstance(image, str | Path) else "image"
    if meta.get("numerics_version") != N.NUMERICS_VERSION:
        raise ImageError(f"{where}: numerics version {meta.get('numerics_version')!r}, "
                         f"this golden model implements {N.NUMERICS_VERSION}")
    try:
        config = HGRNBitConfig.from_dict(meta["config"])
        bl = meta["bitlinear"]
        d, n, v = config.hidden_size, config.input_dim, config.vocab_size
        inter = config.mlp_intermediate_size
        if max(d, n, inter) > N.MAX_K:
            raise ImageError(f"{where}: a dimension exceeds {N.MAX_K}, the longest vector "
                             "the number formats are proven for")

        def get(name, shape, dtype):
            if name not in tensors:
                raise ImageError(f"{where}: missing section {name!r}")
            t = tensors[name]
            if t.shape != shape or t.dtype != dtype:
                raise ImageError(f"{where}: section {name!r} is {t.dtype}{list(t.shape)}, "
                                 f"the config needs {np.dtype(dtype)}{list(shape)}")
            return t

        def weights(name, n_out, k, has_pre):
            e = bl[name]
            codes = unpack_codes(get(f"{name}.codes", (n_out, -(-k // 4)), np.uint8), k,
                                 f"{where}: {name}.codes")
            pre = get(f"{name}.pre", (k,), np.int16) if has_pre else None
            return BitLinearWeights(codes, PF(*e["w_scale"]),
                                    get(f"{name}.gain", (k,), np.int16), e["gain_frac"],
                                    pre, e.get("pre_frac", 0))

        layers = []
        for i in range(config.num_hidden_layers):
            a, m = f"layers.{i}.attn", f"layers.{i}.mlp"
            layers.append(LayerWeights(
                weights(f"{a}.i_proj", n, d, True), weights(f"{a}.f_proj", n, d, True),
                weights(f"{a}.g_proj", n, d, True), weights(f"{a}.o_proj", d, n, False),
                weights(f"{m}.gate_proj", 2 * inter, d, True),
                weights(f"{m}.down_proj", d, inter, False),
                get(f"layers.{i}.lower_bound", (n,), np.uint32).astype(np.int64),
                get(f"layers.{i}.g_norm", (n,), np.int16).astype(np.int64),
                meta["layers"][i]["g_norm_frac"]))
            if np.any(layers[-1].lower_bound > N.GATE_ONE):
                raise ImageError(f"{where}: layers.{i}.lower_bound above 1.0")
        lm_head = weights("lm_head", v, d, True)
        emb = get("embedding", (v, d), np.int16)
        tok = tensors.get("tokenizer")
        if not isinstance(tok, bytes):
            raise ImageError(f"{where}: missing or non-blob section 'tokenizer'")
    except ConfigError as e:
        raise ImageError(f"{where}: {e}") from None
    except (KeyError, TypeError, IndexError, ValueError) as e:
        raise ImageError(f"{where}: meta is missing or has a bad entry ({e!r})") from None
    ternary = sum(w.codes.size for layer in layers for w in
                  (layer.i_proj, layer.f_proj, layer.g_proj, layer.o_proj, layer.gate_proj,
                   layer.down_proj)) + lm_head.codes.size
    return ModelLayout(config, emb, int(meta["embedding_frac"]), layers, lm_head,
                       tok, ternary)


def image_info(path: str | Path) -> str:
    """A human-readable summary of an image (``mmfree-fpga info``)."""
    from .image import read_header

    header = read_header(path)
    layout = model_from_image(path)                # full check, CRCs included
    c = layout.config
    lines = [f"{path}: mmfree-fpga model image, container version {header['version']}, "
             f"numerics version {N.NUMERICS_VERSION}, {Path(path).stat().st_size:,} bytes",
             f"model: hgrn_bit d={c.hidden_size} layers={c.num_hidden_layers} "
             f"I={c.mlp_intermediate_size} vocab={c.vocab_size}",
             f"ternary weights: {layout.ternary_weights:,} "
             f"({layout.ternary_weights * 2 / 8 / 2**20:.2f} MiB packed at 2 bits)",
             f"sections: {len(header['sections'])}"]
    for s in header["sections"]:
        lines.append(f"  {s['name']:<40} {s['dtype']:>7} {str(list(s['shape'])):<16} "
                     f"{s['nbytes']:>10,} B  crc32 {s['crc32']:08x}")
    return "\n".join(lines)


def meta_json(meta: dict) -> str:
    return json.dumps(meta, indent=2, sort_keys=True)
