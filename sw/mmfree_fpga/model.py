"""The float reference model: HGRNBitForCausalLM with the released ``mmfreelm`` arithmetic.

This is the top of the chain of truth (float model -> integer numerics -> golden model ->
gateware). It follows the released code, not the paper's equations, where the two differ:

- ``BitLinear``: ``RMSNorm(x)`` with its own gain (eps 1e-6, see below), then per-token absmax int8
  fake-quantization (scale ``127 / max(|x|, 1e-5)``, round, clamp to -128..127), then a
  product with ternary weights ``round(w / s).clamp(-1, 1) * s`` with one absmean scale
  ``s = max(mean|w|, 1e-5)`` per tensor. Straight-through estimators carry the gradients.
- MLGRU token mixer (``attn``): ``f = sigmoid(f_proj x)``, raised by the layer's lower bound
  ``f = lb + (1 - lb) f`` where ``lb = cumsum(softmax(lower_bounds, 0)) - softmax(...)[0]``
  (so layer 0 has none); ``c = silu(i_proj x) * (1 - f)``; ``h_t = f_t h_{t-1} + c_t``;
  output ``o_proj(RMSNorm(g_proj x) * silu(h))``: upstream's ``FusedRMSNormSwishGate(g, h)``
  normalizes its first argument (the gate projection) and multiplies by swish of the second
  (the state). No biases anywhere.
- GLU channel mixer: one fused ``gate_proj`` [2I, d] (so gate and up share one weight
  scale), split into ``gate, up``; ``down_proj(silu(gate) * up)``.
- Pre-norm residual blocks (``attn_norm``, ``mlp_norm``), a full-precision embedding, a
  final ``norm`` and a ternary ``lm_head`` (a BitLinear with its own norm).

Everything runs in float32 on the CPU; training may wrap it in bf16 autocast (the matrix
products then run in bf16, the norms and quantizers stay float32). Recurrent inference steps
one token at a time with the per-layer state ``h`` kept; the parallel forward evaluates the
same recurrence with a log-depth scan, and the tests check that the two agree.

Training on a CUDA GPU runs each ``BitLinear`` as the same arithmetic in Triton kernels that
recompute the quantized activation in the backward pass instead of storing it
(``fused_bitlinear.py``; ``MMFREE_FUSED_BITLINEAR=0`` turns it off).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import fused_bitlinear as _fused
from .config import HGRNBitConfig

# The quantizers' constants. The released model (ridgerchu/matmulfreellm, master, HEAD
# a016f72) builds every BitLinear as ``FusedBitLinear`` from mmfreelm/ops/fusedbitnet.py:
# mmfreelm/layers/hgrn_bit.py (i/f/g/o_proj) and models/hgrn_bit/modeling_hgrn_bit.py (the
# MLP's gate_proj/down_proj and lm_head). Its ``forward`` calls
# ``layer_norm_linear_quant_fn(x, norm.weight, ...)`` without the norm's eps, so the fused
# kernel's default, 1e-6, applies: not the 1e-8 that ``BitLinear.__init__`` gives its
# ``RMSNorm`` (which only ops/bitnet.py's unfused BitLinear, the ``bitblas`` branch's, uses).
# The absmax and absmean constants are the same in both files.
BITLINEAR_NORM_EPS = 1e-6
ACT_QMIN, ACT_QMAX = -128, 127
ACT_ABSMAX_EPS = 1e-5
WEIGHT_ABSMEAN_EPS = 1e-5


# -- quantizers ------------------------------------------------------------------------------

def activation_scale(x: torch.Tensor) -> torch.Tensor:
    """Per-token int8 scale ``127 / max(|x|)``, the absmax clamped below by 1e-5."""
    return 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp(min=ACT_ABSMAX_EPS)


def activation_quant_int(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token absmax int8 codes and their scale: ``x ~= q / scale``."""
    scale = activation_scale(x)
    q = (x * scale).round().clamp(ACT_QMIN, ACT_QMAX)
    return q, scale


def activation_quant(x: torch.Tensor) -> torch.Tensor:
    """Fake-quantize activations to int8 per token (the float model's view of them)."""
    q, scale = activation_quant_int(x)
    return q / scale


def weight_scale(w: torch.Tensor) -> torch.Tensor:
    """The per-tensor absmean ``max(mean|w|, 1e-5)``: a ternary code ``t`` means ``t * s``."""
    return w.abs().mean().clamp(min=WEIGHT_ABSMEAN_EPS)


def ternarize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent weights -> (ternary codes in {-1, 0, 1} as int8, absmean scale ``s``).

    Quantize once, from latent weights: re-quantizing codes would change ``s``. The codes
    are ``round(w * (1 / s))`` in upstream's order of operations: ``w / s`` can round the
    other way for a weight within an ulp of ``s / 2`` and flip its code.
    """
    s = weight_scale(w)
    codes = (w * (1.0 / s)).round().clamp(-1, 1)
    return codes.to(torch.int8), s


def weight_quant(w: torch.Tensor) -> torch.Tensor:
    """Fake-quantize weights to ternary, ``codes / (1 / s)`` exactly as upstream computes."""
    inv = 1.0 / weight_scale(w)
    return (w * inv).round().clamp(-1, 1) / inv


# -- layers ------------------------------------------------------------------------------------

class RMSNorm(nn.Module):
    """``x / sqrt(mean(x^2) + eps) * weight``, computed in float32."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        rstd = 1 / torch.sqrt(xf.square().mean(dim=-1, keepdim=True) + self.eps)  # as upstream
        return (xf * rstd * self.weight.float()).to(x.dtype)


class BitLinear(nn.Module):
    """RMSNorm -> int8 activations -> ternary weights -> linear; no bias."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.norm = RMSNorm(in_features, eps=BITLINEAR_NORM_EPS)
        self._frozen: torch.Tensor | None = None
        nn.init.normal_(self.weight, std=0.02)

    def freeze(self) -> None:
        """Quantize the weights once for inference (undone by ``train()``).

        Explicit, because an in-place optimizer step need not bump a tensor's version
        counter: a cache keyed on it silently served stale weights during evaluation.
        """
        with torch.no_grad():
            self._frozen = weight_quant(self.weight)

    def train(self, mode: bool = True):
        if mode:
            self._frozen = None
        return super().train(mode)

    def quantized_weight(self) -> torch.Tensor:
        if self._frozen is not None:
            return self._frozen
        w = self.weight
        if not torch.is_grad_enabled():  # exactly codes * scale, not w + (q - w)
            return weight_quant(w)
        return w + (weight_quant(w) - w).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (torch.is_grad_enabled() and x.is_cuda and self._frozen is None
                and _fused.available(x, self.weight, self.norm.weight)):
            return _fused.fused_bitlinear(x, self.norm.weight, self.weight, self.norm.eps)
        x = self.norm(x)
        if torch.is_grad_enabled():  # straight-through: quantized forward, identity backward
            x = x + (activation_quant(x) - x).detach()
        else:
            x = activation_quant(x)
        return F.linear(x, self.quantized_weight())

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def linear_recurrence(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None):
    """``h_t = a_t * h_{t-1} + b_t`` along dim 1 of [B, T, D] tensors, as a log-depth scan.

    Each step composes every position with the one ``k`` back (Hillis-Steele), so the depth
    is ceil(log2 T) elementwise operations instead of T sequential ones; every product is of
    gates in [0, 1], so nothing overflows. Plain autograd differentiates it.
    """
    if h0 is not None:
        b = torch.cat([b[:, :1] + a[:, :1] * h0[:, None], b[:, 1:]], dim=1)
    k, t = 1, a.shape[1]
    while k < t:
        b = torch.cat([b[:, :k], b[:, k:] + a[:, k:] * b[:, :-k]], dim=1)
        a = torch.cat([a[:, :k], a[:, k:] * a[:, :-k]], dim=1)
        k *= 2
    return b


class HGRNBitAttention(nn.Module):
    """The MLGRU token mixer (named ``attn`` in checkpoints, as upstream)."""

    def __init__(self, config: HGRNBitConfig):
        super().__init__()
        d, n = config.hidden_size, config.input_dim
        self.i_proj = BitLinear(d, n)
        self.f_proj = BitLinear(d, n)
        self.g_proj = BitLinear(d, n)
        self.g_norm = RMSNorm(n, eps=config.rms_norm_eps)
        self.o_proj = BitLinear(n, d)

    def forward(self, x, lower_bound=None, state=None):
        """x: [B, T, d]; state: [B, n] or None. Returns (output [B, T, d], new state)."""
        f = torch.sigmoid(self.f_proj(x))
        if lower_bound is not None:
            f = lower_bound + (1 - lower_bound) * f
        c = F.silu(self.i_proj(x)) * (1 - f)
        if x.shape[1] == 1:
            h = c if state is None else f * state[:, None] + c
        else:
            h = linear_recurrence(f, c, state)
        o = self.g_norm(self.g_proj(x)) * F.silu(h)
        return self.o_proj(o), h[:, -1]


class HGRNBitMLP(nn.Module):
    """The GLU channel mixer: fused ``gate_proj`` [2I, d] then ``down_proj``."""

    def __init__(self, config: HGRNBitConfig):
        super().__init__()
        d, i = config.hidden_size, config.mlp_intermediate_size
        self.gate_proj = BitLinear(d, 2 * i)
        self.down_proj = BitLinear(i, d)

    def forward(self, x):
        gate, up = self.gate_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class HGRNBitBlock(nn.Module):
    def __init__(self, config: HGRNBitConfig):
        super().__init__()
        self.attn_norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.attn = HGRNBitAttention(config)
        self.mlp_norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = HGRNBitMLP(config)

    def forward(self, x, lower_bound=None, state=None):
        a, state = self.attn(self.attn_norm(x), lower_bound, state)
        x = x + a
        return x + self.mlp(self.mlp_norm(x)), state


class HGRNBitModel(nn.Module):
    def __init__(self, config: HGRNBitConfig):
        super().__init__()
        self.config = config
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size,
                                       padding_idx=config.pad_token_id)
        if config.use_lower_bound:
            self.lower_bounds = nn.Parameter(
                torch.zeros(config.num_hidden_layers, config.hidden_size))
        self.layers = nn.ModuleList(HGRNBitBlock(config)
                                    for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forget_lower_bounds(self) -> torch.Tensor | None:
        """Per-layer forget-gate lower bounds [L, d]; row 0 is exactly zero."""
        if not self.config.use_lower_bound:
            return None
        lb = self.lower_bounds.float().softmax(dim=0)
        return lb.cumsum(dim=0) - lb[0]

    def forward(self, input_ids, state=None):
        x = self.embeddings(input_ids)
        lbs = self.forget_lower_bounds()
        new_state = []
        for i, layer in enumerate(self.layers):
            x, s = layer(x, None if lbs is None else lbs[i],
                         None if state is None else state[i])
            new_state.append(s)
        return self.norm(x), new_state


class HGRNBitForCausalLM(nn.Module):
    """Token ids -> next-token logits, with the recurrent state passed explicitly."""

    def __init__(self, config: HGRNBitConfig):
        super().__init__()
        self.config = config
        self.model = HGRNBitModel(config)
        self.lm_head = BitLinear(config.hidden_size, config.vocab_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """mmfreelm's init: N(0, initializer_range), residual outputs scaled by 1/sqrt(2L)."""
        std = self.config.initializer_range
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(p)
            elif name == "model.lower_bounds":
                nn.init.zeros_(p)
            else:
                nn.init.normal_(p, std=std)
                if name.endswith(("o_proj.weight", "down_proj.weight")):
                    p.data /= math.sqrt(2 * self.config.num_hidden_layers)
        pad = self.config.pad_token_id
        if pad is not None:
            self.model.embeddings.weight.data[pad].zero_()

    def forward(self, input_ids: torch.Tensor, state=None):
        """input_ids [B, T] -> (logits [B, T, V] float32, state: list of [B, n] per layer)."""
        h, state = self.model(input_ids, state)
        return self.lm_head(h).float(), state

    def loss(self, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits, _ = self(input_ids)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    def freeze(self) -> HGRNBitForCausalLM:
        """Eval mode with the ternary weights computed once (for inference, not training)."""
        self.eval()
        for m in self.modules():
            if isinstance(m, BitLinear):
                m.freeze()
        return self

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def num_ternary_weights(self) -> int:
        return sum(m.weight.numel() for m in self.modules() if isinstance(m, BitLinear))

    @torch.no_grad()
    def step(self, token: int | torch.Tensor, state=None):
        """Advance one token (recurrent inference). Returns (logits [V], new state)."""
        ids = torch.as_tensor(token, dtype=torch.long).reshape(1, 1)
        logits, state = self(ids, state)
        return logits[0, -1], state
