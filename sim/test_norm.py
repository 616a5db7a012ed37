"""cocotb bench: the RMSNorm / quantize datapath (RmsRsqrt, AbsmaxQuantize, Dequantize)
against golden.rms_rsqrt / absmax_quantize / dequantize, bit for bit, with corner-case and
random vectors, random gaps on every input stream and random back-pressure on every
output stream.

One cocotb test; MMF_PARAMS picks the unit ("unit": "rms" | "quant" | "dequant"), the
gap/back-pressure pattern, how many elements to send (``transactions``), the random vector
lengths (``lengths``; ``max_k`` adds vectors of length 1 and max_k) or accumulator counts
(``count_max``, ``count_bits``), and whether to add the default model's full-size vectors
(``full``: K = 256 and 768; for Dequantize 256, 768, 1536 and 4096 accumulators).
"""

import math
import random

import cocotb
import numpy as np
from tb import PATTERNS, StreamSink, StreamSource, pack, params, start, to_signed, unpack

from mmfree_fpga import golden as G
from mmfree_fpga import numerics as N
from mmfree_hw.norm import Code, Element, QuantConfig, RmsConfig, scales_layout
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


# -- the benches -------------------------------------------------------------------------------

async def rms_bench(dut, p, rng, valid_prob, ready_prob):
    vec, total = norm_vectors(p, rng, corner_k=16)
    # rms_rsqrt's g_pre = None where all gains are 1 and frac 0 (the config bit); else gains.
    cases = [(u, None if frac == 0 and np.all(g == 1) else g, frac) for u, g, frac in vec]
    cfgs = [pack(RmsConfig, k=len(u), a_frac=frac, no_gain=int(g is None),
                 sqrt_k=pf_word(G.sqrt_pf(len(u)))) for u, g, frac in cases]
    elems = []
    for u, g, _ in cases:                # with no_gain set, the unit must ignore the gains
        for j, x in enumerate(u):
            gain = rng.randrange(-32768, 32768) if g is None else int(g[j])
            elems.append(pack(Element, u=int(x), g=gain))
    sink = StreamSink(dut, "o", ready_prob, seed=rng.randrange(1 << 30))
    cfg_src = StreamSource(dut, "cfg", valid_prob, seed=rng.randrange(1 << 30))
    src = StreamSource(dut, "i", valid_prob, seed=rng.randrange(1 << 30))
    cocotb.start_soon(cfg_src.send(cfgs))
    await src.send(elems)
    beats = await sink.wait_for(len(cases))
    bad = [(len(u), frac, pf_of(b), G.rms_rsqrt(u, g, frac))
           for (u, g, frac), b in zip(cases, beats, strict=True)
           if pf_of(b) != G.rms_rsqrt(u, g, frac)]
    assert not bad, f"{len(bad)} of {len(cases)} vectors differ, first: {bad[:3]}"
    return total, len(cases)


async def quant_bench(dut, p, rng, valid_prob, ready_prob):
    vec, total = norm_vectors(p, rng, corner_k=16)
    cfgs = [pack(QuantConfig, k=len(u), g_frac=frac) for u, _, frac in vec]
    elems = [pack(Element, u=int(x), g=int(gj)) for u, g, _ in vec
             for x, gj in zip(u, g, strict=True)]
    codes = StreamSink(dut, "q", ready_prob, seed=rng.randrange(1 << 30))
    scales = StreamSink(dut, "scale", ready_prob, seed=rng.randrange(1 << 30))
    cfg_src = StreamSource(dut, "cfg", valid_prob, seed=rng.randrange(1 << 30))
    src = StreamSource(dut, "i", valid_prob, seed=rng.randrange(1 << 30))
    cocotb.start_soon(cfg_src.send(cfgs))
    await src.send(elems)
    q_beats = await codes.wait_for(total)
    s_beats = await scales.wait_for(len(vec))
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
    assert len(q_beats) == total
    return total, len(vec)


def random_pf(rng: random.Random, exp_lo: int, exp_hi: int) -> N.PF:
    return N.PF(rng.randrange(1 << 15, 1 << 16), rng.randint(exp_lo, exp_hi))


def dequant_cases(p: dict, rng: random.Random, count_max: int):
    """(accumulators, act_max, inv_rms, w_scale) per beat. The combined shift
    S.exp + 16 stays in -62 .. 16: golden.dequantize's own int64 arithmetic is exact there
    (beyond, NumPy wraps or overflows; the hardware clamps, see Dequantize). Most beats
    steer it so that the outputs land anywhere from a few LSBs to saturation."""
    corners = [0, 1, -1, N.X_MAX, N.X_MIN, N.X_MAX - 1, N.X_MIN + 1, 1 << 15, -(1 << 15)]

    def accs(n, bits):
        vals = [rng.randrange(-(1 << bits), 1 << bits) for _ in range(n)]
        for _ in range(n // 8):
            vals[rng.randrange(n)] = rng.choice(corners)
        return np.array(vals, dtype=np.int64)

    def scales(target):
        a, b = random_pf(rng, -40, 0), random_pf(rng, -30, 5)
        c = random_pf(rng, -45, -5)
        if rng.random() < 0.05:
            a = N.PF_ZERO
        s = N.pf_mul(N.pf_mul(a, b), c)
        if s.mant:                                  # steer S.exp + 16 onto target
            c = c._replace(exp=c.exp + target - (s.exp + N.X_FRAC))
        return a, b, c

    def beat(n):
        bits = rng.choice([1, 4, 8, 16, 22, 31])
        if rng.random() < 0.25:
            target = rng.randint(-62, 16)
        else:                                       # |output| ~ 2^(bits + 16 + target)
            target = min(max(rng.randint(-2, 33) - 16 - bits, -62), 16)
        return (accs(n, bits), *scales(target))

    cases = []
    for target in [16, 15, 1, 0, -1, -2, -15, -16, -17, -30, -46, -47, -48, -49, -62]:
        cases.append((np.array(corners + list(accs(8, 31)), dtype=np.int64), *scales(target)))
    for size in [256, 768, 1536, 4096] if p.get("full") else []:
        cases.append(beat(size))
    total = sum(len(c[0]) for c in cases)
    while total < p.get("transactions", 2500):
        cases.append(beat(rng.randint(1, count_max)))
        total += len(cases[-1][0])
    rng.shuffle(cases)
    return cases, total


async def dequant_bench(dut, p, rng, valid_prob, ready_prob):
    layout = scales_layout(p.get("count_bits", 16))
    cases, total = dequant_cases(p, rng, p.get("count_max", 64))
    beats = [pack(layout, act_max=pf_word(a), inv_rms=pf_word(b), w_scale=pf_word(c),
                  count=len(acc)) for acc, a, b, c in cases]
    sink = StreamSink(dut, "o", ready_prob, seed=rng.randrange(1 << 30))
    sc_src = StreamSource(dut, "scales", valid_prob, seed=rng.randrange(1 << 30))
    src = StreamSource(dut, "acc", valid_prob, seed=rng.randrange(1 << 30))
    cocotb.start_soon(sc_src.send(beats))
    await src.send([int(x) for acc, *_ in cases for x in acc])
    out = await sink.wait_for(total)
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
    return total, len(cases)


BENCHES = {"rms": rms_bench, "quant": quant_bench, "dequant": dequant_bench}


@cocotb.test()
async def norm_datapath(dut):
    p = params()
    pattern = p.get("pattern", "both")
    valid_prob, ready_prob = PATTERNS[pattern]
    rng = random.Random(p.get("seed", 0))
    await start(dut)
    elements, vectors = await BENCHES[p["unit"]](dut, p, rng, valid_prob, ready_prob)
    dut._log.info("%s: %d elements in %d vectors bit-exact (%s)", p["unit"], elements,
                  vectors, pattern)
