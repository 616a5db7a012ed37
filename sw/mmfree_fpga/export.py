"""Float checkpoint -> exported image (``.mmf``).

    mmfree-fpga export CHECKPOINT -o model.mmf
    mmfree-fpga info model.mmf

``layout.py`` specifies what the sections and meta entries mean (and reads them back for the
golden model); ``image.py`` the container. Every value is checked against the field the
gateware takes it in as it is computed, so a checkpoint that cannot run on the hardware
fails here, naming its tensor and value (``layout.FieldError``), not later on a board.

Quantize once, from latent weights: codes and absmean scale come from ``model.ternarize``
on the checkpoint's latent weights, the same function the float model runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import layout as L
from . import numerics as N
from .image import write_image
from .layout import FieldError, model_from_image

# The RMSNorm in front of each BitLinear role (its gain becomes ``{W}.pre``).
_PRE_NORM = {"i_proj": "attn_norm", "f_proj": "attn_norm", "g_proj": "attn_norm",
             "gate_proj": "mlp_norm"}


def _checkpoint_names(w: L.BitLinearSpec) -> tuple[str, str | None]:
    """(checkpoint prefix, preceding RMSNorm or None) of an image BitLinear."""
    if w.layer is None:
        names = "lm_head", "model.norm"
    else:
        pre = _PRE_NORM.get(w.role)
        names = f"model.{w.name}", None if pre is None else f"model.layers.{w.layer}.{pre}"
    assert (names[1] is not None) == w.has_pre
    return names


def _gain_block(g: np.ndarray, kind: str, source: str) -> tuple[np.ndarray, int]:
    """``numerics.gain_block(g)``, refused where its frac does not fit the field that the
    gateware takes a ``kind`` (a ``layout.FRAC_FIELDS`` key) in."""
    try:
        q, frac = N.gain_block(g)
    except ValueError as e:
        raise FieldError(f"cannot export {source}: {e}") from None
    peak = float(np.max(np.abs(g))) if g.size else 0.0
    return q, L.check_frac(kind, frac, f"cannot export {source} (peak |value| {peak:g})")


def _w_scale(s: float, source: str) -> list[int]:
    """s_w / 127 as a PF, refused where its exponent does not fit the gateware's."""
    try:
        pf = N.pf_from_float(s / N.ACT_MAX)
    except ValueError as e:
        raise FieldError(f"cannot export {source}: weight scale {e}") from None
    return list(L.check_pf(pf, f"cannot export {source} (weight scale {s:g})"))


def export_model(model, tokenizer_json: bytes) -> tuple[dict, dict[str, np.ndarray | bytes]]:
    """A float ``HGRNBitForCausalLM`` -> (meta, tensors) of the image.

    Raises ``layout.FieldError`` for a value that does not fit its gateware field.
    """
    import torch

    from .model import ternarize

    config = model.config
    sd = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    tensors: dict[str, np.ndarray] = {}
    per_tensor: dict[str, dict] = {}

    emb = sd["model.embeddings.weight"].double().numpy()
    # same int16 block format as the gains
    tensors[L.EMBEDDING], emb_frac = _gain_block(emb, "embedding_frac", "model.embeddings.weight")

    with torch.no_grad():
        lbs = model.model.forget_lower_bounds()
    layer_meta = []
    for i in range(config.num_hidden_layers):
        lb = np.zeros(config.input_dim) if lbs is None else lbs[i].double().numpy()
        lb = np.round(lb * N.GATE_ONE)
        L.check_lower_bound(lb, f"cannot export model.lower_bounds, layer {i}")
        tensors[L.lower_bound_section(i)] = lb.astype(L.LOWER_BOUND_DTYPE)
        source = f"model.layers.{i}.attn.g_norm.weight"
        tensors[L.g_norm_section(i)], gn_frac = _gain_block(sd[source].double().numpy(),
                                                            "g_norm_frac", source)
        layer_meta.append({"g_norm_frac": gn_frac})

    for w in L.bitlinear_specs(config):
        prefix, pre = _checkpoint_names(w)
        codes, s = ternarize(sd[f"{prefix}.weight"])
        tensors[w.codes] = L.pack_codes(codes.numpy())
        source = f"{prefix}.norm.weight"
        g = sd[source].double().numpy()
        entry = {"w_scale": _w_scale(float(s), f"{prefix}.weight"), "k": codes.shape[1]}
        if pre is not None:
            gp = sd[f"{pre}.weight"].double().numpy()
            tensors[w.pre], entry["pre_frac"] = _gain_block(gp, "pre_frac", f"{pre}.weight")
            g = g * gp
            source = f"the folded gain {source} x {pre}.weight"
        tensors[w.gain], entry["gain_frac"] = _gain_block(g, "gain_frac", source)
        per_tensor[w.name] = entry

    tensors[L.TOKENIZER] = bytes(tokenizer_json)
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
