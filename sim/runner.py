"""Build a unit's Verilog from Amaranth and run its cocotb bench (cocotb_tools.runner).

One build directory per unit and parameter set under ``sim_build/``; waveforms (FST with
Verilator, VCD with Icarus) only when ``WAVES=1``. Returns (tests, failures).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from amaranth.back import verilog
from cocotb_tools.runner import get_results, get_runner

ROOT = Path(__file__).resolve().parents[1]
SIM_DIR = ROOT / "sim"


def run(component, name: str, test_module: str, params: dict | None = None,
        simulator: str | None = None) -> tuple[int, int]:
    params = params or {}
    simulator = simulator or os.environ.get("SIM", "icarus")
    tag = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    build_dir = ROOT / "sim_build" / f"{name}-{simulator}-{tag}"
    build_dir.mkdir(parents=True, exist_ok=True)
    src = build_dir / f"{name}.v"
    src.write_text(verilog.convert(component, name=name))
    waves = os.environ.get("WAVES") == "1"
    runner = get_runner(simulator)
    build_args = ["-Wno-fatal", "-Wno-WIDTH"] if simulator == "verilator" else []
    runner.build(sources=[src], hdl_toplevel=name, build_dir=build_dir, always=True,
                 timescale=("1ns", "1ps"), waves=waves, build_args=build_args)
    env = {"MMF_PARAMS": json.dumps(params),
           "PYTHONPATH": os.pathsep.join([str(SIM_DIR), *sys.path])}
    results = runner.test(hdl_toplevel=name, test_module=test_module, test_dir=SIM_DIR,
                          build_dir=build_dir, extra_env=env, waves=waves,
                          results_xml=str(build_dir / "results.xml"))
    return get_results(results)
