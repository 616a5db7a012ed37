"""The integer approximations against float64, with the error bounds NUMERICS.md states,
and property tests at the extremes of each format."""

import math

import numpy as np
import pytest
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


def test_ternary_codes_round_trip():
    t = np.array([[-1, 0, 1], [1, 1, -1]], dtype=np.int8)
    c = N.encode_codes(t)
    assert c.dtype == np.uint8
    assert c.tolist() == [[0b11, 0b00, 0b01], [0b01, 0b01, 0b11]]
    assert [N.CODE_NEG, N.CODE_ZERO, N.CODE_POS] == [0b11, 0b00, 0b01]
    back = N.decode_codes(c)
    assert back.dtype == np.int8 and np.array_equal(back, t)
    rng = np.random.default_rng(0)
    t = rng.integers(-1, 2, size=(9, 13))
    assert np.array_equal(N.decode_codes(N.encode_codes(t)), t)


def test_ternary_codes_refused():
    with pytest.raises(ValueError, match="0b10"):
        N.decode_codes(np.array([0b00, N.CODE_INVALID, 0b11]))
    with pytest.raises(ValueError, match="-1, 0 or 1"):
        N.encode_codes(np.array([0, 2]))
    with pytest.raises(ValueError, match="-1, 0 or 1"):
        N.encode_codes(np.array([-2]))


def test_code_bytes():
    """4 codes a byte, the first in the low bits."""
    c = np.array([[0b01, 0b00, 0b11, 0b01, 0b11, 0b11, 0b00, 0b00]], dtype=np.uint8)
    b = N.pack_code_bytes(c)
    assert b.dtype == np.uint8 and b.tolist() == [[0b01_11_00_01, 0b00_00_11_11]]
    assert np.array_equal(N.unpack_code_bytes(b), c)
    assert N.unpack_code_bytes(np.array([0b10_00_00_00])).tolist() == [0, 0, 0, 0b10]
    with pytest.raises(ValueError, match="whole bytes"):
        N.pack_code_bytes(np.zeros(6, dtype=np.uint8))


def test_engine_words_layout():
    """5 rows x 2 columns, 4 lanes: two row groups, rows 5..7 padded with zero codes; word
    g * K + k is column k of rows 4g .. 4g+3, lane l at bits [2l, 2l+2)."""
    t = np.array([[1, -1], [0, 1], [-1, -1], [1, 0], [-1, 1]])
    words = N.engine_words(t, 4)
    assert words.dtype == np.uint8 and words.shape == (4, 1)
    assert N.engine_word_ints(t, 4) == [
        0b01_11_00_01,      # column 0, rows 0..3: +1, 0, -1, +1
        0b00_11_01_11,      # column 1, rows 0..3: -1, +1, -1, 0
        0b00_00_00_11,      # column 0, row 4: -1; rows 5..7: padding
        0b00_00_00_01,      # column 1, row 4: +1
    ]
    # wider words: bytes little-endian, lane l's code at bits [2l, 2l+2) of the whole word
    t = np.zeros((8, 1), dtype=np.int64)
    t[0], t[5] = -1, 1
    assert N.engine_words(t, 8).tolist() == [[0b11, 0b00_00_01_00]]   # lane 5: byte 1, bits 2..3
    assert N.engine_word_ints(t, 8) == [0b11 | 0b01 << 10]


def test_engine_words_match_a_lane_by_lane_layout():
    rng = np.random.default_rng(1)
    for lanes, n, k in ((4, 7, 3), (8, 16, 5), (12, 13, 1), (16, 3, 4)):
        t = rng.integers(-1, 2, size=(n, k))
        padded = np.zeros((-(-n // lanes) * lanes, k), dtype=np.int64)
        padded[:n] = t
        want = [sum((int(padded[g * lanes + lane, col]) & 0b11) << (N.CODE_BITS * lane)
                    for lane in range(lanes))
                for g in range(len(padded) // lanes) for col in range(k)]
        assert N.engine_word_ints(t, lanes) == want
        assert N.engine_words(t, lanes).shape == (len(want), lanes // 4)


def test_engine_words_refused():
    with pytest.raises(ValueError, match="multiple of 4"):
        N.engine_words(np.zeros((6, 2)), 6)
    with pytest.raises(ValueError, match="-1, 0 or 1"):
        N.engine_words(np.full((4, 2), 2), 4)


def test_hardware_field_ranges():
    """The ranges the exporter checks against, as wide as the gateware's fields."""
    assert (N.GAIN_FRAC_MAX, N.GN_FRAC_MAX) == (63, 31)
    assert (N.PF_EXP_MIN, N.PF_EXP_MAX) == (-128, 127)
    assert N.gain_block(np.array([2.0 ** 15 - 1]))[1] == 0        # the largest that fits
    assert N.gain_block(np.array([2.0 ** 15]))[1] == -1
    assert N.gain_block(np.array([1e-12]))[1] == 30               # never above 30
