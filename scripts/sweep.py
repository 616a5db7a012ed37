"""Train several configurations side by side on one GPU and rank them by validation loss.

This is how the shipped default model was chosen (see README, "The default model"):

    python scripts/sweep.py --config sw/configs/default.toml --out runs/sweep \\
        --jobs 3 --deadline-s 560 \\
        L4=model.num_hidden_layers=4 L6=model.num_hidden_layers=6 ...

Each NAME=KEY=VALUE[,KEY=VALUE...] argument is one run (``--set`` overrides of the base
config). ``--jobs`` runs share the GPU at once: models this small leave most of an H100
idle, so running them together costs little wall time each. Every run gets the same
pre-tokenized data (``--data``, copied into the run folder) so their losses compare.
A run still going at ``--deadline-s`` is told to stop (``stop_after_s``) and keeps its best
checkpoint so far. Writes ``OUT/sweep.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--data", help="a prepared run data folder (tokenizer.json, *.npy) to reuse")
    p.add_argument("--jobs", type=int, default=3)
    p.add_argument("--deadline-s", type=float, default=None,
                   help="wall-clock seconds for the whole sweep")
    p.add_argument("runs", nargs="+", metavar="NAME=KEY=VALUE[,KEY=VALUE]")
    args = p.parse_args()

    start = time.monotonic()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    queue = []
    for spec in args.runs:
        name, _, sets = spec.partition("=")
        queue.append((name, [s for s in sets.split(",") if s]))
    running: dict[str, subprocess.Popen] = {}
    results = {}
    while queue or running:
        while queue and len(running) < args.jobs:
            name, sets = queue.pop(0)
            run_dir = out / name
            if args.data and not (run_dir / "data").exists():
                shutil.copytree(args.data, run_dir / "data")
            cmd = [sys.executable, "-m", "mmfree_fpga.train", "--config", args.config,
                   "--out", str(run_dir), "--quiet"]
            for s in sets:
                cmd += ["--set", s]
            if args.deadline_s:
                left = args.deadline_s - (time.monotonic() - start)
                cmd += ["--set", f"train.stop_after_s={max(30.0, left - 30):.0f}"]
            resume = (run_dir / "last" / "trainer.pt").exists()
            if resume:
                cmd.append("--resume")
            run_dir.mkdir(parents=True, exist_ok=True)
            log = open(run_dir / "train.log", "a")
            print(f"start {name}: {' '.join(sets)}{' (resume)' if resume else ''}", flush=True)
            running[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                             env=os.environ.copy())
        time.sleep(5)
        for name, proc in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            summary_path = out / name / "best" / "training.json"
            res = json.loads(summary_path.read_text()) if summary_path.exists() else {}
            res["returncode"] = proc.returncode
            results[name] = res
            print(f"done {name}: rc={proc.returncode} best val_loss={res.get('val_loss')} "
                  f"at step {res.get('step')}/{res.get('steps')} "
                  f"t={time.monotonic() - start:.0f}s", flush=True)
    (out / "sweep.json").write_text(json.dumps(results, indent=2))
    print(f"\n{'run':10} {'params':>9} {'ternary':>9} {'val_loss':>9} {'ppl':>8} "
          f"{'step':>11} {'train_s':>8}")
    for name, r in sorted(results.items(), key=lambda kv: kv[1].get("val_loss", 1e9)):
        print(f"{name:10} {r.get('parameters', 0):9d} {r.get('ternary_weights', 0):9d} "
              f"{r.get('val_loss', float('nan')):9.4f} {r.get('val_ppl', float('nan')):8.2f} "
              f"{r.get('step', 0):5d}/{r.get('steps') or 0:<5d} "
              f"{r.get('train_time_s', 0):8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
