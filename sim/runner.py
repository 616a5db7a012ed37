"""Build a unit's Verilog from Amaranth and run its cocotb bench (cocotb_tools.runner).
A plain Verilog top is run too: pass the path of its file as the component, the module's
name as ``name`` and its Verilog parameters as ``hdl_parameters``.

One build directory per unit and parameter set under ``sim_build/``; waveforms (FST with
Verilator, VCD with Icarus) only when ``WAVES=1``. Returns a :class:`Result`: how many
cocotb tests ran and failed, and the results each bench reported it checked
(``tb.report``), summed per unit name.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import NamedTuple

from amaranth.back import verilog
from cocotb_tools.runner import get_results, get_runner

ROOT = Path(__file__).resolve().parents[1]
SIM_DIR = ROOT / "sim"


class Result(NamedTuple):
    tests: int
    failed: int
    checked: dict[str, int]       # unit -> results checked against the golden model


def run(component, name: str, test_module: str, params: dict | None = None,
        simulator: str | None = None, only: list[str] | None = None,
        hdl_parameters: dict | None = None) -> Result:
    """``component``: an Amaranth component (converted to Verilog as module ``name``), or
    the path (str / Path) of a Verilog file whose module ``name`` is the top, given the
    Verilog parameters ``hdl_parameters``. ``only``: the names of the module's cocotb tests
    to run (all when None)."""
    params = params or {}
    simulator = simulator or os.environ.get("SIM", "icarus")
    key = params if hdl_parameters is None else {"params": params, "hdl": hdl_parameters}
    tag = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
    build_dir = ROOT / "sim_build" / f"{name}-{simulator}-{tag}"
    build_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(component, (str, os.PathLike)):
        src = Path(component).resolve()
    else:
        src = build_dir / f"{name}.v"
        src.write_text(verilog.convert(component, name=name))
    waves = os.environ.get("WAVES") == "1"
    runner = get_runner(simulator)
    build_args = ["-Wno-fatal", "-Wno-WIDTH"] if simulator == "verilator" else []
    runner.build(sources=[src], hdl_toplevel=name, build_dir=build_dir, always=True,
                 timescale=("1ns", "1ps"), waves=waves, build_args=build_args,
                 parameters=hdl_parameters or {})
    report = build_dir / "checked.jsonl"
    report.unlink(missing_ok=True)
    env = {"MMF_PARAMS": json.dumps(params), "MMF_REPORT": str(report),
           "PYTHONPATH": os.pathsep.join([str(SIM_DIR), *sys.path])}
    test_filter = None if only is None else rf"\.({'|'.join(only)})$"
    results = runner.test(hdl_toplevel=name, test_module=test_module, test_dir=SIM_DIR,
                          build_dir=build_dir, extra_env=env, waves=waves,
                          results_xml=str(build_dir / "results.xml"), test_filter=test_filter)
    tests, failed = get_results(results)
    checked = Counter()
    if report.exists():
        for line in report.read_text().splitlines():
            entry = json.loads(line)
            checked[entry["unit"]] += entry["results"]
    return Result(tests, failed, dict(checked))


def check(record_property, component, name: str, test_module: str, params: dict,
          only: list[str], tests: int | None = None,
          hdl_parameters: dict | None = None) -> Result:
    """:func:`run` for a pytest test: asserts that the cocotb tests ``only`` (``tests`` of
    them, if the module repeats a name) ran and passed, and records the results checked
    (``record_property``) for ``scripts/sim.py``."""
    tests = len(only) if tests is None else tests
    result = run(component, name, test_module, params, only=only,
                 hdl_parameters=hdl_parameters)
    record_property("checked", result.checked)
    assert result.tests == tests and result.failed == 0, result
    return result
