"""The integer approximations against float64, with the error bounds NUMERICS.md states,
and property tests at the extremes of each format."""

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfree_fpga import numerics as N

X_ONE = 1 << N.X_FRAC
x_values = st.integers(N.X_MIN, N.X_MAX)


def test_sigmoid_error_bounds():
    z = np.arange(-20 * X_ONE, 20 * X_ONE, 97, dtype=np.int64)
    exact = 1 / (1 + np.exp(-z / X_ONE))
    got = N.sigmoid(z) / N.GATE_ONE
    assert np.max(np.abs(got - exact)) < 1.3e-5
    rel = np.abs(got / exact - 1)
    assert np.max(rel[(z >= -8 * X_ONE) & (z < 0)]) < 1.3e-3
    assert np.max(rel[(z >= -12 * X_ONE) & (z < 0)]) < 5e-2
    assert N.sigmoid(np.array([20 * X_ONE]))[0] == N.SIGMOID_TABLE[N.SIG_KNOTS - 1]  # clamps
    assert N.sigmoid(np.array([-20 * X_ONE]))[0] == N.SIGMOID_TABLE[0]
    assert N.sigmoid(np.array([0]))[0] == N.GATE_ONE // 2


def test_sigmoid_monotone():
    z = np.arange(-17 * X_ONE, 17 * X_ONE, 311, dtype=np.int64)
    assert np.all(np.diff(N.sigmoid(z)) >= 0)


@settings(max_examples=300, deadline=None)
@given(x_values)
def test_silu_in_range(z):
    y = int(N.silu(np.array([z], dtype=np.int64))[0])
    exact = z / X_ONE / (1 + math.exp(-max(-700, min(700, z / X_ONE))))
    assert abs(y / X_ONE - exact) < 1.3e-5 * abs(z / X_ONE) + 2 / X_ONE
    assert N.X_MIN <= y <= N.X_MAX


@settings(max_examples=500, deadline=None)
@given(st.integers(1 << 23, 1 << 24))
def test_recip24(m):
    r = N.recip24(m)
    assert abs(r * m / 2 ** 47 - 1) < 2 ** -17


@settings(max_examples=500, deadline=None)
@given(st.integers(1, 1 << 62))
def test_rsqrt(s):
    y = N.rsqrt(s)
    assert 1 << 15 <= y.mant < 1 << 16
    assert abs(y.value() * math.sqrt(s) - 1) < 2 ** -15


@settings(max_examples=300, deadline=None)
@given(st.floats(1e-30, 1e30), st.floats(1e-30, 1e30))
def test_pf_arithmetic(a, b):
    pa, pb = N.pf_from_float(a), N.pf_from_float(b)
    assert abs(pa.value() / a - 1) <= 2 ** -16
    assert abs(N.pf_mul(pa, pb).value() / (a * b) - 1) <= 3 * 2 ** -16


@settings(max_examples=300, deadline=None)
@given(st.lists(x_values, min_size=1, max_size=16), st.floats(1e-12, 1e6))
def test_pf_scale_saturates(xs, s):
    x = np.array(xs, dtype=np.int64)
    y = N.pf_scale(x, N.pf_from_float(s))
    assert np.all((y >= N.X_MIN) & (y <= N.X_MAX))
    exact = np.clip(np.round(x * N.pf_from_float(s).value()), N.X_MIN, N.X_MAX)
    assert np.all(np.abs(y - exact) <= 1)


def test_rshift_round_is_half_up():
    x = np.array([-3, -2, -1, 0, 1, 2, 3], dtype=np.int64)
    assert N.rshift_round(x, 1).tolist() == [-1, -1, 0, 0, 1, 1, 2]
    assert N.rshift_round(5, -2) == 20


def test_gain_block_uses_range():
    g = np.array([0.3, -1.7, 1.1])
    q, frac = N.gain_block(g)
    assert q.dtype == np.int16 and 1 << 14 <= np.max(np.abs(q.astype(int))) < 1 << 15
    assert np.max(np.abs(q / 2 ** frac - g)) <= 2 ** -frac
    big, frac = N.gain_block(np.array([1e6]))
    assert frac < 0 and abs(big[0] * 2.0 ** -frac / 1e6 - 1) < 1e-4


def test_pf_scale_extreme_exponents():
    x = np.array([N.X_MIN, -5, -1, 0, 1, 7, N.X_MAX], dtype=np.int64)
    big = N.pf_scale(x, N.PF(1 << 15, 40))
    assert big.tolist() == [N.X_MIN, N.X_MIN, N.X_MIN, 0, N.X_MAX, N.X_MAX, N.X_MAX]
    assert N.pf_scale(x, N.PF(1 << 15, 16)).tolist() == big.tolist()
    assert N.pf_scale(x, N.PF((1 << 16) - 1, -200)).tolist() == [0] * 7
    edge = N.pf_scale(np.array([N.X_MAX]), N.PF(1 << 15, -46))   # (2^31 - 1) / 2^31
    assert edge.tolist() == [1]
