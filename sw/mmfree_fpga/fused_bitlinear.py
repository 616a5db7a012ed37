"""A memory-lean fused BitLinear for training on CUDA (Triton kernels in one autograd.Function).

``model.BitLinear`` in training keeps, per call, the float32 normalised activation (RMSNorm's
``x * rstd``), the matmul-dtype copy of the fake-quantised activation that ``F.linear`` saves
and, for a bf16 input, RMSNorm's float32 copy of it: 6 to 10 bytes per input element on top of
the input itself, which its producer keeps anyway. This layer keeps the input, one float32
``rstd`` per row and the weight's ``1 / s``; nothing of size [tokens, in_features].

Forward: one kernel reads a tile of rows of ``x`` and writes the fake-quantised activation
straight in the matmul's dtype (bf16 under autocast) and ``rstd``; a second writes the ternary
weight in that dtype; then ``F.linear``. Backward: the first kernel runs again on the same
inputs and gives the same activation bit for bit, for ``grad_W = grad^T y``; it is dropped
before ``grad_y = grad W_q``, and a third kernel does the RMSNorm backward (gain included),
reading ``x`` again, with the straight-through estimator of the plain layer: the gradient with
respect to the normalised activation is ``grad_y`` unchanged.

Why it equals the plain layer: the kernels perform the plain layer's operations in its order
and rounding: IEEE division and square root (``div_rn``, ``sqrt_rn``), no FMA contraction,
``127 / amax`` as ``reciprocal(amax) * 127`` (what ``Tensor.__rtruediv__`` computes), round
half to even, the straight-through sums ``n + (q(n) - n)`` and ``w + (q(w) - w)`` evaluated
rather than assumed, and, for a bf16 input, the normalised value rounded to bf16 (RMSNorm
returns its input's dtype) and the quantiser then in float32, as under autocast, which runs
``reciprocal`` in float32 and so promotes the rest; the weight scale comes from
``model.weight_scale`` itself.
What differs is the order of the float32 sum of squares inside RMSNorm, so ``rstd`` may
differ in its last bit, which very rarely moves a value across a rounding tie and changes
one int8 code by one (the GPU test measures how rarely); and the backward's float32
arithmetic, equal up to rounding.

The CPU never comes here: ``available`` is false for CPU tensors and without Triton, and
importing this module needs neither. ``ENABLED`` (environment ``MMFREE_FUSED_BITLINEAR=0``
turns it off) lets a benchmark compare the two layers in one process. Code being traced by
``torch.compile`` gets the plain layer: Inductor fuses and recomputes it to the same memory
(scripts/bench_bitlinear.py measures it), and a graph break at every BitLinear made the
compiled shipped model's step 4.5x slower.
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F

from . import model as _model  # late-bound: model.py imports this module

try:  # guarded: CPU-only installs have no Triton, and must import this module all the same
    import triton
    import triton.language as tl

    try:
        from triton.language.extra import libdevice
    except ImportError:
        try:
            from triton.language.extra.cuda import libdevice
        except ImportError:
            libdevice = tl.math
except Exception:  # any failure to import Triton only means "no fused path"
    triton = None

ENABLED = os.environ.get("MMFREE_FUSED_BITLINEAR", "1") != "0"
MAX_FEATURES = 16384          # one row per register tile; wider rows use the plain layer
_X_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Launch shapes, measured on an H200 at 262144 x 1024 (the forward kernel at ~65 % and the
# backward at ~80 % of the memory bandwidth; 4096-element tiles or 8 warps were slower).
_TILE = 2048                  # elements per program in the row kernels
_WARPS = 4                    # per _TILE elements
_BWD_PROGRAMS_PER_SM = 16     # the RMSNorm backward: programs, each a run of rows


def available(x: torch.Tensor, *params: torch.Tensor) -> bool:
    """Whether ``fused_bitlinear`` applies: enabled, Triton present, CUDA tensors, float32
    parameters, and a matmul dtype the plain layer would use (autocast, or float32 ``x``)."""
    return (ENABLED and triton is not None and x.is_cuda and x.numel() > 0
            and not torch.compiler.is_compiling()
            and x.dtype in _X_DTYPES and x.shape[-1] <= MAX_FEATURES
            and all(p.is_cuda and p.dtype == torch.float32 for p in params)
            and (_autocast_dtype() is not None or x.dtype == torch.float32))


def _autocast_dtype() -> torch.dtype | None:
    """The dtype ``F.linear`` runs in under CUDA autocast, or None without it."""
    try:
        if torch.is_autocast_enabled("cuda"):
            return torch.get_autocast_dtype("cuda")
    except TypeError:  # torch < 2.4 has only the argument-less, CUDA-only forms
        if torch.is_autocast_enabled():
            return torch.get_autocast_gpu_dtype()
    return None


def fused_bitlinear(x: torch.Tensor, norm_weight: torch.Tensor, weight: torch.Tensor,
                    eps: float | None = None) -> torch.Tensor:
    """``BitLinear``'s training forward: RMSNorm (gain ``norm_weight``, ``eps``, by default
    the model's 1e-6), int8 activations, ternary ``weight``, linear; differentiable."""
    eps = _model.BITLINEAR_NORM_EPS if eps is None else eps
    mm_dtype = _autocast_dtype() or x.dtype
    return _FusedBitLinearFn.apply(x, norm_weight, weight, eps, mm_dtype)


class _FusedBitLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, norm_weight, weight, eps, mm_dtype):
        x2 = x.reshape(-1, x.shape[-1])
        if x2.stride(-1) != 1:
            x2 = x2.contiguous()
        y, rstd = _norm_quant(x2, norm_weight, eps, mm_dtype)
        inv = 1.0 / _model.weight_scale(weight)   # the plain layer's own reduction and order
        out = F.linear(y, _weight_quant(weight, inv, mm_dtype))
        ctx.save_for_backward(x2, norm_weight, weight, rstd, inv)
        ctx.eps, ctx.mm_dtype, ctx.x_shape = eps, mm_dtype, x.shape
        return out.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad_out):
        x2, norm_weight, weight, rstd, inv = ctx.saved_tensors
        go = grad_out.reshape(-1, weight.shape[0]).to(ctx.mm_dtype)
        grad_w = None
        if ctx.needs_input_grad[2]:
            y, _ = _norm_quant(x2, norm_weight, ctx.eps, ctx.mm_dtype)  # recomputed, not stored
            # grad^T y as the plain layer's mm backward forms it, then its float32 cast.
            grad_w = go.t().mm(y).to(weight.dtype)
            del y
        grad_x = grad_g = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            grad_y = go.mm(_weight_quant(weight, inv, ctx.mm_dtype))
            grad_x, grad_g = _norm_backward(x2, norm_weight, rstd, grad_y)
            grad_x = grad_x.view(ctx.x_shape)
        return grad_x, grad_g, grad_w, None, None


# -- launchers ---------------------------------------------------------------------------------

@functools.cache
def _sm_count(device_index: int | None) -> int:
    return torch.cuda.get_device_properties(device_index or 0).multi_processor_count


def _row_tiling(d: int) -> tuple[int, int, int]:
    """(block over features, rows per tile, warps): a whole row per tile, ~_TILE elements."""
    block_d = triton.next_power_of_2(d)
    rows = max(1, _TILE // block_d)
    return block_d, rows, min(16, _WARPS * max(1, block_d * rows // _TILE))


# The forward kernels are compiled without FMA contraction: fused into the STE sum, the
# product that forms the normalised value made ``n + (q(n) - n)`` differ from the plain layer
# (zero codes came out as the rounding error of ``n`` instead of 0).
def _norm_quant(x2, norm_weight, eps, out_dtype):
    n, d = x2.shape
    y = torch.empty((n, d), device=x2.device, dtype=out_dtype)
    rstd = torch.empty(n, device=x2.device, dtype=torch.float32)
    block_d, rows, warps = _row_tiling(d)
    round_x = x2.dtype != torch.float32
    # The absmax floor as the plain layer's clamp sees it: in x's dtype (the clamp precedes
    # the reciprocal, which autocast runs in float32).
    absmax_eps = float(torch.tensor(_model.ACT_ABSMAX_EPS, dtype=x2.dtype)) if round_x \
        else _model.ACT_ABSMAX_EPS
    _norm_quant_kernel[(triton.cdiv(n, rows),)](
        x2, norm_weight, y, rstd, n, d, x2.stride(0), 1.0 / d, eps, absmax_eps,
        float(_model.ACT_QMIN), float(_model.ACT_QMAX),
        BLOCK_D=block_d, ROWS=rows, ROUND_X=round_x, num_warps=warps, enable_fp_fusion=False)
    return y, rstd


def _weight_quant(weight, inv, out_dtype):
    w = weight.contiguous()
    wq = torch.empty(w.shape, device=w.device, dtype=out_dtype)
    block = 4096
    _weight_quant_kernel[(triton.cdiv(w.numel(), block),)](w, inv, wq, w.numel(), BLOCK=block,
                                                           num_warps=8, enable_fp_fusion=False)
    return wq


def _norm_backward(x2, norm_weight, rstd, grad_y):
    n, d = x2.shape
    block_d, rows, warps = _row_tiling(d)
    # A few programs per SM, each a run of rows, so the gain's gradient needs only a small
    # [programs, d] partial sum instead of a [tokens, d] product.
    programs = min(triton.cdiv(n, rows), _BWD_PROGRAMS_PER_SM * _sm_count(x2.device.index))
    rows_per_program = triton.cdiv(triton.cdiv(n, programs), rows) * rows
    programs = triton.cdiv(n, rows_per_program)
    grad_x = torch.empty((n, d), device=x2.device, dtype=x2.dtype)
    partial = torch.empty((programs, d), device=x2.device, dtype=torch.float32)
    _norm_bwd_kernel[(programs,)](
        x2, norm_weight, rstd, grad_y, grad_x, partial, n, d, x2.stride(0), grad_y.stride(0),
        1.0 / d, rows_per_program, BLOCK_D=block_d, ROWS=rows, num_warps=warps)
    return grad_x, partial.sum(0)


# -- kernels -----------------------------------------------------------------------------------

if triton is not None:
    @triton.jit
    def _norm_quant_kernel(X, G, Y, RSTD, n_rows, d, stride_x, inv_d, eps, absmax_eps,
                           qmin, qmax, BLOCK_D: tl.constexpr, ROWS: tl.constexpr,
                           ROUND_X: tl.constexpr):
        # RMSNorm then per-row absmax int8 fake quantisation plus the STE sum, rows x feature.
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        cols = tl.arange(0, BLOCK_D)
        row_ok = rows < n_rows
        mask = row_ok[:, None] & (cols[None, :] < d)
        offs = rows.to(tl.int64)[:, None] * stride_x + cols[None, :]
        x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(G + cols, mask=cols < d, other=0.0)
        ms = tl.sum(x * x, axis=1) * inv_d
        one = tl.full([ROWS], 1.0, tl.float32)   # div_rn does not broadcast its operands
        rstd = tl.math.div_rn(one, tl.math.sqrt_rn(ms + eps))
        nx = x * rstd[:, None] * g[None, :]
        if ROUND_X:  # RMSNorm returns x's dtype; autocast computes the quantiser in float32
            nx = nx.to(X.dtype.element_ty).to(tl.float32)
        amax = tl.maximum(tl.max(tl.abs(nx), axis=1), absmax_eps)
        scale = tl.broadcast_to((tl.math.div_rn(one, amax) * 127.0)[:, None], (ROWS, BLOCK_D))
        q = tl.minimum(tl.maximum(libdevice.rint(nx * scale), qmin), qmax)
        r = nx + (tl.math.div_rn(q, scale) - nx)
        tl.store(Y + rows.to(tl.int64)[:, None] * d + cols[None, :],
                 r.to(Y.dtype.element_ty), mask=mask)
        tl.store(RSTD + rows, rstd, mask=row_ok)

    @triton.jit
    def _weight_quant_kernel(W, INV, WQ, numel, BLOCK: tl.constexpr):
        # w + (round(w * inv).clamp(-1, 1) / inv - w), cast to the matmul dtype.
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < numel
        w = tl.load(W + offs, mask=mask, other=0.0)
        inv = tl.load(INV + offs * 0)  # the scalar in every lane: div_rn does not broadcast
        t = tl.minimum(tl.maximum(libdevice.rint(w * inv), -1.0), 1.0)
        r = w + (tl.math.div_rn(t, inv) - w)
        tl.store(WQ + offs, r.to(WQ.dtype.element_ty), mask=mask)

    @triton.jit
    def _norm_bwd_kernel(X, G, RSTD, DY, DX, DG, n_rows, d, stride_x, stride_dy, inv_d,
                         rows_per_program, BLOCK_D: tl.constexpr, ROWS: tl.constexpr):
        # dx = rstd * (gw - xhat * mean(gw * xhat)), gw = dy * g; dg = sum_rows dy * xhat.
        pid = tl.program_id(0)
        cols = tl.arange(0, BLOCK_D)
        col_ok = cols < d
        g = tl.load(G + cols, mask=col_ok, other=0.0)
        acc = tl.zeros([BLOCK_D], dtype=tl.float32)
        start = pid * rows_per_program
        end = tl.minimum(start + rows_per_program, n_rows)
        for r0 in range(start, end, ROWS):
            rows = r0 + tl.arange(0, ROWS)
            row_ok = rows < end
            mask = row_ok[:, None] & col_ok[None, :]
            rows64 = rows.to(tl.int64)[:, None]
            x = tl.load(X + rows64 * stride_x + cols[None, :], mask=mask, other=0.0)
            dy = tl.load(DY + rows64 * stride_dy + cols[None, :], mask=mask, other=0.0)
            x = x.to(tl.float32)
            dy = dy.to(tl.float32)
            rstd = tl.load(RSTD + rows, mask=row_ok, other=0.0)
            xhat = x * rstd[:, None]
            gw = dy * g[None, :]
            c = tl.sum(gw * xhat, axis=1) * inv_d
            dx = (gw - xhat * c[:, None]) * rstd[:, None]
            tl.store(DX + rows64 * d + cols[None, :], dx.to(DX.dtype.element_ty), mask=mask)
            acc += tl.sum(dy * xhat, axis=0)
        tl.store(DG + pid * d + cols, acc, mask=col_ok)
