"""Our float model against the released ``mmfreelm`` code itself, on a CUDA machine.

    python scripts/check_upstream.py --mmfreelm PATH/TO/matmulfreellm [--json out.json]

PATH is a checkout of ridgerchu/matmulfreellm (master; checked at a016f72) — its Triton
kernels need a GPU, ``triton``, ``transformers`` and ``einops``; nothing is downloaded. Both
models get the same released-format weights (a random model with non-trivial norm gains
and lower bounds and small input projections, so that ``o_proj`` inputs are small and the
BitLinear eps matters; and the shipped default model) and the logits are compared per
position, for our BitLinear eps at 1e-6 (what upstream's FusedBitLinear runs) and at 1e-8
(what its RMSNorm declares). A control runs our own model on the CPU and on the GPU: the
same code in two summation orders, so it shows how far float32 noise alone carries once an
int8 activation code flips and the recurrence keeps the difference.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _stats(diffs: list[torch.Tensor], agree: int) -> dict:
    d = torch.cat([x.flatten().cpu() for x in diffs])
    return {"positions": d.numel(), "median": d.median().item(),
            "p90": torch.quantile(d, 0.9).item(), "max": d.max().item(),
            "within_1e-3": int((d < 1e-3).sum()), "greedy_agree": agree,
            "first_position_max": max(x[:, 0].max().item() for x in diffs)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mmfreelm", required=True, type=Path, help="a matmulfreellm checkout")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("error: the released kernels need a CUDA GPU", file=sys.stderr)
        return 2
    sys.path.insert(0, str(args.mmfreelm))
    import triton.language as tl
    if not hasattr(tl.math, "round"):      # Triton 3 moved it to libdevice (same function)
        from triton.language.extra.cuda import libdevice
        tl.math.round = libdevice.round
    from mmfreelm.models.hgrn_bit.configuration_hgrn_bit import HGRNBitConfig as UpConfig
    from mmfreelm.models.hgrn_bit.modeling_hgrn_bit import HGRNBitForCausalLM as UpModel

    import mmfree_fpga.model as M
    from mmfree_fpga.checkpoint import load_checkpoint
    from mmfree_fpga.cli import DEFAULT_MODEL
    from mmfree_fpga.config import HGRNBitConfig

    dev = "cuda"
    out: dict = {}
    gen = torch.Generator().manual_seed(0)

    def compare(name, ours, seqs):
        keys = {k: v for k, v in ours.config.to_dict().items() if k != "model_type"}
        up = UpModel(UpConfig(**keys)).to(dev).float().eval()
        up.load_state_dict(ours.state_dict(), strict=True)
        ours = ours.to(dev).float()
        for eps in (1e-6, 1e-8):
            for mod in ours.modules():
                if isinstance(mod, M.BitLinear):
                    mod.norm.eps = eps
            ours.freeze()
            diffs, agree = [], 0
            for ids in seqs:
                ids = ids.to(dev)
                with torch.no_grad():
                    a = up(input_ids=ids, use_cache=False).logits.float()
                    b, _ = ours(ids)
                diffs.append((a - b).abs().amax(-1))
                agree += int((a.argmax(-1) == b.argmax(-1)).sum())
            out[f"{name} eps={eps:g}"] = _stats(diffs, agree)

    torch.manual_seed(0)
    tiny = M.HGRNBitForCausalLM(HGRNBitConfig(vocab_size=512, hidden_size=128,
                                              num_hidden_layers=4, intermediate_size=256))
    with torch.no_grad():
        tiny.model.lower_bounds.normal_(0, 1)
        for n, p in tiny.named_parameters():
            if n.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
        for layer in tiny.model.layers:
            layer.attn.i_proj.weight.mul_(0.05)
    compare("random d=128 L=4", tiny,
            [torch.randint(0, 512, (2, t), generator=gen) for t in (7, 33, 128)])
    seqs = [torch.randint(3, 4096, (4, t), generator=gen) for t in (16, 64, 256)]
    compare("shipped default", load_checkpoint(DEFAULT_MODEL), seqs)

    cpu, gpu = load_checkpoint(DEFAULT_MODEL).freeze(), load_checkpoint(DEFAULT_MODEL)
    gpu = gpu.to(dev).freeze()
    diffs, agree = [], 0
    for ids in seqs:
        with torch.no_grad():
            a, _ = cpu(ids)
            b, _ = gpu(ids.to(dev))
        diffs.append((a - b.cpu()).abs().amax(-1))
        agree += int((a.argmax(-1) == b.cpu().argmax(-1)).sum())
    out["control: ours CPU vs ours GPU, shipped"] = _stats(diffs, agree)

    for k, v in out.items():
        print(f"{k:<42} median {v['median']:.1e}  max {v['max']:.3f}  first position max "
              f"{v['first_position_max']:.1e}  within 1e-3 {v['within_1e-3']}/{v['positions']}"
              f"  greedy agree {v['greedy_agree']}/{v['positions']}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
