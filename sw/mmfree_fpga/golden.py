"""The golden model: exactly what the hardware computes, bit for bit, in NumPy integers.

It reads the exported image (``layout.model_from_image``), never the float model, so it
sees what the board sees. One function per hardware unit, each the contract for its
gateware test:

==================  =====================================================================
``ternary_matvec``  ternary accumulate engine: int8 activations x {-1,0,1} codes -> int32
``rms_rsqrt``       RMSNorm datapath, first half: 1 / rms(u * g_pre) as a PF scalar
``absmax_quantize`` RMSNorm datapath, second half: int8 codes of u * G and max|u * G|
``dequantize``      accumulators x (activation scale x weight scale) -> X
``mlgru``           MLGRU state unit: gates, state update, output gate
``glu``             elementwise unit: silu(gate) * up
``residual_add``    elementwise unit: saturating add
``embed``           embedding table lookup
``argmax``          greedy choice over the logits
==================  =====================================================================

NUMERICS.md derives each step and the identity that lets the RMSNorms' ``1/rms`` factors
fold into one per-token scale. Vectors are ``int64`` arrays holding values of the widths
``numerics.py`` defines; per-token scalars are Python ``int`` / :class:`~numerics.PF`.
"""

from __future__ import annotations

import math

import numpy as np

from . import numerics as N
from .layout import BitLinearWeights, ModelLayout, model_from_image
from .numerics import PF

# -- units -----------------------------------------------------------------------------------

def ternary_matvec(codes: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``acc[n] = sum_k codes[n, k] * q[k]``: add, subtract or skip; no multiplier needed."""
    acc = codes.astype(np.int64) @ q.astype(np.int64)
    assert np.all(np.abs(acc) < 1 << (N.ACC_BITS - 1))
    return acc


def rms_rsqrt(u: np.ndarray, g_pre: np.ndarray | None, g_frac: int = 0,
              sqrt_k: PF | None = None) -> PF:
    """``1 / sqrt(mean((u * g_pre)^2))`` for ``u`` in X, as a PF in real units.

    ``w = u * g_pre`` is rescaled to at most 23 significant bits (exactly, when it already
    fits) so that the sum of K squares fits 64 bits for K <= 2^15. ``sqrt_k`` is the
    per-length constant ``sqrt_pf(len(u))``, which the unit takes from the program (the ISA's
    RMS immediate); another value scales the result as the unit would.
    """
    w = u if g_pre is None else N.rshift_round(u * g_pre, g_frac)
    peak = int(np.max(np.abs(w))) if w.size else 0
    if peak == 0:
        return N.PF_ZERO
    e = max(0, peak.bit_length() - N.SQ_BITS)
    w = N.rshift_round(w, e)
    s = int(np.dot(w, w))
    # mean = s * 4^e / 2^(2 X_FRAC) / K   ->   1/sqrt(mean) = sqrt(K) 2^(X_FRAC - e) / sqrt(s)
    sk = sqrt_pf(len(u)) if sqrt_k is None else sqrt_k
    return N.pf_mul(N.rsqrt(s), PF(sk.mant, sk.exp + N.X_FRAC - e))


def sqrt_pf(k: int, exp: int = 0) -> PF:
    """sqrt(K) * 2^exp: a per-length constant (the sequencer's program carries it)."""
    return N.pf_normalize(math.isqrt(k << 32), exp - 16)


def absmax_quantize(u: np.ndarray, g: np.ndarray, g_frac: int) -> tuple[np.ndarray, PF]:
    """int8 codes ``round(127 * v / max|v|)`` of ``v = u * G`` and ``max|v|`` (real units).

    ``v`` is rescaled to 24 significant bits (``m`` into [2^23, 2^24]) so one 24-bit
    reciprocal serves every element: ``q = round(v * 127 * recip(m) / 2^47)``.
    """
    v = u * g
    peak = int(np.max(np.abs(v))) if v.size else 0
    if peak == 0:
        return np.zeros_like(u), N.PF_ZERO
    e = peak.bit_length() - N.NORM_BITS
    v = N.rshift_round(v, e)
    m = N.rshift_round(peak, e)
    r = N.recip24(m)
    q = np.clip(N.rshift_round(v * (N.ACT_MAX * r), 47), N.ACT_MIN, N.ACT_MAX)
    return q, N.pf_normalize(m, e - N.X_FRAC - g_frac)


def dequantize(acc: np.ndarray, act_max: PF, inv_rms: PF, w_scale: PF) -> np.ndarray:
    """``acc * max|v| * (1/rms) * (s_w / 127)`` into X (Q15.16), saturating."""
    s = N.pf_mul(N.pf_mul(act_max, inv_rms), w_scale)
    return N.pf_scale(acc, s._replace(exp=s.exp + N.X_FRAC))


def mlgru(zi, zf, zg, h, lb, gn, gn_frac):
    """One MLGRU step on X vectors. Returns (o, new h).

    ``1 - f = (1 - lb) * sigma(-zf)`` is computed directly: near f = 1 (long memory) the
    complement carries the information and keeps full relative precision in Q0.24.
    """
    one_minus_f = N.rshift_round((N.GATE_ONE - lb) * N.sigmoid(-zf), N.GATE_FRAC)
    f = N.GATE_ONE - one_minus_f
    c = N.rshift_round(N.silu(zi) * one_minus_f, N.GATE_FRAC)
    h = N.saturate(N.rshift_round(f * h, N.GATE_FRAC) + c)
    # g_norm's own 1/rms(g) cancels in o_proj's norm (NUMERICS.md); its gain stays.
    gg = N.saturate(N.rshift_round(zg * gn, gn_frac))
    o = N.saturate(N.rshift_round(gg * N.silu(h), N.X_FRAC))
    return o, h


def glu(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    return N.saturate(N.rshift_round(N.silu(gate) * up, N.X_FRAC))


def residual_add(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return N.saturate(x + y)


def embed(table: np.ndarray, frac: int, token: int) -> np.ndarray:
    return N.rshift_round(table[token].astype(np.int64), frac - N.X_FRAC)


def argmax(logits: np.ndarray) -> int:
    """The first index of the largest logit (ties go to the lower token id)."""
    return int(np.argmax(logits))


def topk(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest logits, largest first, ties to the lower token id: (ids, logits).

    ``topk(l, 1)[0][0] == argmax(l)``. The core returns these per token and the host samples
    from them, so every backend gives the same candidates.
    """
    if not 1 <= k <= len(logits):
        raise ValueError(f"top-k needs 1 <= k <= {len(logits)}, got {k}")
    ids = np.lexsort((np.arange(len(logits)), -logits.astype(np.int64)))[:k]
    return ids, logits[ids]


# -- the token step ----------------------------------------------------------------------------

class GoldenModel:
    """The token step composed from the units, with the recurrent state kept on chip."""

    def __init__(self, image, fast: bool = True):
        self.layout = image if isinstance(image, ModelLayout) else model_from_image(image)
        self.config = self.layout.config
        self.fast = fast
        # A faster, equal path: float32 BLAS is exact here (|acc| < 2^24, tested equal).
        self._codes_f32 = {}
        for _, w in self.layout.bitlinears():
            assert w.codes.shape[1] * 128 < 1 << 24
            self._codes_f32[id(w)] = w.codes.astype(np.float32)
        self.reset()

    def reset(self) -> None:
        n = self.config.input_dim
        self.h = [np.zeros(n, dtype=np.int64) for _ in range(self.config.num_hidden_layers)]

    def bitlinear(self, w: BitLinearWeights, u: np.ndarray, inv_rms: PF | None = None):
        if inv_rms is None:
            inv_rms = rms_rsqrt(u, w.pre, w.pre_frac)
        q, act_max = absmax_quantize(u, w.gain, w.gain_frac)
        return dequantize(self.matvec(w, q), act_max, inv_rms, w.w_scale)

    def matvec(self, w: BitLinearWeights, q: np.ndarray) -> np.ndarray:
        """``ternary_matvec(w.codes, q)``, by float32 BLAS when ``fast``."""
        if self.fast:
            return (self._codes_f32[id(w)] @ q.astype(np.float32)).astype(np.int64)
        return ternary_matvec(w.codes, q)

    def step(self, token: int, trace: list | None = None) -> np.ndarray:
        """Advance one token; returns the logits in X (Q15.16) as int64. ``trace``, if given,
        gets a copy of x after each layer (what the compiled program's TRACEs report)."""
        L = self.layout
        if not 0 <= token < self.config.vocab_size:
            raise ValueError(f"token {token} outside the vocabulary")
        x = embed(L.embedding, L.embedding_frac, token)
        for i, layer in enumerate(L.layers):
            r = rms_rsqrt(x, layer.i_proj.pre, layer.i_proj.pre_frac)  # shared by i, f, g
            zi = self.bitlinear(layer.i_proj, x, r)
            zf = self.bitlinear(layer.f_proj, x, r)
            zg = self.bitlinear(layer.g_proj, x, r)
            o, self.h[i] = mlgru(zi, zf, zg, self.h[i], layer.lower_bound,
                                 layer.g_norm, layer.g_norm_frac)
            x = residual_add(x, self.bitlinear(layer.o_proj, o))
            gu = self.bitlinear(layer.gate_proj, x)
            gate, up = np.split(gu, 2)
            x = residual_add(x, self.bitlinear(layer.down_proj, glu(gate, up)))
            if trace is not None:
                trace.append(x.copy())
        return self.bitlinear(L.lm_head, x)


class GoldenBackend:
    """The golden model behind the generation loop (``generate.py``): logits as floats."""

    name = "golden"

    def __init__(self, image, fast: bool = True):
        self.model = GoldenModel(image, fast=fast)
        self.config = self.model.config

    def reset(self) -> None:
        self.model.reset()

    def step(self, token: int) -> np.ndarray:
        return self.model.step(token).astype(np.float64) / (1 << N.X_FRAC)
