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
