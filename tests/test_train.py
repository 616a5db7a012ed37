"""Training on the CPU: the smoke configuration lowers the loss, resumes, and refuses bad
configurations with one clear message."""

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from mmfree_fpga.checkpoint import load_checkpoint
from mmfree_fpga.cli import main
from mmfree_fpga.config import HGRNBitConfig
from mmfree_fpga.model import HGRNBitForCausalLM
from mmfree_fpga.train import TrainConfig, TrainError, evaluate, lr_at, train

SMOKE = Path(__file__).parents[1] / "sw" / "configs" / "smoke.toml"


def _text(path: Path, paragraphs: int = 300) -> Path:
    rng = random.Random(0)
    words = ("the cat sat on a mat and the dog ran to the park while birds sang in tall "
             "green trees").split()
    paras = [" ".join(rng.choice(words) for _ in range(30)) + "." for _ in range(paragraphs)]
    path.write_text("\n\n".join(paras))
    return path


def _cfg(tmp_path, **over) -> TrainConfig:
    text = _text(tmp_path / "text.txt")
    return TrainConfig.load(SMOKE, {"data.corpus": False, "data.files": [str(text)],
                                    "out": str(tmp_path / "run"), **over})


def test_smoke_training_lowers_loss(tmp_path):
    cfg = _cfg(tmp_path)
    summary = train(cfg, quiet=True)
    assert summary["finished"] and summary["step"] <= 60
    # the loss of the same model before training, on the same validation tokens
    val = torch.from_numpy(np.load(tmp_path / "run" / "data" / "val.npy").astype(np.int32))
    torch.manual_seed(cfg.train.seed)
    fresh = HGRNBitForCausalLM(HGRNBitConfig.load(tmp_path / "run" / "best" / "config.json"))
    before, _ = evaluate(fresh, val, cfg.train.seq_len, cfg.train.eval_tokens)
    assert summary["val_loss"] < before - 1.0, (before, summary["val_loss"])
    # the best folder is a checkpoint users load, and it reproduces the logged loss
    model = load_checkpoint(tmp_path / "run" / "best")
    after, _ = evaluate(model, val, cfg.train.seq_len, cfg.train.eval_tokens)
    assert math.isclose(after, summary["val_loss"], rel_tol=2e-2)  # bf16-stored weights
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().split("\n")
           if line]
    assert [r["step"] for r in log] == [30, 60]


def test_stop_and_resume(tmp_path):
    cfg = _cfg(tmp_path, **{"train.stop_after_s": 0.0})
    first = train(cfg, quiet=True)
    assert not first["finished"] and first["step"] == 1
    cfg = _cfg(tmp_path)
    second = train(cfg, resume=True, quiet=True)
    assert second["finished"]
    state = torch.load(tmp_path / "run" / "last" / "trainer.pt", weights_only=False)["state"]
    assert state["step"] == 60


def test_epochs_set_steps(tmp_path):
    cfg = _cfg(tmp_path, **{"train.steps": None, "train.epochs": 0.5, "train.eval_every": 5})
    summary = train(cfg, quiet=True)
    train_tokens = len(np.load(tmp_path / "run" / "data" / "train.npy"))
    assert summary["steps"] == math.ceil(0.5 * train_tokens / (8 * 32))


def test_schedule_halves_at_midpoint():
    cfg = TrainConfig.load(SMOKE).train
    lr_before, wd_before = lr_at(29, 60, cfg)
    lr_after, wd_after = lr_at(30, 60, cfg)
    assert wd_before == cfg.weight_decay and wd_after == 0.0
    assert lr_after < 0.55 * lr_before
    assert lr_at(0, 60, cfg)[0] == cfg.lr / cfg.warmup_steps


@pytest.mark.parametrize("text, message", [
    ("[train]\nsteps = 'x'\nbogus = 1\n", "unknown key"),
    ("[model]\nhidden_size = -4\n", "hidden_size"),
    ("not toml at all [", "not valid TOML"),
])
def test_bad_configs(tmp_path, text, message):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(TrainError, match=message):
        TrainConfig.load(p)


def test_cli_train_errors(tmp_path, capsys):
    rc = main(["train", "--config", str(tmp_path / "missing.toml")])
    assert rc == 2 and capsys.readouterr().err.startswith("error: ")
    rc = main(["train", "--config", str(SMOKE), "--set", "data.corpus='/nonexistent'",
               "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and "prepare-data" in err and err.count("\n") == 1


def test_cli_train_and_run(tmp_path, capsys):
    text = _text(tmp_path / "text.txt")
    rc = main(["train", "--config", str(SMOKE), "--quiet", "--set", "data.corpus=false",
               "--set", f"data.files=['{text}']", "--set", "train.steps=10",
               "--out", str(tmp_path / "run")])
    assert rc == 0
    capsys.readouterr()
    rc = main(["run", "--backend", "float", "--model", str(tmp_path / "run" / "best"),
               "--prompt", "the cat",
               "--max-new-tokens", "5", "--ignore-eos"])
    out, err = capsys.readouterr()
    assert rc == 0 and out.startswith("the cat") and "5 generated" in err


def test_ddp_two_processes_on_cpu(tmp_path):
    """The multi-GPU path is plain DDP under torchrun; gloo runs it on the CPU."""
    import subprocess
    import sys

    text = _text(tmp_path / "text.txt")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "mmfree_fpga.train", "--config", str(SMOKE), "--quiet",
           "--set", "data.corpus=false", "--set", f"data.files=['{text}']",
           "--set", "train.steps=10", "--set", "train.eval_every=5",
           "--out", str(tmp_path / "run")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [5, 10]
    assert log[-1]["tokens"] == 10 * 8 * 32 * 2          # both ranks' batches count
    load_checkpoint(tmp_path / "run" / "best")
