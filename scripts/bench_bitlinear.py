"""Peak memory and step time of the plain and the fused BitLinear on one CUDA GPU.

    PYTHONPATH=sw python scripts/bench_bitlinear.py --out bench_bitlinear.json

(a) One BitLinear at the paper's setting (Zhu et al. 2024, the fused-BitLinear figure): input
    size 1024 (output 1024 here), sequence 1024 x batch 256 = 262144 tokens flattened; one
    training step = forward + backward with a given output gradient, parameter and input
    gradients freshly allocated as in training. Under bf16 autocast as training runs it, with
    a float32 input (how our model's RMSNorm-fed BitLinears see it) and a bf16 input (o_proj,
    down_proj), and in plain float32; the plain layer also under ``torch.compile``.
(b) Whole hgrn_bit training steps as ``train.py`` runs them (bf16 autocast forward, float32
    cross-entropy, zero_grad, backward, gradient clipping, fused AdamW) for the shipped
    model's shape, a 370M shape and a 1.3B shape; eager and (where asked) compiled, which
    is the plain layer either way (see fused_bitlinear.py).

Peak memory is ``torch.cuda.max_memory_allocated`` over one step after warm-up (the step's
inputs, parameters and optimizer state included; "above inputs" subtracts what was allocated
just before the step). Step time is the median of timed steps, each synchronized.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mmfree_fpga import fused_bitlinear as fb
from mmfree_fpga.config import HGRNBitConfig
from mmfree_fpga.model import BitLinear, HGRNBitForCausalLM

GIB = 2 ** 30
SHAPES = {  # name: (config keys, batch, sequence)
    "shipped (d256 L6 V4096)": (None, 64, 256),  # models/default/config.json; train batch
    "370M (d1024 L24 V32000)": (dict(hidden_size=1024, num_hidden_layers=24,
                                     vocab_size=32000), 8, 1024),
    "1.3B (d2048 L24 V32000)": (dict(hidden_size=2048, num_hidden_layers=24,
                                     vocab_size=32000), 8, 1024),
}
LAYER_CASES = {  # name: (dtype of x, autocast dtype or None)
    "bf16 autocast, fp32 x": (torch.float32, torch.bfloat16),
    "bf16 autocast, bf16 x": (torch.bfloat16, torch.bfloat16),
    "fp32": (torch.float32, None),
}


def _autocast(dtype):
    return torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None)


def _clear():
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()


def measure(step, reset, warmup: int, iters: int) -> dict:
    """Warm up (compiling, allocating optimizer state), then one step for the peak memory,
    then ``iters`` timed steps."""
    t0 = time.perf_counter()
    step()
    torch.cuda.synchronize()
    first = time.perf_counter() - t0
    for _ in range(warmup - 1):
        step()
    reset()
    _clear()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return {"peak_gib": peak / GIB, "above_inputs_gib": (peak - base) / GIB,
            "inputs_gib": base / GIB, "step_ms": 1e3 * statistics.median(times),
            "step_ms_min": 1e3 * min(times), "first_step_s": first}


def _variant(fused: bool, compiled: bool) -> str:
    return ("fused" if fused else "plain") + (" + compile" if compiled else "")


def bench_layer(args) -> list[dict]:
    tokens, d_in, d_out = args.layer_tokens, 1024, 1024
    rows = []
    for case, (x_dtype, amp) in LAYER_CASES.items():
        variants = [(False, False), (True, False)]
        if args.compile:
            variants.append((False, True))
        for fused, compiled in variants:
            fb.ENABLED = fused
            torch._dynamo.reset()
            torch.manual_seed(0)
            layer = BitLinear(d_in, d_out).cuda()
            fwd = torch.compile(layer) if compiled else layer
            x = torch.randn(tokens, d_in, device="cuda", dtype=x_dtype).requires_grad_()
            go = torch.randn(tokens, d_out, device="cuda", dtype=amp or x_dtype)

            def reset(layer=layer, x=x):
                layer.zero_grad(set_to_none=True)
                x.grad = None

            def step(fwd=fwd, x=x, go=go, amp=amp, reset=reset):
                reset()
                with _autocast(amp):
                    out = fwd(x)
                out.backward(go)

            r = measure(step, reset, args.warmup, args.iters)
            rows.append({"case": case, "variant": _variant(fused, compiled), "tokens": tokens,
                         "in": d_in, "out": d_out} | r)
            _print_row(rows[-1], case)
            del layer, fwd, x, go, step, reset
            _clear()
    return rows


def bench_model(args, name: str) -> list[dict]:
    keys, batch, seq = SHAPES[name]
    if keys is None:
        path = Path(__file__).resolve().parents[1] / "sw/mmfree_fpga/models/default/config.json"
        cfg = HGRNBitConfig.from_dict(json.loads(path.read_text()))
    else:
        cfg = HGRNBitConfig(**keys)
    compile_here = args.compile and name.split()[0] in args.compile_models.split(",")
    variants = [(False, False), (True, False)]
    if compile_here:  # traced code takes the plain path, so "fused + compile" is this one
        variants.append((False, True))
    rows = []
    for fused, compiled in variants:
        fb.ENABLED = fused
        torch._dynamo.reset()
        row = {"model": name, "variant": _variant(fused, compiled), "batch": batch, "seq": seq}
        try:
            torch.manual_seed(0)
            model = HGRNBitForCausalLM(cfg).cuda().train()
            row["parameters"] = model.num_parameters()
            decay = [p for n, p in model.named_parameters()
                     if p.dim() >= 2 and "embeddings" not in n]
            rest = [p for n, p in model.named_parameters()
                    if not (p.dim() >= 2 and "embeddings" not in n)]
            opt = torch.optim.AdamW([{"params": decay}, {"params": rest, "weight_decay": 0.0}],
                                    lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
            fwd = torch.compile(model) if compiled else model
            ids = torch.randint(0, cfg.vocab_size, (batch, seq + 1), device="cuda")
            x, y = ids[:, :-1], ids[:, 1:]

            def step(fwd=fwd, model=model, opt=opt, x=x, y=y, vocab=cfg.vocab_size):
                with _autocast(torch.bfloat16):
                    logits, _ = fwd(x)
                loss = F.cross_entropy(logits.float().reshape(-1, vocab), y.reshape(-1))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()

            row |= measure(step, lambda: None, args.warmup, args.iters)
        except torch.cuda.OutOfMemoryError:
            row["error"] = "out of memory"
        rows.append(row)
        _print_row(row, name)
        model = opt = fwd = step = None
        _clear()
    return rows


def _print_row(r: dict, what: str) -> None:
    if "error" in r:
        print(f"{what:28s} {r['variant']:17s} {r['error']}", flush=True)
        return
    print(f"{what:28s} {r['variant']:17s} peak {r['peak_gib']:7.2f} GiB  above inputs "
          f"{r['above_inputs_gib']:7.2f} GiB  step {r['step_ms']:8.2f} ms  "
          f"(first {r['first_step_s']:.1f} s)", flush=True)


def _summary(rows: list[dict], key: str) -> list[str]:
    """Fused against plain (eager against eager, compiled against compiled)."""
    lines = []
    by = {(r[key], r["variant"]): r for r in rows if "error" not in r}
    for (what, variant), r in by.items():
        if not variant.startswith("fused"):
            continue
        p = by.get((what, variant.replace("fused", "plain")))
        if p is None:
            continue
        lines.append(f"{what:28s} {variant:17s} memory {r['peak_gib'] / p['peak_gib']:6.1%} "
                     f"of plain (above inputs {r['above_inputs_gib'] / p['above_inputs_gib']:6.1%})"
                     f", time {r['step_ms'] / p['step_ms']:6.1%} of plain")
        pc = by.get((what, "plain + compile"))
        if pc is not None and variant == "fused":
            lines.append(f"{what:28s} {'vs plain+compile':17s} memory "
                         f"{r['peak_gib'] / pc['peak_gib']:6.1%}, time "
                         f"{r['step_ms'] / pc['step_ms']:6.1%}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench_bitlinear.json")
    ap.add_argument("--layer-tokens", type=int, default=1024 * 256)
    ap.add_argument("--models", default="shipped,370M,1.3B",
                    help="comma-separated model shapes (first word of each name)")
    ap.add_argument("--no-layer", dest="layer", action="store_false")
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--compile-models", default="shipped,370M",
                    help="the model shapes also measured under torch.compile")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    args = ap.parse_args()
    if not torch.cuda.is_available() or fb.triton is None:
        raise SystemExit("needs a CUDA GPU with Triton")
    import triton

    info = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
            "triton": triton.__version__, "cuda": torch.version.cuda}
    print(" ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    result = {"info": info, "args": vars(args), "layer": [], "model": []}
    if args.layer:
        result["layer"] = bench_layer(args)
    wanted = [n for n in SHAPES if n.split()[0] in args.models.split(",")]
    for name in wanted:
        result["model"] += bench_model(args, name)
    fb.ENABLED = True
    summary = _summary(result["layer"], "case") + _summary(result["model"], "model")
    result["summary"] = summary
    print("\n" + "\n".join(summary))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
