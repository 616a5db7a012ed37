"""The fused BitLinear (fused_bitlinear.py) against the plain one (model.BitLinear).

The first two tests run everywhere (CI is CPU-only): the CPU never takes the fused path and
the module imports without CUDA or Triton. The rest need a CUDA GPU with Triton and are
skipped otherwise; run them with ``PYTHONPATH=sw python -m pytest tests/test_fused_bitlinear.py``.

Tolerances on the GPU, and why (measured on an H200, torch 2.11, Triton 3.6, in brackets):
- ternary weights (matmul dtype): bit-identical (same scale tensor, same elementwise IEEE ops);
- activations: the fused RMSNorm sums its squares in another order, so ``rstd`` can differ in
  its last bit [in 16-19 % of rows, by <= 1.9e-7 relative], and then a value that close to a
  rounding tie gets the neighbouring int8 code: at most 1e-4 of the activations may change
  code [2e-7 to 4e-7], by one code at most, plus the roundings of a bf16 input (which can
  move the row's scale) and of a bf16 output; every other difference is float rounding
  [bf16 activations: none; float32 ones: 12-13 % differ in the last bit, in those rows];
- outputs: rows whose activations are identical give bit-identical outputs (the same GEMM)
  [87 % of rows in float32, > 99.9 % under autocast]; all rows within a relative (Frobenius)
  error of 1e-3 [1.8e-5 to 3.6e-5];
- gradients (x, weight, RMSNorm gain): relative (Frobenius) error <= 1e-3 under bf16 autocast
  [<= 1e-4] and <= 1e-4 in float32 [<= 1.7e-5]: the backward's float32 arithmetic is the same
  up to rounding, and the rare code changes move the weight gradient a little;
- 50 training steps of a small hgrn_bit (d 128, 2 layers) from one seed: the first step's
  loss within 1e-4 [4e-6], the two loss curves within 5e-2 of each other at every step
  [2.5e-2] while the loss falls from 5.55 to 1.44: the rare differences compound over steps.
"""

import pytest
import torch
import torch.nn.functional as F

from mmfree_fpga import fused_bitlinear as fb
from mmfree_fpga.config import HGRNBitConfig
from mmfree_fpga.model import BitLinear, HGRNBitForCausalLM, activation_quant, weight_quant
from util import tiny_config

gpu = pytest.mark.skipif(not torch.cuda.is_available() or fb.triton is None,
                         reason="needs a CUDA GPU and Triton")


def _raise(*args, **kwargs):
    raise AssertionError("the fused BitLinear was called on the CPU")


def test_cpu_never_takes_the_fused_path(monkeypatch):
    monkeypatch.setattr(fb, "fused_bitlinear", _raise)
    torch.manual_seed(0)
    model = HGRNBitForCausalLM(tiny_config()).train()
    ids = torch.randint(0, 97, (2, 9))
    model.loss(ids[:, :-1], ids[:, 1:]).backward()  # would raise on the fused path
    assert all(p.grad is not None for p in model.parameters())
    x = torch.randn(5, 32)
    assert not fb.available(x, model.lm_head.weight)


def test_cpu_bitlinear_is_the_plain_arithmetic():
    torch.manual_seed(1)
    layer = BitLinear(48, 24)
    with torch.no_grad():
        layer.norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(3, 7, 48)
    xn = layer.norm(x)
    w = layer.weight
    expect = F.linear(xn + (activation_quant(xn) - xn).detach(), w + (weight_quant(w) - w).detach())
    assert torch.equal(layer(x), expect)


# -- on a CUDA GPU -----------------------------------------------------------------------------

CASES = {  # name: (dtype of x, autocast dtype or None); as our model's BitLinears see them
    "fp32 x, bf16 autocast": (torch.float32, torch.bfloat16),   # fed by an RMSNorm
    "bf16 x, bf16 autocast": (torch.bfloat16, torch.bfloat16),  # o_proj, down_proj
    "fp32, no autocast": (torch.float32, None),
}


def _autocast(dtype):
    return torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None)


def _layer(d_in, d_out, seed=0):
    torch.manual_seed(seed)
    layer = BitLinear(d_in, d_out).cuda()
    with torch.no_grad():
        layer.norm.weight.uniform_(0.5, 1.5)
    return layer


def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _run(layer, x, go, amp, fused, monkeypatch):
    monkeypatch.setattr(fb, "ENABLED", fused)
    layer.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_()
    with _autocast(amp):
        out = layer(x)
    out.backward(go)
    return out.detach(), x.grad, layer.weight.grad, layer.norm.weight.grad


@gpu
@pytest.mark.parametrize("shape", [(1024, 768), (640, 1000)])
def test_ternary_weights_are_bit_identical(shape):
    layer = _layer(*shape)
    w = layer.weight.detach()
    inv = 1.0 / fb._model.weight_scale(w)
    plain = w + (weight_quant(w) - w)
    for dtype in (torch.float32, torch.bfloat16):
        assert torch.equal(fb._weight_quant(w, inv, dtype), plain.to(dtype))


@gpu
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("shape", [(1024, 768), (640, 1000)])
def test_forward_matches_plain(case, shape, monkeypatch):
    x_dtype, amp = CASES[case]
    layer = _layer(*shape)
    torch.manual_seed(2)
    x = (torch.randn(8, 1024, shape[0], device="cuda") * 3).to(x_dtype)
    mm = amp or x_dtype
    with torch.no_grad(), _autocast(amp):
        xn = layer.norm(x)
        y_plain = (xn + (activation_quant(xn) - xn)).to(mm).reshape(-1, shape[0])
        quantum = (1 / fb._model.activation_scale(xn.float())).reshape(-1, 1)
        rstd_plain = 1 / torch.sqrt(x.float().square().mean(-1) + layer.norm.eps)
    y_fused, rstd = fb._norm_quant(x.reshape(-1, shape[0]), layer.norm.weight, layer.norm.eps, mm)
    rstd_plain = rstd_plain.reshape(-1)
    diff = (y_fused.float() - y_plain.float()).abs()
    changed = (diff > 0.5 * quantum).float().mean().item()
    print(f"\n{case} {shape}: rstd differs in {(rstd != rstd_plain).float().mean().item():.3f} "
          f"of rows (max rel {((rstd - rstd_plain).abs() / rstd_plain).max().item():.1e}); "
          f"activations differing {(diff > 0).float().mean().item():.2e}, changed code "
          f"{changed:.2e}, max change {(diff / quantum).max().item():.3f} codes")
    assert changed <= 1e-4
    # One code at most, plus the roundings of a bf16 normalised input (which moves the scale)
    # and of the bf16 output.
    eps = torch.finfo(x_dtype).eps + torch.finfo(mm).eps
    assert (diff <= 1.02 * quantum + eps * xn.float().abs().reshape(diff.shape)).all()

    go = torch.randn(8, 1024, shape[1], device="cuda", dtype=mm)
    out_p = _run(layer, x, go, amp, False, monkeypatch)[0].reshape(-1, shape[1])
    out_f = _run(layer, x, go, amp, True, monkeypatch)[0].reshape(-1, shape[1])
    same_rows = (y_fused == y_plain).all(dim=1)
    print(f"  rows with identical activations {same_rows.float().mean().item():.4f}, "
          f"output relative error {_rel(out_f, out_p):.2e}")
    assert torch.equal(out_f[same_rows], out_p[same_rows])
    assert _rel(out_f, out_p) <= 1e-3


@gpu
@pytest.mark.parametrize("case", CASES)
def test_gradients_match_plain(case, monkeypatch):
    x_dtype, amp = CASES[case]
    layer = _layer(1024, 768)
    torch.manual_seed(3)
    x = (torch.randn(4, 2048, 1024, device="cuda") * 3).to(x_dtype)
    go = torch.randn(4, 2048, 768, device="cuda", dtype=amp or x_dtype)
    plain = _run(layer, x, go, amp, False, monkeypatch)
    fused = _run(layer, x, go, amp, True, monkeypatch)
    tol = 1e-3 if amp else 1e-4
    errors = {name: _rel(f, p) for name, f, p in zip(("out", "x", "weight", "norm"),
                                                       fused, plain, strict=True)}
    print(f"\n{case}: relative errors " + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))
    assert fused[1].dtype == x_dtype and fused[2].dtype == fused[3].dtype == torch.float32
    assert max(errors.values()) <= tol


@gpu
def test_model_takes_the_fused_path_on_cuda(monkeypatch):
    calls = []
    real = fb.fused_bitlinear

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(fb, "fused_bitlinear", counting)
    torch.manual_seed(0)
    model = HGRNBitForCausalLM(tiny_config()).cuda().train()
    ids = torch.randint(0, 97, (2, 9), device="cuda")
    with _autocast(torch.bfloat16):
        model.loss(ids[:, :-1], ids[:, 1:]).backward()
    n_bitlinear = sum(isinstance(m, BitLinear) for m in model.modules())
    assert len(calls) == n_bitlinear
    with torch.no_grad():  # inference stays on the plain path
        model(ids)
    monkeypatch.setattr(fb, "ENABLED", False)
    with _autocast(torch.bfloat16):
        model.loss(ids[:, :-1], ids[:, 1:]).backward()
    assert len(calls) == n_bitlinear


def _loss_curve(fused, monkeypatch, steps=50):
    monkeypatch.setattr(fb, "ENABLED", fused)
    torch.manual_seed(0)
    cfg = HGRNBitConfig(vocab_size=256, hidden_size=128, num_hidden_layers=2)
    model = HGRNBitForCausalLM(cfg).cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1, fused=True)
    gen = torch.Generator().manual_seed(0)
    successors = torch.randint(0, 256, (256, 4), generator=gen)  # a learnable Markov chain
    picks = torch.randint(0, 4, (8192,), generator=gen).tolist()
    corpus = [0]
    for k in picks[1:]:
        corpus.append(int(successors[corpus[-1], k]))
    corpus = torch.tensor(corpus)
    losses = []
    for _ in range(steps):
        starts = torch.randint(0, len(corpus) - 129, (16,), generator=gen)
        w = corpus[starts[:, None] + torch.arange(129)].cuda()
        with _autocast(torch.bfloat16):
            logits, _ = model(w[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, 256), w[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    return torch.tensor(losses)


@gpu
def test_training_loss_curves_match(monkeypatch):
    plain = _loss_curve(False, monkeypatch)
    fused = _loss_curve(True, monkeypatch)
    gap = (fused - plain).abs()
    print(f"\nloss plain {plain[0]:.4f} -> {plain[-1]:.4f}, fused {fused[0]:.4f} -> "
          f"{fused[-1]:.4f}; max gap {gap.max():.2e}, first-step gap {gap[0]:.2e}")
    assert plain[0] - plain[-1] > 3.0
    assert gap[0] <= 1e-4
    assert gap.max() <= 5e-2
