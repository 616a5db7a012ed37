"""The float model: an independent, literal reading of mmfreelm's forward; recurrent
stepping against the parallel forward; the recurrence scan against a plain loop."""

import torch
import torch.nn.functional as F

from mmfree_fpga.model import BitLinear, HGRNBitForCausalLM, linear_recurrence
from util import tiny_config


def _rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


# mmfreelm master's FusedBitLinear (ops/fusedbitnet.py) normalizes with the fused kernel's
# default eps, 1e-6: its forward passes none. Written here as a literal, not imported.
UPSTREAM_BITLINEAR_EPS = 1e-6


def _bitlinear_eps(sd, prefix, x, eps=UPSTREAM_BITLINEAR_EPS):
    """mmfreelm FusedBitLinear: RMSNorm(eps) -> absmax int8 -> absmean ternary -> linear."""
    x = _rms(x, sd[prefix + ".norm.weight"], eps)
    scale = 127.0 / x.abs().max(dim=-1, keepdim=True).values.clamp(min=1e-5)
    x = (x * scale).round().clamp(-128, 127) / scale
    w = sd[prefix + ".weight"]
    ws = 1.0 / w.abs().mean().clamp(min=1e-5)
    w = (w * ws).round().clamp(-1, 1) / ws
    return x @ w.T


def reference_logits(model: HGRNBitForCausalLM, ids: torch.Tensor,
                     bitlinear_eps: float = UPSTREAM_BITLINEAR_EPS) -> torch.Tensor:
    """Token by token, in the order upstream's modules run, from the state dict alone."""
    cfg = model.config

    def _bitlinear(sd, prefix, x):
        return _bitlinear_eps(sd, prefix, x, bitlinear_eps)

    sd = {k: v.double() for k, v in model.state_dict().items()}
    eps = cfg.rms_norm_eps
    lb = sd["model.lower_bounds"].softmax(0)
    lb = lb.cumsum(0) - lb[0]
    x = sd["model.embeddings.weight"][ids]                       # [B, T, d]
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        residual = x
        h_in = _rms(x, sd[p + "attn_norm.weight"], eps)
        i_ = _bitlinear(sd, p + "attn.i_proj", h_in)
        f = _bitlinear(sd, p + "attn.f_proj", h_in).sigmoid()
        if i > 0:
            f = lb[i] + (1 - lb[i]) * f
        i_ = F.silu(i_) * (1 - f)                                # swiglu(i, 1 - f)
        h = torch.zeros_like(i_[:, 0])
        outs = []
        for t in range(ids.shape[1]):                           # fused_recurrent_hgrn
            h = f[:, t] * h + i_[:, t]
            outs.append(h)
        o = torch.stack(outs, 1)
        g = _bitlinear(sd, p + "attn.g_proj", h_in)
        o = _rms(g, sd[p + "attn.g_norm.weight"], eps) * o * o.sigmoid()  # norm(g) * swish(o)
        x = residual + _bitlinear(sd, p + "attn.o_proj", o)
        y = _bitlinear(sd, p + "mlp.gate_proj", _rms(x, sd[p + "mlp_norm.weight"], eps))
        gate, up = y.chunk(2, -1)
        x = x + _bitlinear(sd, p + "mlp.down_proj", F.silu(gate) * up)
    x = _rms(x, sd["model.norm.weight"], eps)
    return _bitlinear(sd, "lm_head", x)


def test_matches_literal_reference(tiny_model):
    ids = torch.randint(0, 97, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, _ = tiny_model(ids)
    ref = reference_logits(tiny_model, ids)
    # float32 vs float64: agree to rounding, except where an int8 activation code sits on a
    # .5 boundary and flips by one; with these sizes that never happens for this seed.
    assert torch.allclose(logits.double(), ref, atol=2e-4, rtol=1e-4), \
        (logits.double() - ref).abs().max()


def test_bitlinear_norm_eps_where_it_matters():
    """A BitLinear input with mean square 1e-6, where the norm's eps is not negligible: the
    output scales with 1 / sqrt(mean(x^2) + eps), so eps 1e-8 would be 41 % off here. The
    expected value is the fused kernel's formula written out in float64."""
    torch.manual_seed(3)
    layer = BitLinear(64, 16).eval()
    with torch.no_grad():
        layer.norm.weight.uniform_(0.5, 1.5)
    for rms in (1e-3, 3e-4, 1e-2):
        x = torch.randn(5, 64, dtype=torch.float64)
        x = x / x.square().mean(-1, keepdim=True).sqrt() * rms
        g = layer.norm.weight.double()
        y = x / torch.sqrt(x.square().mean(-1, keepdim=True) + 1e-6) * g
        scale = 127.0 / y.abs().amax(-1, keepdim=True).clamp(min=1e-5)
        y = (y * scale).round().clamp(-128, 127) / scale
        w = layer.weight.double()
        inv = 1.0 / w.abs().mean().clamp(min=1e-5)
        want = y @ ((w * inv).round().clamp(-1, 1) / inv).T
        with torch.no_grad():
            got = layer(x.float()).double()
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6), (got - want).abs().max()


def test_literal_reference_sees_the_eps(tiny_model):
    """With small i_proj weights the state h, and so o_proj's input, is small (mean squares
    near 1e-6): the model agrees with the reference at upstream's eps and visibly disagrees
    with one at 1e-8, so the comparison above would catch a wrong eps."""
    with torch.no_grad():
        for layer in tiny_model.model.layers:
            layer.attn.i_proj.weight.mul_(1e-3)
    # (seed 4 puts one int8 code on a .5 boundary, float32 vs float64: a legitimate flip)
    ids = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        logits, _ = tiny_model(ids)
    logits = logits.double()
    right = reference_logits(tiny_model, ids)
    wrong = reference_logits(tiny_model, ids, bitlinear_eps=1e-8)
    assert (logits - right).abs().max() < 2e-4
    assert (logits - wrong).abs().median() > 1e-2       # every position moves, not one flip


def test_recurrent_stepping_equals_parallel(tiny_model):
    ids = torch.randint(0, 97, (3, 50), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        parallel, final = tiny_model(ids)
        state, steps = None, []
        for t in range(ids.shape[1]):
            logits, state = tiny_model(ids[:, t:t + 1], state)
            steps.append(logits)
    stepped = torch.cat(steps, 1)
    # The scan sums in a different order than the loop: float32 rounding only (stated bound).
    assert (parallel - stepped).abs().max() < 1e-4
    for a, b in zip(final, state, strict=True):
        assert (a - b).abs().max() < 1e-5


def test_chunked_prefill_carries_state(tiny_model):
    ids = torch.randint(0, 97, (1, 40), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole, _ = tiny_model(ids)
        first, state = tiny_model(ids[:, :17])
        second, _ = tiny_model(ids[:, 17:], state)
    assert (torch.cat([first, second], 1) - whole).abs().max() < 1e-4


def test_step_api(tiny_model):
    logits, state = tiny_model.step(5)
    assert logits.shape == (97,) and len(state) == 3


def test_linear_recurrence_against_loop():
    g = torch.Generator().manual_seed(4)
    for t in (1, 2, 3, 7, 8, 33):
        a = torch.rand(2, t, 5, generator=g)
        b = torch.randn(2, t, 5, generator=g)
        h0 = torch.randn(2, 5, generator=g)
        h, ref = h0, []
        for i in range(t):
            h = a[:, i] * h + b[:, i]
            ref.append(h)
        assert torch.allclose(linear_recurrence(a, b, h0), torch.stack(ref, 1), atol=1e-6)


def test_lower_bounds():
    torch.manual_seed(0)
    m = HGRNBitForCausalLM(tiny_config(num_hidden_layers=4))
    with torch.no_grad():
        m.model.lower_bounds.normal_()
    lb = m.model.forget_lower_bounds()
    assert torch.all(lb[0] == 0)
    assert torch.all(lb[1:] >= 0) and torch.all(lb < 1)
    assert torch.all(lb[1:] >= lb[:-1])  # monotone in depth: upper layers remember longer


def test_sizes():
    cfg = tiny_config(intermediate_size=None, hidden_size=256, num_hidden_layers=2)
    assert cfg.mlp_intermediate_size == 768  # 256 * ceil(int(256*4*2/3) / 256)
    m = HGRNBitForCausalLM(cfg)
    d, i, v = 256, 768, 97
    ternary = 2 * (4 * d * d + 2 * i * d + i * d) + v * d
    assert m.num_ternary_weights() == ternary
    norms = 2 * (2 * d + 4 * d + d + d + i) + d + d
    assert m.num_parameters() == ternary + v * d + 2 * d + norms


def test_training_gradients_flow(tiny_model):
    tiny_model.train()
    ids = torch.randint(0, 97, (2, 16))
    tiny_model.loss(ids[:, :-1], ids[:, 1:]).backward()
    for name, p in tiny_model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert tiny_model.model.layers[1].attn.i_proj.weight.grad.abs().sum() > 0


def test_eval_sees_every_optimizer_step(tiny_model):
    """Evaluation between training steps must use the current weights, whatever the
    optimizer implementation does to tensor version counters."""
    for impl in ({"foreach": True}, {"foreach": False}):
        opt = torch.optim.AdamW(tiny_model.parameters(), lr=1e-2, **impl)
        ids = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(5))
        for _ in range(3):
            tiny_model.train()
            opt.zero_grad()
            tiny_model.loss(ids[:, :-1], ids[:, 1:]).backward()
            opt.step()
            tiny_model.eval()
            with torch.no_grad():
                got, _ = tiny_model(ids)
            fresh = HGRNBitForCausalLM(tiny_model.config)
            fresh.load_state_dict(tiny_model.state_dict())
            with torch.no_grad():
                want, _ = fresh.eval()(ids)
            assert torch.equal(got, want)


def test_freeze_matches_unfrozen(tiny_model):
    ids = torch.randint(0, 97, (1, 12))
    with torch.no_grad():
        a, _ = tiny_model(ids)
        b, _ = tiny_model.freeze()(ids)
    assert torch.equal(a, b)
    tiny_model.train()
    assert all(m._frozen is None for m in tiny_model.modules() if hasattr(m, "_frozen"))
