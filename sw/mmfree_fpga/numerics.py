"""The integer number formats and approximations: the one definition the golden model, the
export and (later) the gateware all import. NUMERICS.md explains each choice; the section
names below match its headings.

Everything here is integer arithmetic. Vectors are NumPy ``int64`` arrays holding values of
the stated widths; per-token scalars are Python ``int``s. Rounding is *round half up*,
``floor(x + 1/2)``, everywhere (:func:`rshift_round`): an adder and an arithmetic shift in
hardware.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

NUMERICS_VERSION = 1

# -- Vector format "X": residual stream and every dequantized vector --------------------------
X_BITS = 32                    # int32 two's complement ...
X_FRAC = 16                    # ... with 16 fractional bits (Q15.16): range +-32768
X_MIN, X_MAX = -(1 << (X_BITS - 1)), (1 << (X_BITS - 1)) - 1

# -- Activations and accumulators ------------------------------------------------------------
ACT_MIN, ACT_MAX = -128, 127   # int8 codes, absmax per token (127 at the largest magnitude)
ACC_BITS = 32                  # |acc| <= 128 * K <= 2^22 at MAX_K: int32 has room to spare
MAX_K = 1 << 15                # longest dot product / norm length the formats are proven for

# -- Ternary weight codes: 2 bits each ------------------------------------------------------
CODE_BITS = 2
CODE_ZERO, CODE_POS, CODE_NEG = 0b00, 0b01, 0b11   # two's complement of 0, +1, -1 in 2 bits
CODE_INVALID = 0b10                                # never written; refused when read

# -- Gains (per-channel RMSNorm weights, folded): int16 block floating point ------------------
GAIN_BITS = 16                 # value = g / 2^frac, one frac per vector, chosen at export
# The gateware takes a gain's frac unsigned: the norm units' field (pre_frac, gain_frac; the
# embedding's frac, same block format) is GAIN_FRAC_BITS wide, the MLGRU's gn_frac
# GN_FRAC_BITS. The exporter and the image reader check every frac against its field.
GAIN_FRAC_BITS = 6
GAIN_FRAC_MAX = (1 << GAIN_FRAC_BITS) - 1     # 0 .. 63
GN_FRAC_BITS = 5
GN_FRAC_MAX = (1 << GN_FRAC_BITS) - 1         # 0 .. 31

# -- Gate format: sigmoid outputs, forget gates, lower bounds --------------------------------
GATE_FRAC = 24                 # unsigned Q0.24
GATE_ONE = 1 << GATE_FRAC

# -- Sigmoid table --------------------------------------------------------------------------
SIG_RANGE = 16                 # table covers z in [-16, 16]; saturates outside
SIG_STEP_LOG2 = 5              # knots every 1/32
SIG_SHIFT = X_FRAC - SIG_STEP_LOG2            # fractional bits between knots (11)
SIG_KNOTS = 2 * SIG_RANGE * (1 << SIG_STEP_LOG2) + 1   # 1025
SIGMOID_TABLE = np.array(
    [round(GATE_ONE / (1 + math.exp(-(k / (1 << SIG_STEP_LOG2) - SIG_RANGE))))
     for k in range(SIG_KNOTS)] + [GATE_ONE], dtype=np.int64)   # +1 sentinel knot

# -- Scalars: pseudo-float ------------------------------------------------------------------
PF_BITS = 16                   # mantissa in [2^15, 2^16) (or 0); value = mant * 2^exp
PF_EXP_BITS = 8                # the exponent on the gateware's wires: signed, truncated there
PF_EXP_MIN, PF_EXP_MAX = -(1 << (PF_EXP_BITS - 1)), (1 << (PF_EXP_BITS - 1)) - 1

# -- Normalization of a vector before squaring / quantizing -----------------------------------
NORM_BITS = 24                 # vectors are rescaled to 24 significant bits to quantize ...
SQ_BITS = 23                   # ... and to at most 23 to square: K * (2^23)^2 < 2^63


class PF(NamedTuple):
    """A positive scalar ``mant * 2**exp`` with a 16-bit normalized mantissa (or zero)."""

    mant: int
    exp: int

    def value(self) -> float:
        return math.ldexp(self.mant, self.exp)


PF_ZERO = PF(0, 0)


def rshift_round(x, n: int):
    """``round(x / 2^n)``, halves rounded up; ``n <= 0`` shifts left (exact)."""
    if n <= 0:
        return x << -n
    return (x + (1 << (n - 1))) >> n


def saturate(x, bits: int = X_BITS):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if isinstance(x, np.ndarray):
        return np.clip(x, lo, hi)
    return min(max(x, lo), hi)


def pf_normalize(v: int, exp: int = 0) -> PF:
    """The integer ``v * 2^exp`` (v >= 0) as a PF, the mantissa rounded to 16 bits."""
    if v < 0:
        raise ValueError("PF holds non-negative values")
    if v == 0:
        return PF_ZERO
    shift = v.bit_length() - PF_BITS
    mant = rshift_round(v, shift)
    if mant >> PF_BITS:                     # rounding carried into a 17th bit
        mant >>= 1
        shift += 1
    return PF(mant, exp + shift)


def pf_from_float(x: float) -> PF:
    """Export-time only (the host computes these from float weights)."""
    if not (x >= 0 and math.isfinite(x)):
        raise ValueError(f"PF needs a finite non-negative value, got {x}")
    if x == 0:
        return PF_ZERO
    m, e = math.frexp(x)                    # x = m * 2^e, m in [0.5, 1)
    return pf_normalize(round(m * (1 << 40)), e - 40)


def pf_mul(a: PF, b: PF) -> PF:
    return pf_normalize(a.mant * b.mant, a.exp + b.exp)


def pf_scale(x: np.ndarray, s: PF) -> np.ndarray:
    """``saturate(round(x * s))``: an int32 vector times a PF (one 32x16 multiply, a shift)."""
    if s.mant == 0:
        return np.zeros_like(x)
    if s.exp >= 16:       # |x * mant| * 2^16 >= 2^31 for any x != 0: saturated (or 0)
        return np.where(x > 0, X_MAX, np.where(x < 0, X_MIN, 0)).astype(x.dtype)
    if s.exp >= 0:
        return saturate(x * (s.mant << s.exp))           # < 2^31 * 2^16 * 2^15
    # |x * mant| < 2^47, so any shift of 48 or more rounds to 0: clamp it (hardware too)
    return saturate(rshift_round(x * s.mant, min(-s.exp, 48)))


# -- Reciprocal ------------------------------------------------------------------------------
# m in [2^23, 2^24]: the table is indexed by the 8 bits after the leading one and holds
# 2^47 / (bin centre); one Newton step r <- r * (2 - m r / 2^47) squares the relative error.
RECIP_TABLE = [round(2 ** 47 / ((256 + i + 0.5) * 2 ** 15)) for i in range(257)]


def recip24(m: int) -> int:
    """``~ 2^47 / m`` for ``2^23 <= m <= 2^24`` (relative error < 2^-17)."""
    if not (1 << 23) <= m <= (1 << 24):
        raise ValueError("recip24 input out of range")
    r = RECIP_TABLE[(m >> 15) - 256]
    return (r * ((1 << 48) - m * r)) >> 47


# -- Reciprocal square root ------------------------------------------------------------------
# s is shifted by an even amount into a in [2^30, 2^32); the table, indexed by a >> 24
# (64..255), holds 2^47 / sqrt(bin centre); one Newton step y <- y (3 - a y^2 / 2^94) / 2.
RSQRT_TABLE = [round(2 ** 47 / math.sqrt((i + 0.5) * 2 ** 24)) for i in range(256)]


def rsqrt(s: int) -> PF:
    """``~ 1 / sqrt(s)`` for an integer ``s > 0`` (relative error < 2^-15)."""
    if s <= 0:
        raise ValueError("rsqrt of a non-positive value")
    k = (s.bit_length() - 31) // 2          # a = s / 4^k lands in [2^30, 2^32)
    a = rshift_round(s, 2 * k) if k > 0 else s << (-2 * k)
    if a >> 32:                             # rounding carried: take one more even step
        k += 1
        a = rshift_round(s, 2 * k)
    y = RSQRT_TABLE[a >> 24]
    y = (y * (3 * (1 << 94) - a * y * y)) >> 95
    return pf_normalize(y, -47 - k)


# -- Ternary codes and the engine's weight words ----------------------------------------------

def encode_codes(t: np.ndarray) -> np.ndarray:
    """Ternary values {-1, 0, 1} -> their 2-bit codes (uint8, one code per element)."""
    t = np.asarray(t)
    if np.any((t < -1) | (t > 1)):
        raise ValueError("ternary values must be -1, 0 or 1")
    return (t.astype(np.int64) & 0b11).astype(np.uint8)     # 0 -> 00, 1 -> 01, -1 -> 11


def decode_codes(c: np.ndarray) -> np.ndarray:
    """2-bit codes -> ternary values (int8); the invalid code 0b10 raises ``ValueError``."""
    c = np.asarray(c)
    if np.any(c == CODE_INVALID):
        raise ValueError("invalid ternary code 0b10")
    return np.where(c == CODE_NEG, -1, c).astype(np.int8)


CODES_PER_BYTE = 8 // CODE_BITS


def pack_code_bytes(c: np.ndarray) -> np.ndarray:
    """2-bit codes ``[..., 4m]`` -> bytes ``[..., m]``: 4 codes a byte, the first in the low
    bits (the order of the image's codes sections and of the engine's words)."""
    c = np.asarray(c, dtype=np.uint8)
    if c.shape[-1] % CODES_PER_BYTE:
        raise ValueError(f"{c.shape[-1]} codes do not fill whole bytes")
    p = c.reshape(*c.shape[:-1], -1, CODES_PER_BYTE)
    out = np.zeros(p.shape[:-1], dtype=np.uint8)
    for i in range(CODES_PER_BYTE):
        out |= p[..., i] << (CODE_BITS * i)
    return out


def unpack_code_bytes(b: np.ndarray) -> np.ndarray:
    """Bytes ``[..., m]`` -> their 2-bit codes ``[..., 4m]`` (uint8), invalid ones included."""
    b = np.asarray(b, dtype=np.uint8)
    mask = (1 << CODE_BITS) - 1
    fields = np.stack([(b >> (CODE_BITS * i)) & mask for i in range(CODES_PER_BYTE)], axis=-1)
    return fields.reshape(*b.shape[:-1], -1)


def engine_words(t: np.ndarray, lanes: int) -> np.ndarray:
    """A ternary matrix ``t`` [N, K] in the order the engine streams it, as bytes.

    The engine computes ``lanes`` output rows at once, one column per cycle: word
    ``g * K + k`` holds column ``k`` of row group ``g`` (rows ``g*lanes ... g*lanes+lanes-1``),
    lane ``l``'s code at bits ``[2l, 2l+2)``. Rows past ``N`` are padded with zero codes.
    Returns uint8 ``[ceil(N/lanes) * K, lanes/4]``, each word's bytes little-endian
    (``int.from_bytes(row, "little")`` is the word as the gateware sees it).
    """
    if lanes % CODES_PER_BYTE:
        raise ValueError("lanes must be a multiple of 4 (a word is whole bytes)")
    n, k = t.shape
    groups = -(-n // lanes)
    codes = np.zeros((groups * lanes, k), dtype=np.uint8)
    codes[:n] = encode_codes(t)
    # [groups, lanes, K] -> [groups, K, lanes]: one word per (group, column)
    return pack_code_bytes(codes.reshape(groups, lanes, k).transpose(0, 2, 1)
                           .reshape(groups * k, lanes))


def engine_word_ints(t: np.ndarray, lanes: int) -> list[int]:
    """:func:`engine_words` as one Python int per word (for simulators and tests)."""
    return [int.from_bytes(w.tobytes(), "little") for w in engine_words(t, lanes)]


# -- Sigmoid and SiLU ------------------------------------------------------------------------

def sigmoid(z: np.ndarray) -> np.ndarray:
    """sigma(z) in Q0.24 for z in X (Q15.16): table of 1025 knots + linear interpolation.

    Max absolute error 1.2e-5 (interpolation) + 3e-8 (knot rounding). Where ``1 - f`` needs
    relative precision (z < 0) the relative error is < 1.3e-3 down to z = -8 and < 5 % down
    to z = -12, below which Q0.24's resolution (6e-8) dominates.
    """
    t = np.clip(z, -SIG_RANGE << X_FRAC, SIG_RANGE << X_FRAC) + (SIG_RANGE << X_FRAC)
    idx = t >> SIG_SHIFT
    frac = t & ((1 << SIG_SHIFT) - 1)
    lo = SIGMOID_TABLE[idx]
    hi = SIGMOID_TABLE[idx + 1]
    return lo + rshift_round((hi - lo) * frac, SIG_SHIFT)


def silu(z: np.ndarray) -> np.ndarray:
    """z * sigma(z): X in, X out (one 32x25 multiply per element)."""
    return rshift_round(z * sigmoid(z), GATE_FRAC)


def gain_block(g: np.ndarray) -> tuple[np.ndarray, int]:
    """Export-time: float gains -> (int16 values, frac) using the full 16-bit range.

    ``frac`` is at most 30; a peak of 2^15 or more gives ``frac < 0``, which is a valid
    number here but fits no gateware field (``GAIN_FRAC_BITS``, ``GN_FRAC_BITS``): the
    exporter checks it against the field the value travels in.
    """
    peak = float(np.max(np.abs(g))) if g.size else 0.0
    if not math.isfinite(peak):
        raise ValueError("non-finite gain")
    frac = 14 if peak == 0 else min(30, 14 - math.floor(math.log2(peak)))
    q = np.clip(np.round(g.astype(np.float64) * 2.0 ** frac), -32768, 32767)
    return q.astype(np.int16), frac
