"""Training: a TOML config -> a tokenized corpus -> a trained hgrn_bit checkpoint folder.

    mmfree-fpga train --config sw/configs/default.toml            # one GPU or the CPU
    torchrun --nproc-per-node 4 -m mmfree_fpga.train --config ... # several GPUs (plain DDP)

The config has four tables (see ``sw/configs/default.toml``): ``[model]`` holds config.json
keys, ``[data]`` the corpus folder (``train.txt``/``val.txt`` as ``prepare-data`` writes them)
or extra text files and the tokenizer, ``[train]`` the optimisation and ``out`` the run
folder. The run folder gets::

    data/       tokenizer.json, train.npy, val.npy (uint16 tokens; reused when present)
    last/       the newest checkpoint folder + trainer.pt (optimizer, step) for --resume
    best/       the checkpoint folder with the lowest validation loss so far
    log.jsonl   one JSON object per evaluation

Schedule: linear warmup, then cosine decay to ``min_lr_ratio * lr``; from the midpoint the
learning rate is halved and weight decay switched off (the two-stage recipe the MatMul-free
and BitNet b1.58 papers use for ternary models). ``time_budget_s`` sizes the run in steps
from the measured step time; ``stop_after_s`` ends this invocation early with a resumable
checkpoint (e.g. to fit a job limit), and ``--resume`` continues it.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from .checkpoint import save_checkpoint
from .config import ConfigError, HGRNBitConfig
from .model import HGRNBitForCausalLM
from .tokenizer import encode_documents, load_tokenizer, paragraphs, train_bpe


class TrainError(Exception):
    """A training configuration or dataset that cannot be used."""


@dataclass
class DataConfig:
    corpus: str | None = "data/corpus"   # folder with train.txt and val.txt
    files: list[str] = field(default_factory=list)  # extra text files, split like the corpus
    tokenizer: str | None = None          # an existing tokenizer.json; else train a BPE
    vocab_size: int = 4096
    val_fraction: float = 0.05            # for `files` only (the corpus is split already)


@dataclass
class OptimConfig:
    steps: int | None = None              # else from epochs, else from time_budget_s
    epochs: float | None = None           # passes over the training tokens
    time_budget_s: float | None = None
    stop_after_s: float | None = None
    batch_size: int = 64
    seq_len: int = 256
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 200
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    eval_every: int = 250
    eval_tokens: int = 262144
    seed: int = 0
    amp: bool = True                      # bf16 autocast on CUDA
    compile: bool = True                  # torch.compile on CUDA
    checkpoint_dtype: str = "bfloat16"    # latent weights as stored in the folder


@dataclass
class TrainConfig:
    model: dict
    data: DataConfig
    train: OptimConfig
    out: str = "runs/default"

    @classmethod
    def load(cls, path: str | Path, overrides: dict | None = None) -> TrainConfig:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise TrainError(f"{path}: no such training config") from None
        except tomllib.TOMLDecodeError as e:
            raise TrainError(f"{path}: not valid TOML ({e})") from None
        for key, value in (overrides or {}).items():
            section, _, name = key.rpartition(".")
            (raw.setdefault(section, {}) if section else raw)[name] = value
        try:
            cfg = cls(model=dict(raw.get("model", {})),
                      data=_make(DataConfig, raw.get("data", {}), "data"),
                      train=_make(OptimConfig, raw.get("train", {}), "train"),
                      out=raw.get("out", "runs/default"))
            cfg.model_config()
        except ConfigError as e:
            raise TrainError(f"{path}: [model] {e}") from None
        return cfg

    def model_config(self, vocab_size: int | None = None) -> HGRNBitConfig:
        d = {"model_type": "hgrn_bit", "vocab_size": self.data.vocab_size, **self.model}
        if vocab_size is not None:
            d["vocab_size"] = vocab_size
        return HGRNBitConfig.from_dict(d)


def _make(cls, d: dict, section: str):
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise TrainError(f"[{section}]: unknown key(s) {sorted(unknown)}")
    obj = cls(**d)
    if isinstance(obj, OptimConfig):
        obj.betas = tuple(obj.betas)
    return obj


# -- data -------------------------------------------------------------------------------------

def prepare_tokens(cfg: TrainConfig, data_dir: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """Tokenize the corpus once into ``data_dir`` (reused by later runs and resumes)."""
    tok_path = data_dir / "tokenizer.json"
    if all((data_dir / n).exists() for n in ("tokenizer.json", "train.npy", "val.npy")):
        return tok_path, np.load(data_dir / "train.npy"), np.load(data_dir / "val.npy")
    train_docs, val_docs = _read_corpus(cfg.data)
    if cfg.data.tokenizer:
        tok = load_tokenizer(cfg.data.tokenizer)
    else:
        tok = train_bpe(iter(train_docs), cfg.data.vocab_size)  # never sees validation text
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    if bos is None or eos is None:
        raise TrainError("the tokenizer has no <s> / </s> tokens")
    if tok.get_vocab_size() > 65535:
        raise TrainError("vocabularies over 65535 tokens are not supported (uint16 storage)")
    data_dir.mkdir(parents=True, exist_ok=True)
    train = np.asarray(encode_documents(tok, train_docs, bos, eos), dtype=np.uint16)
    val = np.asarray(encode_documents(tok, val_docs, bos, eos), dtype=np.uint16)
    np.save(data_dir / "train.npy", train)
    np.save(data_dir / "val.npy", val)
    tok.save(str(tok_path))
    return tok_path, train, val


def _read_corpus(data: DataConfig) -> tuple[list[str], list[str]]:
    train_docs: list[str] = []
    val_docs: list[str] = []
    if data.corpus:
        corpus = Path(data.corpus)
        for name, docs in (("train.txt", train_docs), ("val.txt", val_docs)):
            p = corpus / name
            if not p.exists():
                raise TrainError(f"{p}: missing (run `mmfree-fpga prepare-data` first)")
            docs.extend(paragraphs(p.read_text(encoding="utf-8")))
    for f in data.files:
        try:
            paras = list(paragraphs(Path(f).read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as e:
            raise TrainError(f"{f}: cannot read as UTF-8 text ({e})") from None
        # Hold out whole paragraphs at a fixed stride: deterministic and spread over the file.
        stride = max(2, round(1 / data.val_fraction)) if data.val_fraction > 0 else 0
        for i, p in enumerate(paras):
            (val_docs if stride and i % stride == stride - 1 else train_docs).append(p)
    if not train_docs or not val_docs:
        raise TrainError("no training or no validation text: give [data] corpus or files")
    return train_docs, val_docs


def batch(tokens: torch.Tensor, batch_size: int, seq_len: int, gen: torch.Generator):
    """Random windows of ``seq_len + 1`` tokens: inputs and next-token targets."""
    starts = torch.randint(0, len(tokens) - seq_len - 1, (batch_size,), generator=gen)
    idx = starts[:, None] + torch.arange(seq_len + 1)
    w = tokens[idx.to(tokens.device)].long()
    return w[:, :-1], w[:, 1:]


@torch.no_grad()
def evaluate(model, tokens: torch.Tensor, seq_len: int, max_tokens: int | None,
             batch_size: int = 32, amp: bool = False) -> tuple[float, int]:
    """Mean next-token loss over consecutive windows of the validation tokens."""
    n = (len(tokens) - 1) // seq_len
    if max_tokens:
        n = min(n, max(1, max_tokens // seq_len))
    if n == 0:
        raise TrainError(f"validation set has fewer than seq_len+1={seq_len + 1} tokens")
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    for i in range(0, n, batch_size):
        rows = torch.arange(i, min(n, i + batch_size), device=tokens.device)
        idx = rows[:, None] * seq_len + torch.arange(seq_len + 1, device=tokens.device)
        w = tokens[idx].long()
        with _autocast(tokens.device, amp):
            logits, _ = model(w[:, :-1])
        loss = torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1), reduction="sum")
        total += loss.item()
        count += w[:, 1:].numel()
    model.train(was_training)
    return total / count, count


def _autocast(device: torch.device, amp: bool):
    enabled = amp and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def lr_at(step: int, total: int, t: OptimConfig) -> tuple[float, float]:
    """(learning rate, weight decay) at ``step`` of ``total``."""
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps, t.weight_decay
    progress = min(1.0, (step - t.warmup_steps) / max(1, total - t.warmup_steps))
    lr = t.lr * (t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
    if step >= total // 2:
        return lr * 0.5, 0.0
    return lr, t.weight_decay


# -- the loop ---------------------------------------------------------------------------------

def train(cfg: TrainConfig, resume: bool = False, quiet: bool = False) -> dict:
    """Run (or resume) training; returns the summary also written to ``best/training.json``."""
    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = 0
    if ddp:
        import torch.distributed as dist
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        rank = dist.get_rank()
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local)
    device = torch.device(f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available()
                          else "cpu")
    main_proc = rank == 0
    t = cfg.train
    out = Path(cfg.out)
    data_dir = out / "data"
    if main_proc:
        tok_path, train_np, val_np = prepare_tokens(cfg, data_dir)
    if ddp:
        dist.barrier()
        if not main_proc:
            tok_path, train_np, val_np = prepare_tokens(cfg, data_dir)
    vocab = load_tokenizer(tok_path).get_vocab_size()
    model_cfg = cfg.model_config(vocab_size=vocab)
    if len(train_np) <= t.seq_len + 1:
        raise TrainError(f"training set has {len(train_np)} tokens, fewer than seq_len+2")

    torch.manual_seed(t.seed)
    model = HGRNBitForCausalLM(model_cfg).to(device)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embeddings" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2
                                                               and "embeddings" not in n)]
    opt = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=t.lr, betas=t.betas, weight_decay=t.weight_decay,
                            fused=device.type == "cuda")
    world = dist.get_world_size() if ddp else 1
    steps = t.steps
    if steps is None and t.epochs is not None:
        steps = math.ceil(t.epochs * len(train_np) / (t.batch_size * t.seq_len * world))
    state = {"step": 0, "steps": steps, "best_val": float("inf"), "train_time_s": 0.0,
             "tokens_seen": 0}
    last = out / "last"
    if resume:
        if not (last / "trainer.pt").exists():
            raise TrainError(f"{last}/trainer.pt: nothing to resume")
        ck = torch.load(last / "trainer.pt", map_location=device, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        state.update(ck["state"])
    gen = torch.Generator().manual_seed(t.seed * 1000 + rank + state["step"])

    fwd = model
    if ddp:
        from torch.nn.parallel import DistributedDataParallel
        fwd = DistributedDataParallel(model, device_ids=[device.index] if device.index
                                      is not None else None)
    if t.compile and device.type == "cuda":
        fwd = torch.compile(fwd)
    train_tokens = torch.from_numpy(train_np.astype(np.int32)).to(device)
    val_tokens = torch.from_numpy(val_np.astype(np.int32)).to(device)

    summary_base = {
        "parameters": model.num_parameters(),
        "ternary_weights": model.num_ternary_weights(),
        "train_tokens": int(len(train_np)), "val_tokens": int(len(val_np)),
        "config": asdict(cfg.train) | {"data": asdict(cfg.data), "model": cfg.model},
        "world_size": world, "device": torch.cuda.get_device_name(device)
        if device.type == "cuda" else "cpu",
    }
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "log.jsonl", "a") if main_proc else None

    def save(kind: str, val_loss: float | None = None):
        folder = out / kind
        extra = summary_base | {k: state[k] for k in ("step", "steps", "tokens_seen",
                                                          "train_time_s")}
        if val_loss is not None:
            extra |= {"val_loss": val_loss, "val_ppl": math.exp(val_loss)}
        save_checkpoint(model, folder, dtype=getattr(torch, t.checkpoint_dtype),
                        tokenizer=tok_path, extra=extra)
        if kind == "last":
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                        "state": state}, folder / "trainer.pt.tmp")
            (folder / "trainer.pt.tmp").replace(folder / "trainer.pt")

    def run_eval():
        val_loss, _ = evaluate(model, val_tokens, t.seq_len, t.eval_tokens, amp=t.amp)
        if val_loss < state["best_val"]:
            state["best_val"] = val_loss
            save("best", val_loss)
        rec = {"step": state["step"], "val_loss": val_loss, "train_loss": train_loss_ema,
               "lr": lr, "time_s": round(state["train_time_s"], 1),
               "tokens": state["tokens_seen"]}
        log.write(json.dumps(rec) + "\n")
        log.flush()
        return val_loss

    bar = _progress(state["steps"], state["step"], quiet or not main_proc)
    invocation_start = time.monotonic()
    calib_start = None
    train_loss_ema, lr = None, t.lr
    state_step0 = state["step"]
    model.train()
    while state["steps"] is None or state["step"] < state["steps"]:
        step = state["step"]
        # Size the run from the measured step time, once, after compilation has settled.
        if state["steps"] is None:
            if t.time_budget_s is None:
                raise TrainError("[train] needs steps, epochs or time_budget_s")
            if step == 20:
                calib_start = time.monotonic()
            elif step == 60:
                per_step = (time.monotonic() - calib_start) / 40
                state["steps"] = max(61, int(t.time_budget_s / per_step))
                bar.total = state["steps"]
        lr, wd = lr_at(step, state["steps"] or 10**9, t)
        opt.param_groups[0]["lr"] = opt.param_groups[1]["lr"] = lr
        opt.param_groups[0]["weight_decay"] = wd
        t0 = time.monotonic()
        x, y = batch(train_tokens, t.batch_size, t.seq_len, gen)
        with _autocast(device, t.amp):
            try:
                logits, _ = fwd(x)
            except Exception as e:  # a torch.compile failure shows at the first call
                if fwd is model or step != state_step0:
                    raise
                bar.write(f"torch.compile failed ({type(e).__name__}: {e}); running eager")
                fwd = model
                logits, _ = fwd(x)
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                                 y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        opt.step()
        if not math.isfinite(loss.item()):
            raise TrainError(f"loss became {loss.item()} at step {step}; lower [train] lr")
        state["train_time_s"] += time.monotonic() - t0
        state["step"] += 1
        state["tokens_seen"] += x.numel() * world
        li = loss.item()
        train_loss_ema = li if train_loss_ema is None else 0.95 * train_loss_ema + 0.05 * li
        bar.update(1)
        bar.set_postfix(loss=f"{train_loss_ema:.3f}", lr=f"{lr:.2e}")
        done = state["steps"] is not None and state["step"] >= state["steps"]
        out_of_time = (t.stop_after_s is not None
                       and time.monotonic() - invocation_start > t.stop_after_s)
        if ddp and t.stop_after_s is not None:  # every rank must stop at the same step
            flag = torch.tensor([float(out_of_time)], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            out_of_time = bool(flag.item())
        if main_proc and (state["step"] % t.eval_every == 0 or done or out_of_time):
            val_loss = run_eval()
            bar.write(f"step {state['step']}: train {train_loss_ema:.4f} val {val_loss:.4f}")
            save("last")
        if out_of_time and not done:
            bar.write(f"stopping after {t.stop_after_s:.0f} s; continue with --resume")
            break
    bar.close()
    if ddp:
        dist.barrier()
        dist.destroy_process_group()
    summary = {}
    if main_proc:
        summary = json.loads((out / "best" / "training.json").read_text())
        summary["finished"] = state["steps"] is not None and state["step"] >= state["steps"]
        log.close()
    return summary


def _progress(total, initial, disable):
    try:
        from tqdm import tqdm
        if not sys.stderr.isatty():  # logs and CI: plain lines, not carriage returns
            raise ImportError
        return tqdm(total=total, initial=initial, disable=disable, dynamic_ncols=True,
                    mininterval=2.0, file=sys.stderr)
    except ImportError:  # tqdm is optional: a plain counter that satisfies the same calls
        class Plain:
            def __init__(self):
                self.total, self.n = total, initial

            def update(self, k):
                self.n += k

            def set_postfix(self, **kw):
                if not disable and self.n % 200 == 0:
                    print(f"step {self.n}/{self.total} {kw}", file=sys.stderr)

            def write(self, s):
                if not disable:
                    print(s, file=sys.stderr)

            def close(self):
                pass
        return Plain()


def parse_overrides(items: list[str]) -> dict:
    """``section.key=value`` pairs; the value is parsed as TOML (``1e-3``, ``true``, ``"x"``)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise TrainError(f"--set {item!r}: expected section.key=value")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value
    return out


def run_from_args(args) -> int:
    overrides = parse_overrides(args.set)
    if args.out:
        overrides["out"] = args.out
    cfg = TrainConfig.load(args.config, overrides)
    summary = train(cfg, resume=args.resume, quiet=args.quiet)
    if summary:
        print(json.dumps({k: summary[k] for k in ("step", "steps", "val_loss", "val_ppl",
                                                  "parameters", "ternary_weights",
                                                  "train_time_s", "finished")}))
        print(f"best checkpoint: {Path(cfg.out) / 'best'}")
    return 0


if __name__ == "__main__":  # torchrun entry point: same arguments as `mmfree-fpga train`
    from .cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
