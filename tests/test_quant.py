"""The quantization helpers against the formulas of mmfreelm's ops/bitnet.py."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mmfree_fpga.model import (
    activation_quant,
    activation_quant_int,
    ternarize,
    weight_quant,
    weight_scale,
)

finite = st.floats(-1e4, 1e4, allow_nan=False, width=32)


def test_activation_quant_formula():
    x = torch.tensor([[0.5, -1.0, 0.25, 2.0], [-3.0, 1.5, 0.0, 0.01]])
    q, scale = activation_quant_int(x)
    assert torch.equal(scale, 127.0 / torch.tensor([[2.0], [3.0]]))
    assert torch.equal(q, (x * scale).round().clamp(-128, 127))
    assert q[0, 3] == 127 and q[1, 0] == -127  # the absmax maps to exactly +-127
    assert torch.allclose(activation_quant(x), q / scale)


def test_activation_quant_zero_vector_uses_eps():
    x = torch.zeros(2, 8)
    q, scale = activation_quant_int(x)
    assert torch.all(scale == 127.0 / 1e-5)
    assert torch.all(q == 0)
    # Below the eps the scale stops growing: tiny values quantize against 1e-5.
    tiny = torch.full((1, 4), 1e-7)
    assert torch.all(activation_quant_int(tiny)[1] == 127.0 / 1e-5)


@settings(max_examples=200, deadline=None)
@given(arrays("float32", st.integers(1, 64), elements=finite))
def test_activation_codes_stay_in_int8(a):
    q, scale = activation_quant_int(torch.from_numpy(a)[None])
    assert q.min() >= -128 and q.max() <= 127
    assert torch.equal(q, q.round())
    # the largest magnitude lands on +-127 unless everything is below the eps
    if float(abs(torch.from_numpy(a)).max()) > 1e-5:
        assert int(q.abs().max()) == 127


def test_weight_absmean_formula():
    w = torch.tensor([[0.1, -0.4, 0.0], [0.05, 0.3, -0.02]])
    s = w.abs().mean()
    codes, scale = ternarize(w)
    assert torch.equal(scale, s)
    # mmfreelm's spelling: multiply by 1/s, round, clamp; dequantize by dividing by 1/s
    assert torch.equal(codes, (w * (1.0 / s)).round().clamp(-1, 1).to(torch.int8))
    assert codes.tolist() == [[1, -1, 0], [0, 1, 0]]
    assert torch.equal(weight_quant(w), codes.float() / (1.0 / s))
    assert torch.allclose(weight_quant(w), codes.float() * s)


def test_weight_scale_eps():
    assert weight_scale(torch.zeros(4, 4)) == torch.tensor(1e-5)
    codes, _ = ternarize(torch.zeros(3, 3))
    assert torch.all(codes == 0)


@settings(max_examples=200, deadline=None)
@given(arrays("float32", st.tuples(st.integers(1, 16), st.integers(1, 16)), elements=finite))
def test_ternary_codes(a):
    codes, s = ternarize(torch.from_numpy(a))
    assert set(codes.unique().tolist()) <= {-1, 0, 1}
    assert s >= 1e-5
