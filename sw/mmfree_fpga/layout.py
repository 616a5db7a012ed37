"""What the sections of a model image mean: the one definition the exporter (``export.py``,
the writer), the golden model (``golden.py``, the reader) and the compiler share.

The container (header, section table, CRCs) is specified in ``image.py``; the number
formats in ``numerics.py`` (numerics version 1, NUMERICS.md). An image of a config holds
exactly the sections :func:`sections` lists, in that order:

=================================  ============  ==========================================
section                            dtype, shape  meaning
=================================  ============  ==========================================
``embedding``                      int16 [V, d]  embedding / 2^embedding_frac
``layers.{i}.lower_bound``         uint32 [n]    forget-gate lower bound, Q0.24 (row 0 = 0)
``layers.{i}.g_norm``              int16 [n]     g_norm gain / 2^g_norm_frac
``{W}.codes``                      uint8 [N, K/4] ternary codes, 4 per byte, LSB first:
                                                 0b00 = 0, 0b01 = +1, 0b11 = -1 (0b10 is
                                                 invalid); rows padded with 0 to 4k codes
``{W}.pre``                        int16 [K]     the preceding RMSNorm's gain / 2^pre_frac
                                                 (for 1/rms; absent where there is none)
``{W}.gain``                       int16 [K]     folded gain G / 2^gain_frac (absmax input)
``tokenizer``                      bytes         the tokenizer.json the model was trained with
=================================  ============  ==========================================

``{W}`` is a BitLinear (:func:`bitlinear_specs`): ``layers.{i}.attn.{i,f,g,o}_proj``,
``layers.{i}.mlp.{gate,down}_proj`` or ``lm_head``. The JSON meta holds ``format``,
``numerics_version``, the model ``config``, ``embedding_frac``, ``layers[i].g_norm_frac``
and, per BitLinear, ``bitlinear[W]``: ``w_scale`` (s_w / 127 as a PF ``[mant, exp]``),
``gain_frac``, ``pre_frac`` (where there is a ``pre``) and ``k``.

Every scalar that the gateware takes in a field of fixed width must fit that field
(``numerics``: ``GAIN_FRAC_BITS``, ``GN_FRAC_BITS``, ``PF_EXP_BITS``), and lower bounds must
not exceed 1.0; the exporter refuses a checkpoint whose values do not fit, and
:func:`model_from_image` an image whose values do not (:class:`FieldError`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import numerics as N
from .config import ConfigError, HGRNBitConfig
from .image import ImageError, read_image
from .numerics import PF

EMBEDDING = "embedding"
TOKENIZER = "tokenizer"
GAIN_DTYPE = np.dtype(np.int16)            # numerics.GAIN_BITS
LOWER_BOUND_DTYPE = np.dtype(np.uint32)    # Q0.24 holds 0 .. 2^24


def lower_bound_section(layer: int) -> str:
    return f"layers.{layer}.lower_bound"


def g_norm_section(layer: int) -> str:
    return f"layers.{layer}.g_norm"


class BitLinearSpec(NamedTuple):
    """Where one BitLinear lives in an image and the shape the config gives it."""

    name: str            # the sections' prefix, ``{W}``
    layer: int | None    # its block, None for ``lm_head``
    role: str            # ``i_proj`` .. ``down_proj``, or ``lm_head``
    n: int               # output rows
    k: int               # dot-product length
    has_pre: bool        # a preceding RMSNorm, whose gain ``{W}.pre`` holds

    @property
    def codes(self) -> str:
        return f"{self.name}.codes"

    @property
    def gain(self) -> str:
        return f"{self.name}.gain"

    @property
    def pre(self) -> str:
        return f"{self.name}.pre"


LAYER_ROLES = ("i_proj", "f_proj", "g_proj", "o_proj", "gate_proj", "down_proj")


def bitlinear_specs(config: HGRNBitConfig) -> list[BitLinearSpec]:
    """Every BitLinear of a config, in image order: each layer's in LAYER_ROLES order, then
    ``lm_head``."""
    d, n, v = config.hidden_size, config.input_dim, config.vocab_size
    inter = config.mlp_intermediate_size
    out = []
    for i in range(config.num_hidden_layers):
        a, m = f"layers.{i}.attn", f"layers.{i}.mlp"
        out += [BitLinearSpec(f"{a}.i_proj", i, "i_proj", n, d, True),
                BitLinearSpec(f"{a}.f_proj", i, "f_proj", n, d, True),
                BitLinearSpec(f"{a}.g_proj", i, "g_proj", n, d, True),
                BitLinearSpec(f"{a}.o_proj", i, "o_proj", d, n, False),
                BitLinearSpec(f"{m}.gate_proj", i, "gate_proj", 2 * inter, d, True),
                BitLinearSpec(f"{m}.down_proj", i, "down_proj", d, inter, False)]
    out.append(BitLinearSpec("lm_head", None, "lm_head", v, d, True))
    return out


def codes_shape(n: int, k: int) -> tuple[int, int]:
    """The packed shape of an [n, k] ternary matrix: rows padded to whole bytes."""
    return n, -(-k // N.CODES_PER_BYTE)


class Section(NamedTuple):
    name: str
    dtype: np.dtype | None          # None: a blob (bytes)
    shape: tuple[int, ...] | None


def sections(config: HGRNBitConfig) -> list[Section]:
    """Every section an image of ``config`` holds, in the order the exporter writes them."""
    d, n, v = config.hidden_size, config.input_dim, config.vocab_size
    out = [Section(EMBEDDING, GAIN_DTYPE, (v, d))]
    for i in range(config.num_hidden_layers):
        out += [Section(lower_bound_section(i), LOWER_BOUND_DTYPE, (n,)),
                Section(g_norm_section(i), GAIN_DTYPE, (n,))]
    for w in bitlinear_specs(config):
        out.append(Section(w.codes, np.dtype(np.uint8), codes_shape(w.n, w.k)))
        if w.has_pre:
            out.append(Section(w.pre, GAIN_DTYPE, (w.k,)))
        out.append(Section(w.gain, GAIN_DTYPE, (w.k,)))
    out.append(Section(TOKENIZER, None, None))
    return out


# -- ternary codes ---------------------------------------------------------------------------

def pack_codes(codes: np.ndarray) -> np.ndarray:
    """int8 codes [N, K] in {-1, 0, 1} -> uint8 [N, ceil(K/4)], 2 bits each, LSB first."""
    n, k = codes.shape
    padded = np.full((n, codes_shape(n, k)[1] * N.CODES_PER_BYTE), N.CODE_ZERO, dtype=np.uint8)
    padded[:, :k] = N.encode_codes(codes)
    return N.pack_code_bytes(padded)


def unpack_codes(packed: np.ndarray, k: int, name: str = "codes") -> np.ndarray:
    """The inverse of :func:`pack_codes`; ImageError for a 0b10 code or non-zero padding."""
    try:
        values = N.decode_codes(N.unpack_code_bytes(packed))
    except ValueError:
        raise ImageError(f"{name}: invalid ternary code 0b10") from None
    if np.any(values[:, k:]):
        raise ImageError(f"{name}: non-zero padding codes")
    return np.ascontiguousarray(values[:, :k])


# -- the fields the gateware gives each value ------------------------------------------------

class FieldError(ImageError):
    """A value does not fit the field the gateware takes it in: refused at export (the
    checkpoint cannot run on the hardware) and at load (a hand-edited image)."""


# meta entry -> (lowest, highest, the field it travels in)
FRAC_FIELDS = {
    "gain_frac": (0, N.GAIN_FRAC_MAX, f"the norm units' {N.GAIN_FRAC_BITS}-bit g_frac"),
    "pre_frac": (0, N.GAIN_FRAC_MAX, f"the norm units' {N.GAIN_FRAC_BITS}-bit a_frac"),
    "g_norm_frac": (0, N.GN_FRAC_MAX, f"the MLGRU's {N.GN_FRAC_BITS}-bit gn_frac"),
    # the same block format as the gains; frac >= 0 is also what keeps an embedded value,
    # |q| * 2^(16 - frac), inside X
    "embedding_frac": (0, N.GAIN_FRAC_MAX, f"a {N.GAIN_FRAC_BITS}-bit gain frac"),
}


def check_frac(kind: str, value, where: str) -> int:
    """``value`` if it fits the field a ``kind`` (a key of FRAC_FIELDS) travels in."""
    lo, hi, field = FRAC_FIELDS[kind]
    if type(value) is not int or not lo <= value <= hi:
        hint = "; a peak of 2^15 or more gives a negative frac" if (
            type(value) is int and value < lo) else ""
        raise FieldError(f"{where}: {kind} = {value!r} does not fit {field} "
                         f"({lo} .. {hi}){hint}")
    return value


def check_pf(value, where: str) -> PF:
    """``value`` ([mant, exp] or a PF) as a PF, if it is normalized and its exponent fits the
    gateware's PF_EXP_BITS-bit exponent (which would truncate it silently)."""
    mant, exp = value
    if type(mant) is not int or type(exp) is not int:
        raise FieldError(f"{where}: PF {list(value)!r} is not two integers")
    if not ((mant, exp) == (0, 0) or 1 << (N.PF_BITS - 1) <= mant < 1 << N.PF_BITS):
        raise FieldError(f"{where}: PF mantissa {mant} is not normalized to {N.PF_BITS} bits")
    if not N.PF_EXP_MIN <= exp <= N.PF_EXP_MAX:
        raise FieldError(f"{where}: PF exponent {exp} does not fit the gateware's "
                         f"{N.PF_EXP_BITS}-bit exponent ({N.PF_EXP_MIN} .. {N.PF_EXP_MAX})")
    return PF(mant, exp)


def check_lower_bound(lb: np.ndarray, where: str) -> None:
    """Lower bounds (Q0.24) must lie in 0 .. 1.0: the MLGRU computes 1 - lb unsigned."""
    bad = (lb < 0) | (lb > N.GATE_ONE)
    if np.any(bad):
        value = lb[np.argmax(bad)]
        raise FieldError(f"{where}: lower bound {value / N.GATE_ONE:.9g} outside 0 .. 1.0")


# -- the golden model's view -----------------------------------------------------------------

@dataclass(eq=False)
class BitLinearWeights:
    """One ternary layer from the image: codes [N, K] int8, the weight scale, the folded
    gain and the preceding norm's gain (int64 arrays; ``pre`` None where there is none)."""

    codes: np.ndarray
    w_scale: PF
    gain: np.ndarray
    gain_frac: int
    pre: np.ndarray | None
    pre_frac: int


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

    def bitlinears(self) -> list[tuple[str, BitLinearWeights]]:
        """(image name, weights) of every BitLinear, in image order."""
        ws = [getattr(layer, role) for layer in self.layers for role in LAYER_ROLES]
        return [(s.name, w) for s, w in
                zip(bitlinear_specs(self.config), [*ws, self.lm_head], strict=True)]


def model_from_image(image) -> ModelLayout:
    """An image (path, or (meta, tensors)) -> checked weights for the golden model.

    Raises ImageError for anything the golden model cannot hold: another numerics version,
    an invalid config, a missing tensor, a shape that disagrees with the config, a dot
    product longer than the formats are proven for, an invalid ternary code; FieldError
    (an ImageError) for a value that does not fit its gateware field.
    """
    meta, tensors = read_image(image) if isinstance(image, str | Path) else image
    where = str(image) if isinstance(image, str | Path) else "image"
    if meta.get("numerics_version") != N.NUMERICS_VERSION:
        raise ImageError(f"{where}: numerics version {meta.get('numerics_version')!r}, "
                         f"this golden model implements {N.NUMERICS_VERSION}")
    try:
        config = HGRNBitConfig.from_dict(meta["config"])
        bl = meta["bitlinear"]
        d, n = config.hidden_size, config.input_dim
        if max(d, n, config.mlp_intermediate_size) > N.MAX_K:
            raise ImageError(f"{where}: a dimension exceeds {N.MAX_K}, the longest vector "
                             "the number formats are proven for")
        expect = {s.name: s for s in sections(config)}

        def get(name):
            if name not in tensors:
                raise ImageError(f"{where}: missing section {name!r}")
            t, s = tensors[name], expect[name]
            if t.shape != s.shape or t.dtype != s.dtype:
                raise ImageError(f"{where}: section {name!r} is {t.dtype}{list(t.shape)}, "
                                 f"the config needs {s.dtype}{list(s.shape)}")
            return t

        def weights(w: BitLinearSpec) -> BitLinearWeights:
            e = bl[w.name]
            codes = unpack_codes(get(w.codes), w.k, f"{where}: {w.codes}")
            at = f"{where}: bitlinear {w.name}"
            pre, pre_frac = None, e.get("pre_frac", 0)
            if w.has_pre:
                pre = get(w.pre).astype(np.int64)
                pre_frac = check_frac("pre_frac", pre_frac, at)
            return BitLinearWeights(codes, check_pf(e["w_scale"], f"{at} w_scale"),
                                    get(w.gain).astype(np.int64),
                                    check_frac("gain_frac", e["gain_frac"], at), pre, pre_frac)

        specs = bitlinear_specs(config)
        per_layer = len(LAYER_ROLES)
        layers = []
        for i in range(config.num_hidden_layers):
            ws = {s.role: weights(s) for s in specs[i * per_layer:(i + 1) * per_layer]}
            lb = get(lower_bound_section(i)).astype(np.int64)
            check_lower_bound(lb, f"{where}: {lower_bound_section(i)}")
            layers.append(LayerWeights(
                **ws, lower_bound=lb, g_norm=get(g_norm_section(i)).astype(np.int64),
                g_norm_frac=check_frac("g_norm_frac", meta["layers"][i]["g_norm_frac"],
                                       f"{where}: layers.{i}")))
        lm_head = weights(specs[-1])
        emb = get(EMBEDDING)
        emb_frac = check_frac("embedding_frac", meta["embedding_frac"], where)
        tok = tensors.get(TOKENIZER)
        if not isinstance(tok, bytes):
            raise ImageError(f"{where}: missing or non-blob section {TOKENIZER!r}")
    except ConfigError as e:
        raise ImageError(f"{where}: {e}") from None
    except (KeyError, TypeError, IndexError, ValueError) as e:
        raise ImageError(f"{where}: meta is missing or has a bad entry ({e!r})") from None
    layout = ModelLayout(config, emb, emb_frac, layers, lm_head, tok, 0)
    layout.ternary_weights = sum(w.codes.size for _, w in layout.bitlinears())
    return layout
