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


# -- Packed weights: 1.6 bits per code, 5 codes a byte, base 3 --------------------------------
# NUMERICS.md, "Packed weights (1.6 bits per code)". The 2-bit codes above stay the engine's
# word format; this is how words may travel from SDRAM: byte = sum_i t_i * 3^i (i = 0..4),
# t_i = value_i + 1 in {0, 1, 2}, the group's first code in the least significant digit.
# Bytes 243..255 hold no five trits: the packer never emits them, the host never writes
# them, the readers here refuse them (strict) and the gateware (hw/mmfree_hw/tritpack.py)
# decodes each to five CODE_ZERO codes, so a corrupted byte adds nothing to a dot product.
TRITS_PER_BYTE = 5
TRIT_BYTE_LIMIT = 3 ** TRITS_PER_BYTE                  # 243: bytes >= this are invalid
BASE3_ZERO_BYTE = sum(3 ** i for i in range(TRITS_PER_BYTE))   # 121: five zero codes (pad)
_TRIT_CODES = np.array([CODE_NEG, CODE_ZERO, CODE_POS], dtype=np.uint8)   # trit -> code


def _base3_codes(b: int) -> list[int]:
    if b >= TRIT_BYTE_LIMIT:
        return [CODE_ZERO] * TRITS_PER_BYTE
    return [int(_TRIT_CODES[(b // 3 ** i) % 3]) for i in range(TRITS_PER_BYTE)]


# Every byte's five codes, [256, 5] uint8 (rows 243..255: CODE_ZERO, the gateware's choice).
BASE3_CODES = np.array([_base3_codes(b) for b in range(256)], dtype=np.uint8)
# The same as 10-bit fields, code i at bits [2i, 2i+2) (the engine word's lane order): the
# gateware's decode table, indexed by the byte.
BASE3_DECODE_TABLE = [sum(int(c) << (CODE_BITS * i) for i, c in enumerate(row))
                      for row in BASE3_CODES]


def _as_codes(x: np.ndarray, values: bool) -> np.ndarray:
    """Codes (``values=False``) or ternary values -> ternary values, refusing anything else."""
    x = np.asarray(x)
    if values:
        if np.any((x < -1) | (x > 1)):
            raise ValueError("ternary values must be -1, 0 or 1")
        return x.astype(np.int64)
    if np.any(x == CODE_INVALID):
        raise ValueError("invalid ternary code 0b10")
    if np.any((x < 0) | (x > 0b11)):
        raise ValueError("2-bit codes must be 0b00, 0b01 or 0b11")
    return np.where(x == CODE_NEG, -1, x).astype(np.int64)


def pack_base3(x: np.ndarray, *, values: bool = False) -> np.ndarray:
    """Codes ``[..., n]`` (or ternary values with ``values=True``) -> bytes
    ``[..., ceil(n/5)]``, 5 codes a byte in base 3 (NUMERICS.md, "Packed weights").

    Byte ``j`` holds codes ``5j .. 5j+4``: ``sum_i (v_{5j+i} + 1) * 3^i``, the first code in
    the least significant digit. The last byte is padded with CODE_ZERO (digit 1), so every
    byte is < 243. The invalid code 0b10 (and any value outside the codes, or outside
    {-1, 0, 1} with ``values=True``) raises ``ValueError``.
    """
    t = _as_codes(x, values) + 1                           # trits 0, 1, 2
    n = t.shape[-1]
    m = -(-n // TRITS_PER_BYTE)
    pad = np.ones((*t.shape[:-1], m * TRITS_PER_BYTE - n), dtype=np.int64)
    g = np.concatenate([t, pad], axis=-1).reshape(*t.shape[:-1], m, TRITS_PER_BYTE)
    weights = 3 ** np.arange(TRITS_PER_BYTE, dtype=np.int64)
    return (g * weights).sum(axis=-1).astype(np.uint8)


def unpack_base3(b: np.ndarray, n: int | None = None, *, values: bool = False,
                 strict: bool = True) -> np.ndarray:
    """Bytes ``[..., m]`` -> their codes ``[..., n]`` (uint8; int8 ternary values with
    ``values=True``), the inverse of :func:`pack_base3`. ``n`` (default ``5m``) drops the
    pad codes; it must need exactly ``m`` bytes. A byte >= 243 raises ``ValueError``; with
    ``strict=False`` it decodes to five CODE_ZERO codes, as the gateware does.
    """
    b = np.asarray(b)
    if np.any((b < 0) | (b > 0xFF)):
        raise ValueError("bytes must be 0..255")
    b = b.astype(np.uint8)
    if strict and np.any(b >= TRIT_BYTE_LIMIT):
        raise ValueError(f"byte >= {TRIT_BYTE_LIMIT} holds no five trits")
    m = b.shape[-1]
    codes = BASE3_CODES[b].reshape(*b.shape[:-1], m * TRITS_PER_BYTE)
    if n is not None:
        if -(-n // TRITS_PER_BYTE) != m:
            raise ValueError(f"{n} codes do not take {m} bytes")
        codes = codes[..., :n]
    return decode_codes(codes) if values else codes


def packed_word_bytes(lanes: int) -> int:
    """Bytes of one packed weight word of ``lanes`` codes: ``ceil(lanes / 5)``."""
    if lanes < 1:
        raise ValueError("a word has at least one lane")
    return -(-lanes // TRITS_PER_BYTE)


def packed_word_beats(lanes: int, beat_bits: int = 16) -> int:
    """Memory beats of one packed word: its :func:`packed_word_bytes` rounded up to whole
    ``beat_bits`` beats (each word starts on a beat, so the streamer can address words).
    128 lanes, 16-bit beats: 26 bytes, 13 beats (16 at 2 bits a code)."""
    if beat_bits < 8 or beat_bits % 8:
        raise ValueError("a beat is whole bytes")
    return -(-packed_word_bytes(lanes) * 8 // beat_bits)


def word_beats(lanes: int, packed: bool, beat_bits: int = 16) -> int:
    """Memory beats one weight word of ``lanes`` codes takes: :func:`packed_word_beats` in
    the 1.6-bit format, else its ``CODE_BITS * lanes`` bits, which must be whole beats.
    The one definition the SDRAM store, its configuration and the bench use."""
    if packed:
        return packed_word_beats(lanes, beat_bits)
    if (CODE_BITS * lanes) % beat_bits:
        raise ValueError(f"a {CODE_BITS * lanes}-bit word is not whole {beat_bits}-bit beats")
    return CODE_BITS * lanes // beat_bits


def pack_words_base3(words: np.ndarray, lanes: int, beat_bits: int = 16) -> np.ndarray:
    """Weight words -> the packed byte stream the SDRAM holds (uint8, 1-D).

    ``words`` is ``[n_words, lanes]`` 2-bit codes, or ``[n_words, lanes / 4]`` bytes of the
    2-bit layout (:func:`engine_words`' output), told apart by the last axis. Each word
    becomes :func:`packed_word_bytes` bytes (:func:`pack_base3`), then
    :data:`BASE3_ZERO_BYTE` up to :func:`packed_word_beats` whole beats; word ``w`` starts
    at byte ``w * beats * beat_bits / 8``. A beat is its bytes little-endian (byte 0 at bits
    [0, 8)): :func:`packed_beat_ints` gives them as integers.
    """
    words = np.asarray(words)
    if words.ndim != 2:
        raise ValueError("words must be [n_words, lanes] codes or [n_words, lanes/4] bytes")
    if words.shape[1] == lanes:
        codes = words
    elif lanes % CODES_PER_BYTE == 0 and words.shape[1] == lanes // CODES_PER_BYTE:
        codes = unpack_code_bytes(words)
    else:
        raise ValueError(f"a word of {lanes} lanes is {lanes} codes or {lanes // 4} bytes, "
                         f"not {words.shape[1]}")
    slot = packed_word_beats(lanes, beat_bits) * beat_bits // 8
    out = np.full((words.shape[0], slot), BASE3_ZERO_BYTE, dtype=np.uint8)
    out[:, :packed_word_bytes(lanes)] = pack_base3(codes)
    return out.reshape(-1)


def unpack_words_base3(stream: np.ndarray, lanes: int, beat_bits: int = 16, *,
                       strict: bool = True) -> np.ndarray:
    """The packed byte stream -> ``[n_words, lanes]`` 2-bit codes (uint8), the inverse of
    :func:`pack_words_base3` (:func:`pack_code_bytes` turns them into the 2-bit layout's
    bytes). The pad bytes after each word's :func:`packed_word_bytes` are ignored, as in the
    gateware; ``strict`` (default) refuses any byte >= 243, pad bytes included, and with
    ``strict=False`` such bytes decode as in the gateware (five CODE_ZERO codes)."""
    s = np.asarray(stream).reshape(-1)
    slot = packed_word_beats(lanes, beat_bits) * beat_bits // 8
    if s.size % slot:
        raise ValueError(f"{s.size} bytes are not whole words of {slot} bytes")
    if strict:
        unpack_base3(s)                                    # range and validity checks only
    w = s.reshape(-1, slot)[:, :packed_word_bytes(lanes)]
    return unpack_base3(w, lanes, strict=strict)


def packed_beat_ints(stream: np.ndarray, beat_bits: int = 16) -> list[int]:
    """The packed byte stream as one Python int per beat, its bytes little-endian (for
    simulators and tests)."""
    s = np.asarray(stream, dtype=np.uint8).reshape(-1)
    nb = beat_bits // 8
    if beat_bits % 8 or s.size % nb:
        raise ValueError("the stream is not whole beats")
    return [int.from_bytes(s[i:i + nb].tobytes(), "little") for i in range(0, s.size, nb)]
