"""cocotb bench: the RMSNorm / quantize datapath (RmsRsqrt, AbsmaxQuantize, Dequantize)
against golden.rms_rsqrt / absmax_quantize / dequantize, bit for bit, with corner-case and
random vectors, random gaps on every input stream and random back-pressure on every
output stream.

MMF_PARAMS picks the unit ("unit": "rms" | "quant" | "dequant"), the gap/back-pressure
pattern, how many elements to send (``transactions``), the random vector lengths
(``lengths``; ``max_k`` adds vectors of length 1 and max_k) or accumulator counts
(``count_max``, ``count_bits``), whether to add the default model's full-size vectors
(``full``: K = 256 and 768; for Dequantize 256, 768, 1536 and 4096 accumulators), and:

- ``sweep``: that many short vectors (K = 1 .. 4) that walk every bit length, each
  asserted to occur: for RmsRsqrt the peak of ``w = u * a`` (0 .. 47 bits: every rescale
  shift e, straddling SQ_BITS) and the sum of squares (0 .. 49 bits, all a K <= 4 vector
  can reach); for AbsmaxQuantize the peak of ``u * g`` (0 .. 47 bits: every rescale shift,
  -23 .. 23) and, for every shift > 0, a peak that rounds up to m = 2^24. For Dequantize
  (``sweep``: true) one scales beat per combined shift ``S.exp + 16`` over everything the
  8-bit PF exponents reach (-338 .. 429), every input exponent at -128 and 127, and
  ``count = 0`` beats (which the docstring says are skipped).
- ``long`` (RmsRsqrt at max_k = 2^15): sums of squares of every bit length from 50 to 62,
  the 62-bit accumulator's limit (K = 2^15 elements at the largest |w'| = 2^23), and
  ``s`` just below 2^(32 + 2j) up to j = 14 (rsqrt's even shift rounds up).

The ``timing`` test asserts each unit's latency and throughput as its docstring states
them, under no gaps and no back-pressure (see ``timing``).
"""

import math
import random

import cocotb
import numpy as np
from amaranth.lib import data
from cocotb.triggers import RisingEdge
from tb import (
    PATTERNS,
    StreamSink,
    StreamSource,
    pack,
    params,
    report,
    start,
    to_signed,
    unpack,
)

from mmfree_fpga import golden as G
from mmfree_fpga import numerics as N
from mmfree_hw.norm import Code, Dequantize, Element, QuantConfig, RmsConfig, scales_layout
from mmfree_hw.scalar import PFloat

FRACS = [0, 1, 8, 12, 14, 15, 16, 20, 30, 31, 47, 48, 63]
FULL_SIZES = [256, 768]        # the default model's hidden and intermediate sizes


def pf_word(pf) -> int:
    return pack(PFloat, mant=pf.mant, exp=pf.exp)


def pf_of(word: int) -> N.PF:
    f = unpack(PFloat, word)
    return N.PF(f["mant"], f["exp"])


# -- vectors for the two norm units ------------------------------------------------------------

def squares_to(target: int, k: int) -> list[int]:
    """Integers (at most k, each < 2^23) whose squares sum to ``target``: greedy."""
    out = []
    while target:
        w = math.isqrt(target)
        out.append(w)
        target -= w * w
    assert len(out) <= k and max(out) < 1 << N.SQ_BITS
    return out + [0] * (k - len(out))


def corner_vectors(rng: random.Random, k: int) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """(u, g, frac) corner cases; rms_rsqrt reads g = None where every gain is 1, frac 0."""
    vec = []

    def add(u, g=None, frac=0):
        u = np.asarray(u, dtype=np.int64)
        g = np.ones(len(u), dtype=np.int64) if g is None else np.asarray(g, dtype=np.int64)
        vec.append((u, g, frac))

    def fill(value):
        return [value] * k

    add(fill(0))
    add(fill(0), [rng.randrange(-32768, 32768) for _ in range(k)], 14)
    for value in (N.X_MAX, N.X_MIN, 1, -1):
        add(fill(value))
    add([N.X_MAX if j % 2 else N.X_MIN for j in range(k)])
    add([(1 if j % 2 else -1) for j in range(k)])
    for value in (1, -1, N.X_MIN, N.X_MAX, 12345):
        u = [0] * k
        u[rng.randrange(k)] = value
        add(u)
    for gain in (32767, -32768, -32767):
        for frac in (0, 15, 30, 48, 63):
            add([rng.choice((N.X_MAX, N.X_MIN, rng.randrange(N.X_MIN, N.X_MAX)))
                 for _ in range(k)], [gain] * k, frac)
    # Peaks straddling the rescale boundaries: SQ_BITS (23) for rms, NORM_BITS (24) for
    # quantize, and the roundings that carry (2^24 - 1 -> 2^23 when squaring; 2^25 - 1
    # -> m = 2^24, the reciprocal table's last entry).
    for peak in ((1 << 22), (1 << 23) - 1, 1 << 23, (1 << 23) + 1, (1 << 24) - 1, 1 << 24,
                 (1 << 24) + 1, (1 << 25) - 1, 1 << 25, (1 << 25) + 1, (3 << 23) - 1):
        u = [rng.randrange(-peak, peak + 1) for _ in range(k)]
        u[rng.randrange(k)] = rng.choice((peak, -peak))
        add(u)
    # Sums of squares just below 2^32 * 4^j: rsqrt's even shift rounds up to 2^32.
    for j in (1, 2, 5, 7):
        for below in (1, 4 ** j // 2):
            s = (1 << (32 + 2 * j)) - below
            assert N.rshift_round(s, 2 * j) >> 32
            add(squares_to(s, k))
    return vec


def random_vector(rng: random.Random, k: int) -> tuple[np.ndarray, np.ndarray, int]:
    style = rng.random()
    scale = rng.choice([0, 1, 3, 8, 16, 20, 22, 23, 24, 25, 26, 31])
    lo, hi = -(1 << scale), (1 << scale) - (1 if scale == 31 else 0)
    u = np.array([rng.randint(lo, hi) for _ in range(k)], dtype=np.int64)
    if style < 0.15:
        g = np.ones(k, dtype=np.int64)
        frac = 0
    else:
        gs = rng.choice([15, 15, 12, 4])
        g = np.array([rng.randrange(-(1 << gs), 1 << gs) for _ in range(k)], dtype=np.int64)
        frac = rng.choice(FRACS) if rng.random() < 0.3 else rng.randrange(8, 22)
    if rng.random() < 0.1:                          # sparse: mostly zeros
        u[np.array([rng.random() < 0.8 for _ in range(k)])] = 0
    return u, g, frac


def norm_vectors(p: dict, rng: random.Random, corner_k: int):
    vec = corner_vectors(rng, corner_k) if p.get("corners", True) else []
    for size in (1, p["max_k"]) if "max_k" in p else ():   # the shortest and longest
        vec.append(random_vector(rng, size))
    for size in FULL_SIZES if p.get("full") else []:
        vec.append(random_vector(rng, size))
        u, g, frac = random_vector(rng, size)
        vec.append((u, np.full(size, rng.choice([-32768, 32767])), rng.choice([0, 63])))
    lo, hi = p.get("lengths", (16, 64))
    total = sum(len(u) for u, _, _ in vec)
    while total < p.get("transactions", 2500):
        vec.append(random_vector(rng, rng.randint(lo, hi)))
        total += len(vec[-1][0])
    rng.shuffle(vec)
    return vec, total


# -- the bit-length sweeps (short vectors) ------------------------------------------------------

U_MAX, G_MAX = 1 << 31, 1 << 15            # largest |u| (X_MIN) and |g| (int16 -32768)


def product_of_bits(rng: random.Random, bits: int, window: int = 0) -> tuple[int, int] | None:
    """(u, g), u in X and g int16, with ``|u * g|`` of bit length ``bits`` (0 .. 47); with
    ``window`` > 0, within ``window`` of 2^bits. None if no such pair was found."""
    if bits <= 0:
        return 0, rng.randrange(-G_MAX, G_MAX)
    hi = (1 << bits) - 1
    lo = max(1 << (bits - 1), hi + 1 - window) if window else 1 << (bits - 1)
    for _ in range(200):
        target = rng.randint(lo, hi)
        gmax = min(G_MAX, target)
        gmin = min(gmax, max(1, -(-target >> 31)))            # ceil(target / 2^31)
        if window:
            gmax = min(gmax, 2 * gmin)       # a small g: fine steps of u * g near the top
        gb = rng.randint(gmin.bit_length(), gmax.bit_length())
        gm = rng.randint(max(gmin, 1 << (gb - 1)), min(gmax, (1 << gb) - 1))
        um = min(max(1, round(target / gm)), U_MAX)
        if lo <= um * gm <= hi:
            u = -um if um == U_MAX or rng.random() < 0.5 else um
            g = -gm if gm == G_MAX or rng.random() < 0.5 else gm
            return u, g
    return None


def peak_vector(rng: random.Random, k: int, bits: int, window: int = 0):
    """(u, g): k elements whose largest ``|u * g|`` has ``bits`` bits (near 2^bits with
    ``window``), the others anywhere below it, some equal to it in magnitude."""
    pair = product_of_bits(rng, bits, window) or product_of_bits(rng, bits)
    pairs = [pair]
    for _ in range(k - 1):
        if rng.random() < 0.2:
            pairs.append((pair[0] * rng.choice((1, -1)), pair[1]) if pair[0] != -U_MAX
                         else pair)
        else:
            pairs.append(product_of_bits(rng, rng.randint(0, bits)))
    rng.shuffle(pairs)
    return (np.array([a for a, _ in pairs], dtype=np.int64),
            np.array([b for _, b in pairs], dtype=np.int64))


def squares_vector(rng: random.Random, bits: int) -> np.ndarray:
    """u (K <= 4, every |u| < 2^23, so rms_rsqrt does not rescale) whose sum of squares has
    ``bits`` bits (0 .. 48); 49 bits only as four times 2^24 - 1 (rescaled by 1 to 2^23;
    the rounding is half up, so only a positive w reaches |w'| = 2^23)."""
    if bits == 0:
        return np.zeros(rng.randint(1, 4), dtype=np.int64)
    if bits == 49:
        return np.full(4, (1 << 24) - 1, dtype=np.int64)
    cap = (1 << N.SQ_BITS) - 1
    for _ in range(500):
        k = rng.randint(max(1, -(-(1 << (bits - 1)) // cap ** 2)), 4)
        left, vals = (1 << bits) - 1, []
        for j in range(k):
            top = min(cap, math.isqrt(left))
            v = top if j == k - 1 and rng.random() < 0.5 else rng.randint(0, top)
            vals.append(v * rng.choice((1, -1)))
            left -= v * v
        if sum(v * v for v in vals).bit_length() == bits:
            return np.array(vals, dtype=np.int64)
    raise AssertionError(f"no sum of squares of {bits} bits")


def rms_stats(u, g, frac) -> tuple[int, int]:
    """Bit lengths of golden.rms_rsqrt's peak of w and of its sum of squares s (the steps
    of golden.rms_rsqrt, for the coverage claim only: the expected values come from it)."""
    w = u if g is None else N.rshift_round(u * g, frac)
    peak = int(np.max(np.abs(w)))
    if peak == 0:
        return 0, 0
    w = N.rshift_round(w, max(0, peak.bit_length() - N.SQ_BITS))
    return peak.bit_length(), int(np.dot(w, w)).bit_length()


def quant_stats(u, g) -> tuple[int, bool]:
    """Bit length of max |u * g| and whether its rescale rounds up to m = 2^24."""
    peak = int(np.max(np.abs(u * g)))
    e = peak.bit_length() - N.NORM_BITS
    return peak.bit_length(), e > 0 and N.rshift_round(peak, e) >> N.NORM_BITS == 1


RMS_PEAK_BITS = range(48)          # |w| <= |u * g| <= 2^46
RMS_S_BITS = range(50)             # K <= 4: s <= 4 * (2^23)^2 = 2^48


def rms_sweep(rng: random.Random, n: int):
    """n short vectors: by turns a peak of the next bit length (with gains, a random frac
    that the product's length makes up for), a sum of squares of the next bit length (no
    gain: w = u), and a peak that the rescale rounds up to 2^23."""
    vec = []
    for i in range(n):
        k = rng.randint(1, 4)
        kind = i % 3
        if kind == 1:
            vec.append((squares_vector(rng, (i // 3) % len(RMS_S_BITS)), None, 0))
            continue
        bits = (i // 3) % len(RMS_PEAK_BITS)
        frac = 0 if rng.random() < 0.5 else rng.randint(0, 47 - bits)
        if rng.random() < 0.03:
            frac = rng.choice((48, 55, 63))
        window = 0
        if kind == 2 and bits > N.SQ_BITS:      # w' rounds up to 2^23 in the rescale
            window = 1 << (frac + bits - N.SQ_BITS - 1)
        u, g = peak_vector(rng, k, min(bits + frac, 47), window)
        vec.append((u, g, frac))
    return vec


def quant_sweep(rng: random.Random, n: int):
    """n short vectors: a peak of every bit length by turns, every other one near 2^bits
    (rescaled to m = 2^24 where there is a shift), with a random g_frac."""
    vec = []
    for i in range(n):
        bits = (i // 2) % 48
        window = 1 << (bits - N.NORM_BITS - 1) if i % 2 and bits > N.NORM_BITS else 0
        u, g = peak_vector(rng, rng.randint(1, 4), bits, window)
        vec.append((u, g, rng.choice(FRACS) if rng.random() < 0.3 else rng.randint(0, 63)))
    return vec


def check_sweep_coverage(unit: str, vec, dut):
    if unit == "rms":
        stats = [rms_stats(u, None if g is None or (frac == 0 and np.all(g == 1)) else g, frac)
                 for u, g, frac in vec if len(u) <= 4]
        peaks, sums = {p for p, _ in stats}, {s for _, s in stats}
        missed = ([f"peak {b} bits" for b in RMS_PEAK_BITS if b not in peaks]
                  + [f"s {b} bits" for b in RMS_S_BITS if b not in sums])
        dut._log.info("rms sweep: %d short vectors, peaks of %d bit lengths, sums of squares "
                      "of %d", len(stats), len(peaks), len(sums))
    else:
        stats = [quant_stats(u, g) for u, g, _ in vec if len(u) <= 4]
        peaks = {p for p, _ in stats}
        carried = {p for p, c in stats if c}
        shifts = [p - N.NORM_BITS for p in peaks if p]
        missed = ([f"peak {b} bits" for b in range(48) if b not in peaks]
                  + [f"m = 2^24 at {b} bits" for b in range(N.NORM_BITS + 1, 47)
                     if b not in carried])
        dut._log.info("quant sweep: %d short vectors, peaks of %d bit lengths (every shift "
                      "e = %d .. %d), %d of them rounding to m = 2^24", len(stats),
                      len(peaks), min(shifts), max(shifts),
                      len(carried))
    assert not missed, f"the sweep missed: {missed}"


def squares_below(target: int, k_max: int) -> np.ndarray:
    """Integers below 2^23 (so rms_rsqrt does not rescale) whose squares sum to ``target``:
    as many (2^23 - 1)^2 as fit, then greedy."""
    cap = (1 << N.SQ_BITS) - 1
    n_cap = max(0, target // cap ** 2 - 1)
    out, target = [cap] * n_cap, target - n_cap * cap ** 2
    while target:
        w = min(cap, math.isqrt(target))
        out.append(w)
        target -= w * w
    assert len(out) <= k_max
    return np.array(out, dtype=np.int64)


def long_vectors(rng: random.Random, max_k: int):
    """The top of the sum of squares: s = K 2^46 of every bit length from 50 to 62 (all
    |w'| = 2^23: u = 2^24 - 1, rescaled by 1), s just below 2^(32 + 2j) for j = 8 .. 14,
    and a random vector of K = max_k."""
    vec = []
    for bits in range(50, 63):
        k = 1 << (bits - 1 - 2 * N.SQ_BITS)
        assert k <= max_k, "the long suite needs max_k = 2^15"
        u = np.full(k, (1 << 24) - 1, dtype=np.int64)     # positive: see squares_vector
        vec.append((u, np.ones(k, dtype=np.int64), 0))
    for j in range(8, 15):
        for below in (1, 4 ** j // 2) if j <= 10 else (4 ** j // 2,):
            s = (1 << (32 + 2 * j)) - below
            assert N.rshift_round(s, 2 * j) >> 32
            u = squares_below(s, max_k)
            u *= np.array([rng.choice((1, -1)) for _ in range(len(u))], dtype=np.int64)
            vec.append((u, np.ones(len(u), dtype=np.int64), 0))
    vec.append(random_vector(rng, max_k))
    return vec


# -- the benches -------------------------------------------------------------------------------

RMS_IDLE, QUANT_IDLE = 150, 100     # cycles to watch for extra beats (> a vector's latency)


def rms_vectors(p: dict, rng: random.Random):
    """(u, g or None, frac): golden's g_pre = None where all gains are 1 and frac 0."""
    if p.get("long"):
        vec = long_vectors(rng, p["max_k"])
        total = sum(len(u) for u, _, _ in vec)
    else:
        vec, total = norm_vectors(p, rng, corner_k=16)
    short = rms_sweep(rng, p.get("sweep", 0))
    vec += short
    total += sum(len(u) for u, _, _ in short)
    rng.shuffle(vec)
    return [(u, None if frac == 0 and np.all(g == 1) else g, frac) for u, g, frac in vec], total


def rms_elements(rng, cases):
    elems = []
    for u, g, _ in cases:                # with no_gain set, the unit must ignore the gains
        for j, x in enumerate(u):
            gain = rng.randrange(-32768, 32768) if g is None else int(g[j])
            elems.append(pack(Element, u=int(x), g=gain))
    return elems


def rms_cfg(u, g, frac) -> int:
    return pack(RmsConfig, k=len(u), a_frac=frac, no_gain=int(g is None),
                sqrt_k=pf_word(G.sqrt_pf(len(u))))


def rms_check(cases, beats):
    bad = [(len(u), frac, pf_of(b), G.rms_rsqrt(u, g, frac))
           for (u, g, frac), b in zip(cases, beats, strict=True)
           if pf_of(b) != G.rms_rsqrt(u, g, frac)]
    assert not bad, f"{len(bad)} of {len(cases)} vectors differ, first: {bad[:3]}"


async def rms_bench(dut, p, rng, valid_prob, ready_prob):
    cases, total = rms_vectors(p, rng)
    if p.get("sweep"):
        check_sweep_coverage("rms", cases, dut)
    if p.get("long"):
        sums = {rms_stats(u, g, frac)[1] for u, g, frac in cases}
        assert set(range(50, 63)) <= sums, sorted(sums)
    sink = StreamSink(dut, "o", ready_prob, seed=rng.randrange(1 << 30))
    cfg_src = StreamSource(dut, "cfg", valid_prob, seed=rng.randrange(1 << 30))
    src = StreamSource(dut, "i", valid_prob, seed=rng.randrange(1 << 30))
    cocotb.start_soon(cfg_src.send([rms_cfg(*c) for c in cases]))
    await src.send(rms_elements(rng, cases))
    await sink.expect_no_more(len(cases), RMS_IDLE)
    rms_check(cases, sink.beats)
    short = sum(len(u) <= 4 for u, _, _ in cases)
    return len(cases), f"1/rms PFs of {len(cases)} vectors ({short} with K <= 4), {total} elements"


def quant_check(vec, q_beats, s_beats):
    bad, pos = [], 0
    for (u, g, frac), s_beat in zip(vec, s_beats, strict=True):
        want_q, want_m = G.absmax_quantize(u, g, frac)
        got = [unpack(Code, b) for b in q_beats[pos:pos + len(u)]]
        pos += len(u)
        got_q = [c["q"] for c in got]
        lasts = [c["last"] for c in got]
        if got_q != list(want_q) or pf_of(s_beat) != want_m or lasts != [0] * (len(u) - 1) + [1]:
            diff = [(j, a, int(b)) for j, (a, b) in enumerate(zip(got_q, want_q, strict=True))
                    if a != b]
            bad.append((len(u), frac, pf_of(s_beat), want_m, diff[:4]))
    assert not bad, f"{len(bad)} of {len(vec)} vectors differ, first: {bad[:3]}"
    assert pos == len(q_beats)


def quant_elements(vec):
    return [pack(Element, u=int(x), g=int(gj)) for u, g, _ in vec
            for x, gj in zip(u, g, strict=True)]


async def quant_bench(dut, p, rng, valid_prob, ready_prob):
    vec, total = norm_vectors(p, rng, corner_k=16)
    short = quant_sweep(rng, p.get("sweep", 0))
    vec += short
    total += sum(len(u) for u, _, _ in short)
    rng.shuffle(vec)
    if p.get("sweep"):
        check_sweep_coverage("quant", vec, dut)
    codes = StreamSink(dut, "q", ready_prob, seed=rng.randrange(1 << 30))
    scales = StreamSink(dut, "scale", ready_prob, seed=rng.randrange(1 << 30))
    cfg_src = StreamSource(dut, "cfg", valid_prob, seed=rng.randrange(1 << 30))
    src = StreamSource(dut, "i", valid_prob, seed=rng.randrange(1 << 30))
    cocotb.start_soon(cfg_src.send([pack(QuantConfig, k=len(u), g_frac=frac)
                                    for u, _, frac in vec]))
    await src.send(quant_elements(vec))
    await codes.expect_no_more(total, QUANT_IDLE)
    await scales.expect_no_more(len(vec), QUANT_IDLE)
    quant_check(vec, codes.beats, scales.beats)
    n_short = sum(len(u) <= 4 for u, _, _ in vec)
    return len(vec), (f"{len(vec)} vectors ({n_short} with K <= 4): {len(vec)} scales and "
                      f"{total} codes")


def random_pf(rng: random.Random, exp_lo: int, exp_hi: int) -> N.PF:
    return N.PF(rng.randrange(1 << 15, 1 << 16), rng.randint(exp_lo, exp_hi))


# The exponent range of the gateware's PFloat (what a scales beat can carry).
PF_EXP_BITS = data.Layout.cast(PFloat)["exp"].shape.width
EXP_MIN, EXP_MAX = -(1 << (PF_EXP_BITS - 1)), (1 << (PF_EXP_BITS - 1)) - 1
# The combined shift S.exp + 16 that three PFs with 8-bit exponents reach: all exponents
# -128 and mantissas 2^15 (each pf_mul adds 15), up to all 127 and mantissas 2^16 - 1.
SHIFT_MIN = 3 * EXP_MIN + 2 * 15 + N.X_FRAC
SHIFT_MAX = 3 * EXP_MAX + 2 * 16 + N.X_FRAC
ACC_CORNERS = [0, 1, -1, N.X_MAX, N.X_MIN, N.X_MAX - 1, N.X_MIN + 1, 1 << 15, -(1 << 15)]


def combined_shift(a: N.PF, b: N.PF, c: N.PF) -> int:
    return N.pf_mul(N.pf_mul(a, b), c).exp + N.X_FRAC


def scales_for(rng: random.Random, target: int, tries: int = 20):
    """Three non-zero PFs with exponents in the 8-bit range whose combined shift
    ``S.exp + 16`` is ``target`` (pf_mul adds the exponents exactly, whatever the
    mantissas), or None where the mantissas drawn cannot reach it."""
    for _ in range(tries):
        mants = [rng.choice((1 << 15, (1 << 16) - 1)) if rng.random() < 0.3
                 else rng.randrange(1 << 15, 1 << 16) for _ in range(3)]
        rest = target - combined_shift(*(N.PF(m, 0) for m in mants))   # = the exponents' sum
        if not 3 * EXP_MIN <= rest <= 3 * EXP_MAX:
            continue
        base = rest // 3
        exps = [base + (i < rest - 3 * base) for i in range(3)]
        for _ in range(3):                  # move some exponent from one PF to another
            i, j = rng.sample(range(3), 2)
            d = rng.randint(0, min(EXP_MAX - exps[i], exps[j] - EXP_MIN))
            exps[i], exps[j] = exps[i] + d, exps[j] - d
        pfs = [N.PF(m, e) for m, e in zip(mants, exps, strict=True)]
        assert combined_shift(*pfs) == target and all(EXP_MIN <= e <= EXP_MAX for e in exps)
        return tuple(pfs)
    return None


def dequant_cases(p: dict, rng: random.Random, count_max: int):
    """(accumulators, act_max, inv_rms, w_scale) per scales beat. The combined shift
    ``S.exp + 16`` ranges over everything 8-bit PF exponents reach: golden.dequantize is
    exact for all of it (pf_scale saturates from 16 on and clamps right shifts at 48, as
    the hardware does). Most beats steer it so that the outputs land anywhere from a few
    LSBs to saturation. Some beats have count = 0 (no accumulators: the unit skips them)."""
    count_cap = (1 << p.get("count_bits", 16)) - 1

    def accs(n, bits):
        vals = [rng.randrange(-(1 << bits), 1 << bits) for _ in range(n)]
        for _ in range(n // 8):
            vals[rng.randrange(n)] = rng.choice(ACC_CORNERS)
        return np.array(vals, dtype=np.int64)

    def scales(target):
        pfs = scales_for(rng, target) or scales_for(rng, rng.randint(-62, 16))
        if rng.random() < 0.05:
            i = rng.randrange(3)
            pfs = pfs[:i] + (N.PF_ZERO,) + pfs[i + 1:]
        return pfs

    def beat(n):
        bits = rng.choice([1, 4, 8, 16, 22, 31])
        if rng.random() < 0.25:
            target = rng.randint(SHIFT_MIN, SHIFT_MAX)
        else:                                       # |output| ~ 2^(bits + 16 + target)
            target = min(max(rng.randint(-2, 33) - 16 - bits, -62), 16)
        return (accs(n, bits), *scales(target))

    cases = []
    for target in [16, 15, 1, 0, -1, -2, -15, -16, -17, -30, -46, -47, -48, -49, -62,
                   17, 18, 100, SHIFT_MAX, -63, -64, -100, SHIFT_MIN]:
        cases.append((np.array(ACC_CORNERS + list(accs(8, 31)), dtype=np.int64),
                      *scales(target)))
    lo_pf, hi_pf = N.PF(1 << 15, EXP_MIN), N.PF((1 << 16) - 1, EXP_MAX)
    cases.append((accs(8, 31), lo_pf, lo_pf, lo_pf))          # S.exp + 16 = SHIFT_MIN
    cases.append((accs(8, 31), hi_pf, hi_pf, hi_pf))          # S.exp + 16 = SHIFT_MAX
    for target in range(SHIFT_MIN, SHIFT_MAX + 1) if p.get("sweep") else []:
        n = rng.choice([0, 1, 1, 2, 3, 4]) if rng.random() < 0.9 else rng.randint(5, 24)
        pfs = scales_for(rng, target, tries=1000)
        assert pfs, f"no scales for S.exp + 16 = {target}"
        cases.append((accs(n, rng.choice([1, 8, 16, 31])), *pfs))
    for size in [256, 768, 1536, 4096] if p.get("full") else []:
        cases.append(beat(size))
    total = sum(len(c[0]) for c in cases)
    while total < p.get("transactions", 2500):
        n = 0 if rng.random() < 0.05 else rng.randint(1, count_max)
        cases.append(beat(n))
        total += n
    rng.shuffle(cases)
    empty = np.zeros(0, dtype=np.int64)
    cases = [(empty, *scales(0)), *cases, (empty, *scales(-20)), (empty, *scales(300))]
    assert all(len(c[0]) <= count_cap for c in cases)
    return cases, total


def dequant_coverage(cases, dut):
    shifts = {combined_shift(a, b, c) for _, a, b, c in cases if a.mant and b.mant and c.mant}
    exps = [{pf.exp for case in cases if (pf := case[i]).mant} for i in (1, 2, 3)]
    missed = [t for t in range(SHIFT_MIN, SHIFT_MAX + 1) if t not in shifts]
    dut._log.info("dequant sweep: combined shifts %d .. %d (%d values), PF exponents %s",
                  min(shifts), max(shifts), len(shifts),
                  [f"{min(e)} .. {max(e)}" for e in exps])
    assert not missed, f"combined shifts never exercised: {missed[:20]}"
    assert all(min(e) == EXP_MIN and max(e) == EXP_MAX for e in exps), "PF exponent range"
    assert sum(len(c[0]) == 0 for c in cases) >= 3, "count = 0 beats"


def dequant_scales(layout, cases):
    return [pack(layout, act_max=pf_word(a), inv_rms=pf_word(b), w_scale=pf_word(c),
                 count=len(acc)) for acc, a, b, c in cases]


def dequant_check(cases, out):
    bad, pos = [], 0
    for acc, a, b, c in cases:
        want = G.dequantize(acc, a, b, c)
        got = [to_signed(w, N.X_BITS) for w in out[pos:pos + len(acc)]]
        pos += len(acc)
        if got != list(want):
            bad.append((a, b, c, [(int(x), g, int(w)) for x, g, w in zip(acc, got, want,
                                                                         strict=True)
                                  if g != w][:3]))
    assert not bad, f"{len(bad)} of {len(cases)} vectors differ, first: {bad[:3]}"
    assert pos == len(out)


async def dequant_bench(dut, p, rng, valid_prob, ready_prob):
    layout = scales_layout(p.get("count_bits", 16))
    cases, total = dequant_cases(p, rng, p.get("count_max", 64))
    if p.get("sweep"):
        dequant_coverage(cases, dut)
    sink = StreamSink(dut, "o", ready_prob, seed=rng.randrange(1 << 30))
    sc_src = StreamSource(dut, "scales", valid_prob, seed=rng.randrange(1 << 30))
    src = StreamSource(dut, "acc", valid_prob, seed=rng.randrange(1 << 30))
    sent = cocotb.start_soon(sc_src.send(dequant_scales(layout, cases)))
    await src.send([int(x) for acc, *_ in cases for x in acc])
    await sink.wait_for(total)
    for _ in range(40 * 3):              # the trailing count = 0 beats: ~23 cycles each
        if sent.done():
            break
        await RisingEdge(dut.clk)
    assert sent.done(), "count = 0 scales beats left untaken"
    await sink.expect_no_more(total, 2 * Dequantize.LATENCY + 30)
    dequant_check(cases, sink.beats)
    zero = sum(len(c[0]) == 0 for c in cases)
    return total, f"outputs of {len(cases)} scales beats ({zero} with count = 0)"


BENCHES = {"rms": rms_bench, "quant": quant_bench, "dequant": dequant_bench}


@cocotb.test()
async def norm_datapath(dut):
    p = params()
    pattern = p.get("pattern", "both")
    valid_prob, ready_prob = PATTERNS[pattern]
    rng = random.Random(p.get("seed", 0))
    await start(dut)
    results, detail = await BENCHES[p["unit"]](dut, p, rng, valid_prob, ready_prob)
    report(dut, p["unit"], results, f"{detail}, bit-exact, {pattern}")


# -- latency and throughput --------------------------------------------------------------------
# The docstrings' figures (hw/mmfree_hw/norm.py), asserted below:
RMS_LATENCY = 76        # RmsRsqrt: "from a vector's last element to its o beat k + 76 cycles"
RMS_PERIOD = (11, 58)   # "a vector takes max(k + 11, 58) cycles"
QUANT_LATENCY = 41      # AbsmaxQuantize: "from a vector's last element to its first code 41"
QUANT_SCALE_LEAD = 9    # "its scale PF is presented 9 cycles before the first code"
QUANT_PERIOD = 32       # "a vector takes k + 32 cycles"
DEQ_SCALE_LEAD = 23     # Dequantize: "a scales beat takes 23 cycles before its first
#                         accumulator can enter"; per accumulator LATENCY (7) cycles


def nonzero_vector(rng, k):
    u, g, frac = random_vector(rng, k)
    u[rng.randrange(k)] = rng.choice((N.X_MAX, N.X_MIN, 1 << 20))
    return u, np.full(k, rng.choice((1, 32767, -32768))), rng.choice((0, 15))


async def rms_timing(dut, rng, ks):
    sink = StreamSink(dut, "o")
    cfg_src = StreamSource(dut, "cfg")
    src = StreamSource(dut, "i")
    cases, figures = [], []
    for k in ks:
        # One vector alone: its o beat k + 76 cycles after the edge that took its last element.
        batch = [nonzero_vector(rng, k)]
        cocotb.start_soon(cfg_src.send([rms_cfg(*c) for c in batch]))
        await src.send(rms_elements(rng, batch))
        cases += batch
        await sink.expect_no_more(len(cases), RMS_IDLE)
        latency = sink.monitor.presented[-1] - src.accepted[-1]
        # Six back to back (configuration queued, elements at full rate): one o beat per
        # max(k + 11, 58) cycles.
        batch = [nonzero_vector(rng, k) for _ in range(6)]
        cocotb.start_soon(cfg_src.send([rms_cfg(*c) for c in batch]))
        await src.send(rms_elements(rng, batch))
        cases += batch
        await sink.expect_no_more(len(cases), RMS_IDLE)
        out = sink.monitor.transfers[-6:]
        periods = sorted({b - a for a, b in zip(out, out[1:], strict=False)})
        figures.append((k, latency, periods))
    dut._log.info("rms timing (k, latency, period): %s", figures)
    rms_check(cases, sink.beats)
    for k, latency, periods in figures:
        assert latency == k + RMS_LATENCY, (k, latency)
        assert periods == [max(k + RMS_PERIOD[0], RMS_PERIOD[1])], (k, periods)
    return len(cases)


async def quant_timing(dut, rng, ks):
    codes, scales = StreamSink(dut, "q"), StreamSink(dut, "scale")
    cfg_src = StreamSource(dut, "cfg")
    src = StreamSource(dut, "i")
    vec, figures = [], []

    async def run(batch):
        first = sum(len(u) for u, _, _ in vec)
        cocotb.start_soon(cfg_src.send([pack(QuantConfig, k=len(u), g_frac=f)
                                        for u, _, f in batch]))
        await src.send(quant_elements(batch))
        vec.extend(batch)
        total = sum(len(u) for u, _, _ in vec)
        await codes.expect_no_more(total, QUANT_IDLE)
        await scales.expect_no_more(len(vec), QUANT_IDLE)
        starts, pos = [], first
        for u, _, _ in batch:
            starts.append(codes.monitor.presented[pos])
            pos += len(u)
        return starts

    for k in ks:
        (first_code,) = await run([nonzero_vector(rng, k)])
        latency = first_code - src.accepted[-1]
        lead = first_code - scales.monitor.presented[-1]
        starts = await run([nonzero_vector(rng, k) for _ in range(6)])
        periods = sorted({b - a for a, b in zip(starts, starts[1:], strict=False)})
        figures.append((k, latency, lead, periods))
    dut._log.info("quant timing (k, latency, scale lead, period): %s", figures)
    quant_check(vec, codes.beats, scales.beats)
    for k, latency, lead, periods in figures:
        assert latency == QUANT_LATENCY, (k, latency)
        assert lead == QUANT_SCALE_LEAD, (k, lead)
        assert periods == [k + QUANT_PERIOD], (k, periods)
    return len(vec)


async def dequant_timing(dut, rng, p):
    layout = scales_layout(p.get("count_bits", 16))
    sink = StreamSink(dut, "o")
    sc_src = StreamSource(dut, "scales")
    src = StreamSource(dut, "acc")
    cases = []

    async def run(batch):
        first_sc, first_acc = len(sc_src.accepted), len(src.accepted)
        cocotb.start_soon(sc_src.send(dequant_scales(layout, batch)))
        await src.send([int(x) for acc, *_ in batch for x in acc])
        cases.extend(batch)
        total = sum(len(c[0]) for c in cases)
        await sink.expect_no_more(total, 2 * Dequantize.LATENCY + 30)
        return sc_src.accepted[first_sc:], src.accepted[first_acc:]

    def beat(n):
        return (np.array([rng.randrange(-(1 << 20), 1 << 20) for _ in range(n)],
                         dtype=np.int64),
                *scales_for(rng, rng.randint(-40, 0)))

    # One beat alone: its first accumulator enters 23 cycles after the scales beat; each
    # o beat LATENCY cycles after the edge that took its accumulator.
    t_sc, t_acc = await run([beat(16)])
    lead = t_acc[0] - t_sc[0]
    latencies = {b - a for a, b in zip(t_acc, sink.monitor.presented[-16:], strict=True)}
    # Four beats of 64, queued: 256 accumulators without a bubble, also across beats.
    t_sc, t_acc = await run([beat(64) for _ in range(4)])
    gapless = t_acc == list(range(t_acc[0], t_acc[0] + 256))
    span = sink.monitor.transfers[-1] - t_acc[0] + 1
    latencies |= {b - a for a, b in zip(t_acc, sink.monitor.presented[-256:], strict=True)}
    # Beats of 8: the scale stage sets the pace, one beat per 23 cycles.
    _, t_acc = await run([beat(8) for _ in range(6)])
    small = sorted({t_acc[8 * (i + 1)] - t_acc[8 * i] for i in range(5)})
    # A count = 0 beat between two others: skipped; what it costs.
    _, t_acc = await run([beat(8), beat(0), beat(8)])
    skip_cost = t_acc[8] - t_acc[0]
    dut._log.info("dequant timing: scales beat -> first accumulator %d cycles, latency %s, "
                  "4 x 64 gapless %s (first accumulator -> last o: %d cycles), beats of 8 "
                  "every %s cycles, beat of 8 + count 0 beat: %d cycles", lead,
                  sorted(latencies), gapless, span, small, skip_cost)
    dequant_check(cases, sink.beats)
    assert lead == DEQ_SCALE_LEAD
    assert latencies == {Dequantize.LATENCY} and Dequantize.LATENCY == 7
    assert gapless, "accumulators were not taken one per cycle"
    assert span == 256 + Dequantize.LATENCY
    assert small == [DEQ_SCALE_LEAD]
    return sum(len(c[0]) for c in cases)


@cocotb.test()
async def timing(dut):
    """Each unit's docstring figures at full rate (no gaps, no back-pressure), on vectors
    checked against the golden model like every other."""
    p = params()
    rng = random.Random(p.get("seed", 5))
    await start(dut)
    ks = [k for k in (1, 2, 3, 4, 16, 46, 47, 48, 64, 256) if k <= p.get("max_k", 1024)]
    if p["unit"] == "rms":
        n = await rms_timing(dut, rng, ks)
    elif p["unit"] == "quant":
        n = await quant_timing(dut, rng, ks)
    else:
        n = await dequant_timing(dut, rng, p)
    report(dut, p["unit"], n, "timing")
