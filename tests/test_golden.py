"""Each golden unit against a float implementation with stated bounds, and the format
claims (no overflow, saturation) at the extremes."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mmfree_fpga import golden as G
from mmfree_fpga import numerics as N

X_ONE = 1 << N.X_FRAC
rng = np.random.default_rng(0)


def xvec(values):
    return np.round(np.asarray(values, dtype=np.float64) * X_ONE).astype(np.int64)


def test_ternary_matvec_and_bounds():
    codes = rng.integers(-1, 2, size=(64, 300)).astype(np.int8)
    q = rng.integers(-128, 128, size=300)
    assert np.array_equal(G.ternary_matvec(codes, q), codes.astype(int) @ q)
    worst = np.full((1, N.MAX_K), -1, dtype=np.int8)
    assert G.ternary_matvec(worst, np.full(N.MAX_K, -128))[0] == 128 * N.MAX_K


@pytest.mark.parametrize("k", [1, 16, 256, 768, N.MAX_K])
def test_rms_rsqrt(k):
    u = rng.normal(0, 3, k)
    a = rng.uniform(0.5, 1.5, k)
    aq, frac = N.gain_block(a)
    r = G.rms_rsqrt(xvec(u), aq.astype(np.int64), frac)
    exact = 1 / np.sqrt(np.mean((u * aq / 2 ** frac) ** 2))
    assert abs(r.value() / exact - 1) < 2e-4


def test_rms_rsqrt_extremes():
    assert G.rms_rsqrt(np.zeros(8, dtype=np.int64), None) == N.PF_ZERO
    full = np.full(N.MAX_K, N.X_MAX, dtype=np.int64)   # largest sum of squares: no overflow
    assert abs(G.rms_rsqrt(full, None).value() * 32768 - 1) < 1e-4
    tiny = np.zeros(256, dtype=np.int64)
    tiny[3] = 1                                        # one LSB: rms = 2^-16 / 16
    assert abs(G.rms_rsqrt(tiny, None).value() / (16 * X_ONE) - 1) < 1e-4


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, st.integers(1, 64), elements=st.floats(-30000, 30000)),
       st.floats(0.01, 4))
def test_absmax_quantize(u, gscale):
    g = np.linspace(0.5, 1.5, len(u)) * gscale
    gq, frac = N.gain_block(g)
    x = xvec(u)
    q, m = G.absmax_quantize(x, gq.astype(np.int64), frac)
    v = x / X_ONE * gq / 2 ** frac
    assert q.min() >= -128 and q.max() <= 127
    if np.max(np.abs(v)) == 0:
        assert np.all(q == 0) and m == N.PF_ZERO
        return
    assert abs(m.value() / np.max(np.abs(v)) - 1) < 2 ** -15
    assert np.max(np.abs(q - 127 * v / np.max(np.abs(v)))) <= 0.5 + 1e-3
    assert np.max(np.abs(q)) == 127


def test_dequantize_matches_float():
    acc = rng.integers(-20000, 20000, 100)
    m, r, w = N.pf_from_float(3.7), N.pf_from_float(0.61), N.pf_from_float(0.05 / 127)
    y = G.dequantize(acc, m, r, w)
    exact = acc * 3.7 * 0.61 * 0.05 / 127
    assert np.max(np.abs(y / X_ONE - exact)) < 5e-4 * np.max(np.abs(exact)) + 1 / X_ONE


def _float_mlgru(zi, zf, zg, h, lb, gn):
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    f = lb + (1 - lb) * sig(zf)
    h = f * h + zi * sig(zi) * (1 - f)
    return zg * gn * h * sig(h), h


def test_mlgru_against_float():
    n = 512
    zi, zf, zg = rng.normal(0, 3, n), rng.normal(0, 6, n), rng.normal(0, 3, n)
    h = rng.normal(0, 2, n)
    lb = rng.uniform(0, 0.95, n)
    gn = rng.uniform(0.5, 1.5, n)
    gq, frac = N.gain_block(gn)
    o, h2 = G.mlgru(xvec(zi), xvec(zf), xvec(zg), xvec(h),
                    np.round(lb * N.GATE_ONE).astype(np.int64), gq.astype(np.int64), frac)
    o_ref, h_ref = _float_mlgru(zi, zf, zg, h, lb, gq / 2 ** frac)
    assert np.max(np.abs(h2 / X_ONE - h_ref)) < 2e-4
    assert np.max(np.abs(o / X_ONE - o_ref)) < 1e-3


def test_mlgru_long_memory_keeps_the_complement():
    """f = 1 - 2e-5 must not round to 1: the state decays at the right rate."""
    n = 4
    zf = xvec([10.8] * n)                  # sigma(-10.8) = 2.04e-5
    h = xvec([1.0] * n)
    lb = np.zeros(n, dtype=np.int64)
    one = np.ones(n, dtype=np.int64) << 14
    for _ in range(1000):
        _, h = G.mlgru(np.zeros(n, dtype=np.int64), zf, np.zeros(n, dtype=np.int64), h,
                       lb, one, 14)
    expected = (1 - 1 / (1 + np.exp(10.8))) ** 1000
    assert abs(h[0] / X_ONE / expected - 1) < 0.01


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(N.X_MIN, N.X_MAX), min_size=1, max_size=8),
       st.lists(st.integers(N.X_MIN, N.X_MAX), min_size=1, max_size=8))
def test_elementwise_saturate_at_extremes(a, b):
    k = min(len(a), len(b))
    a, b = np.array(a[:k], dtype=np.int64), np.array(b[:k], dtype=np.int64)
    for y in (G.glu(a, b), G.residual_add(a, b)):
        assert np.all((y >= N.X_MIN) & (y <= N.X_MAX))
    o, h = G.mlgru(a, a, b, b, np.full(k, N.GATE_ONE // 2), np.full(k, 32767), 0)
    assert np.all((o >= N.X_MIN) & (o <= N.X_MAX)) and np.all((h >= N.X_MIN) & (h <= N.X_MAX))


def test_glu_against_float():
    a, b = rng.normal(0, 4, 300), rng.normal(0, 4, 300)
    y = G.glu(xvec(a), xvec(b)) / X_ONE
    assert np.max(np.abs(y - a / (1 + np.exp(-a)) * b)) < 1e-3


def test_argmax_ties_to_lower_id():
    assert G.argmax(np.array([1, 5, 5, 2])) == 1


# -- every unit against unbounded Python integers ------------------------------------------------
# The golden model computes in NumPy int64. These references compute the same definitions
# element by element in Python ints, which cannot wrap, so an int64 overflow anywhere in a
# unit shows up as a mismatch; a range check of the outputs would pass a wrapped value.

def _rr(x: int, n: int) -> int:
    return x << -n if n <= 0 else (x + (1 << (n - 1))) >> n


def _sat(x: int, bits: int = 32) -> int:
    return min(max(x, -(1 << (bits - 1))), (1 << (bits - 1)) - 1)


def _sigmoid(z: int) -> int:
    lim = N.SIG_RANGE << N.X_FRAC
    t = min(max(z, -lim), lim) + lim
    lo, hi = int(N.SIGMOID_TABLE[t >> N.SIG_SHIFT]), int(N.SIGMOID_TABLE[(t >> N.SIG_SHIFT) + 1])
    return lo + _rr((hi - lo) * (t & ((1 << N.SIG_SHIFT) - 1)), N.SIG_SHIFT)


def _silu(z: int) -> int:
    return _rr(z * _sigmoid(z), N.GATE_FRAC)


def _scale(x: int, s: N.PF) -> int:
    """round(x * mant * 2^exp), halves up, saturated: the definition, with no shortcuts."""
    return _sat(_rr(x * s.mant, -s.exp))


X_EDGE = [N.X_MIN, N.X_MIN + 1, -1, 0, 1, N.X_MAX - 1, N.X_MAX]
xint = st.one_of(st.sampled_from(X_EDGE), st.integers(N.X_MIN, N.X_MAX),
                 st.integers(-(1 << 20), 1 << 20))
gain = st.one_of(st.sampled_from([-32768, -32767, -1, 0, 1, 32767]),
                 st.integers(-32768, 32767))
vec = st.lists(xint, min_size=1, max_size=12)


def _a(values) -> np.ndarray:
    return np.array(values, dtype=np.int64)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(xint, xint, xint, xint, st.integers(0, N.GATE_ONE), gain),
                min_size=1, max_size=10), st.integers(0, 30))
def test_mlgru_equals_python_integers(rows, gn_frac):
    zi, zf, zg, h, lb, gn = (list(c) for c in zip(*rows, strict=True))
    o, h2 = G.mlgru(_a(zi), _a(zf), _a(zg), _a(h), _a(lb), _a(gn), gn_frac)
    for j in range(len(rows)):
        omf = _rr((N.GATE_ONE - lb[j]) * _sigmoid(-zf[j]), N.GATE_FRAC)
        c = _rr(_silu(zi[j]) * omf, N.GATE_FRAC)
        hj = _sat(_rr((N.GATE_ONE - omf) * h[j], N.GATE_FRAC) + c)
        gg = _sat(_rr(zg[j] * gn[j], gn_frac))
        assert (int(o[j]), int(h2[j])) == (_sat(_rr(gg * _silu(hj), N.X_FRAC)), hj)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(xint, xint), min_size=1, max_size=12))
def test_glu_residual_sigmoid_silu_equal_python_integers(rows):
    a, b = (list(c) for c in zip(*rows, strict=True))
    glu, add = G.glu(_a(a), _a(b)), G.residual_add(_a(a), _a(b))
    sig, silu = N.sigmoid(_a(a)), N.silu(_a(a))
    for j in range(len(rows)):
        assert int(glu[j]) == _sat(_rr(_silu(a[j]) * b[j], N.X_FRAC))
        assert int(add[j]) == _sat(a[j] + b[j])
        assert int(sig[j]) == _sigmoid(a[j]) and int(silu[j]) == _silu(a[j])


pf = st.one_of(st.just(N.PF_ZERO),
               st.builds(N.PF, st.integers(1 << 15, (1 << 16) - 1), st.integers(-90, 40)))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(xint, st.integers(-(1 << 22), 1 << 22)), min_size=1, max_size=12),
       pf, pf, pf)
def test_dequantize_equals_python_integers(acc, m, r, w):
    s = N.pf_mul(N.pf_mul(m, r), w)
    y = G.dequantize(_a(acc), m, r, w)
    s16 = N.PF(s.mant, s.exp + N.X_FRAC)
    assert [int(v) for v in y] == [_scale(x, s16) for x in acc]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(xint, gain), min_size=1, max_size=12), st.integers(0, 63))
def test_absmax_quantize_equals_python_integers(rows, frac):
    u, g = (list(c) for c in zip(*rows, strict=True))
    q, m = G.absmax_quantize(_a(u), _a(g), frac)
    v = [a * b for a, b in zip(u, g, strict=True)]
    peak = max(abs(x) for x in v)
    if peak == 0:
        assert np.all(q == 0) and m == N.PF_ZERO
        return
    e = peak.bit_length() - N.NORM_BITS
    r = N.recip24(_rr(peak, e))
    want = [min(max(_rr(_rr(x, e) * 127 * r, 47), -128), 127) for x in v]
    assert [int(x) for x in q] == want
    assert m == N.pf_normalize(_rr(peak, e), e - N.X_FRAC - frac)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(xint, gain), min_size=1, max_size=12), st.integers(0, 63),
       st.booleans())
def test_rms_rsqrt_equals_python_integers(rows, frac, unit_gain):
    u, g = (list(c) for c in zip(*rows, strict=True))
    w = list(u) if unit_gain else [_rr(a * b, frac) for a, b in zip(u, g, strict=True)]
    got = G.rms_rsqrt(_a(u), None if unit_gain else _a(g), frac)
    peak = max(abs(x) for x in w)
    if peak == 0:
        assert got == N.PF_ZERO
        return
    e = max(0, peak.bit_length() - N.SQ_BITS)
    s = sum(_rr(x, e) ** 2 for x in w)
    assert got == N.pf_mul(N.rsqrt(s), G.sqrt_pf(len(u), N.X_FRAC - e))


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 40), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_ternary_matvec_equals_python_integers(k, n, seed):
    r = np.random.default_rng(seed)
    codes = r.integers(-1, 2, size=(n, k)).astype(np.int8)
    q = r.choice([-128, 127, -1, 0, 1, *r.integers(-128, 128, 4)], size=k)
    got = G.ternary_matvec(codes, q)
    assert [int(x) for x in got] == [sum(int(c) * int(a) for c, a in zip(row, q, strict=True))
                                     for row in codes]


def test_topk_order_and_ties():
    logits = np.array([3, 9, 9, -2, 9, 3, N.X_MIN, N.X_MAX], dtype=np.int64)
    ids, vals = G.topk(logits, 5)
    assert ids.tolist() == [7, 1, 2, 4, 0] and vals.tolist() == [N.X_MAX, 9, 9, 9, 3]
    r = np.random.default_rng(5)
    for _ in range(200):
        lg = r.integers(-4, 4, size=r.integers(1, 40))
        k = int(r.integers(1, len(lg) + 1))
        ids, vals = G.topk(lg, k)
        want = sorted(range(len(lg)), key=lambda i: (-int(lg[i]), i))[:k]
        assert ids.tolist() == want and vals.tolist() == [int(lg[i]) for i in want]
        assert G.topk(lg, 1)[0][0] == G.argmax(lg)
    with pytest.raises(ValueError):
        G.topk(logits, 0)
