"""The board table, the ECP5 PLL planner (against Project Trellis' own ecppll) and the
board shell's elaboration (pins, PLL, the SDRAM clock's DDR output), without running the
toolchain's place and route (the bitstream build is tests/test_bitstream.py's)."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmfree_fpga import boards
from mmfree_fpga.compiler import compile_model

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "sw" / "mmfree_fpga" / "models"
sys.path.insert(0, str(ROOT / "bitstreams"))

pytest.importorskip("amaranth_boards")


def test_unknown_board_lists_the_known_ones():
    with pytest.raises(boards.UnknownBoard) as e:
        boards.board("ulx3s-12f")
    for name in boards.BOARDS:
        assert name in str(e.value)
    assert boards.board("ULX3S-85F") is boards.BOARDS["ulx3s-85f"]


RUNS = [(n, m) for n, b in boards.BOARDS.items() if b.buildable for m in b.models]


@pytest.mark.parametrize("name,model", RUNS, ids=[f"{n}-{m}" for n, m in RUNS])
def test_buildable_boards_run_their_models(name, model):
    """Every buildable board's core takes the shipped models it names: the compiler places
    the resident part in block RAM and streams the rest."""
    b = boards.board(name)
    assert b.core is not None and b.sdram is not None
    assert b.sdram.clock_hz == b.core_hz        # one clock for the core and the SDRAM
    image = MODELS / f"{model}.mmf"
    if not image.exists():
        pytest.skip(f"{image.name} is not shipped yet")
    prog = compile_model(image, b.core, onchip_words=b.sdram.onchip_words or None)
    if b.sdram.onchip_words:
        per_token = prog.weight_words_per_token()
        assert per_token["onchip"] <= b.sdram.onchip_words


def test_every_buildable_board_runs_a_model():
    for b in boards.BOARDS.values():
        assert not b.buildable or b.models, b.name


@pytest.mark.parametrize("name", [n for n, b in boards.BOARDS.items() if not b.buildable])
def test_unbuildable_boards_say_why(name):
    b = boards.board(name)
    assert b.core is None and len(b.status) > 30


def test_pll_plan_25_to_100():
    from mmfree_hw.board.ecp5_pll import plan
    p = plan(25e6, [("sync", 100e6, 0), ("sdram_ps", 100e6, 180)])
    assert 400e6 <= p.vco_hz <= 800e6
    assert p.vco_hz == 25e6 / p.clki_div * p.clkfb_div * p.outputs[0].div
    for o in p.outputs:
        assert o.hz == 100e6
    op, os_ = p.outputs
    steps = (os_.cphase * 8 + os_.fphase) - (op.cphase * 8 + op.fphase)
    assert steps * 45 / os_.div == 180 and os_.phase == 180
    with pytest.raises(ValueError, match="no EHXPLLL setting"):
        plan(25e6, [("sync", 99.999e6, 0)])
    with pytest.raises(ValueError, match="feedback"):
        plan(25e6, [("sync", 100e6, 90)])


def _ecppll(tmp_path, args):
    tool = shutil.which("yowasp-ecppll", path=str(Path(sys.executable).parent))
    if tool is None:
        pytest.skip("yowasp-ecppll is not installed (the hw extra)")
    subprocess.run([tool, *args, "--internal_feedback", "-f", "pll.v"], cwd=tmp_path,
                   check=True, capture_output=True, timeout=300)
    text = (tmp_path / "pll.v").read_text()
    return {k: int(v) for k, v in re.findall(r"\.(\w+)\((\d+)\)", text)}


@pytest.mark.parametrize("f_out,phase", [(100, 180), (50, 90), (75, 180)])
def test_pll_plan_agrees_with_ecppll(tmp_path, f_out, phase):
    """Project Trellis' ecppll (an independent implementation of the same primitive's
    rules) finds the same frequency; the phase shift between the two outputs, in VCO
    eighths over the divider, is the same angle."""
    from mmfree_hw.board.ecp5_pll import plan
    ref = _ecppll(tmp_path, ["-i", "25", "-o", str(f_out), "--clkout1", str(f_out),
                             "--phase1", str(phase)])
    ref_vco = 25e6 / ref["CLKI_DIV"] * ref["CLKFB_DIV"] * ref["CLKOP_DIV"]
    assert ref_vco / ref["CLKOP_DIV"] == f_out * 1e6
    ref_steps = (ref["CLKOS_CPHASE"] - ref["CLKOP_CPHASE"]) * 8 + ref["CLKOS_FPHASE"] \
        - ref["CLKOP_FPHASE"]
    p = plan(25e6, [("a", f_out * 1e6, 0), ("b", f_out * 1e6, phase)])
    op, os_ = p.outputs
    steps = (os_.cphase - op.cphase) * 8 + os_.fphase - op.fphase
    assert steps * 45 / os_.div == ref_steps * 45 / ref["CLKOS_DIV"] == phase


def test_link_timeouts_scale_with_the_clock():
    from mmfree_fpga.link import protocol as P
    from mmfree_hw.board.ulx3s import link_args
    assert link_args(50e6) == {"rx_timeout": P.DEFAULT_RX_TIMEOUT,
                               "heartbeat": P.DEFAULT_HEARTBEAT}
    a = link_args(100e6)
    assert a["rx_timeout"] / 100e6 >= P.DEFAULT_RX_TIMEOUT / 50e6


def test_ulx3s_shell_elaborates(tmp_path):
    """The whole ULX3S-85F design elaborates into the toolchain's inputs: the SDRAM, UART
    and LED pins constrained, one EHXPLLL with the planned dividers, the SDRAM clock pin
    driven by an ODDRX1F, LiteDRAM's Verilog beside it, the oscillator at 25 MHz."""
    import build as B
    b = boards.board("ulx3s-85f")
    top = B.shell_for(b)
    platform = B.platform_for(b)
    for src in top.verilog_sources():
        platform.add_file(Path(src).name, Path(src).read_text())
    plan = platform.build(top, name="t", build_dir=str(tmp_path), do_build=False,
                          script_after_read=B.HIDE_ARRAY_WIRES)
    plan.extract(str(tmp_path))
    lpf = (tmp_path / "t.lpf").read_text()
    for site in ("F19", "J16", "J17", "M20", "G19", "M1", "L4", "G2"):   # clk, dq, a, uart
        assert f'SITE "{site}"' in lpf, site
    assert 'FREQUENCY PORT "clk25_0__io" 25000000.0 HZ' in lpf
    il = (tmp_path / "t.il").read_text()
    assert il.count("cell \\EHXPLLL") == 1 and "cell \\ODDRX1F" in il
    p = top.pll.plan
    assert f"parameter \\CLKFB_DIV {p.clkfb_div}" in il
    assert f"parameter \\CLKOS_CPHASE {p.outputs[1].cphase}" in il
    assert "read_verilog  litedram_core.v" in (tmp_path / "t.ys").read_text()


def test_build_refuses_unknown_and_unbuildable(capsys):
    import build as B
    assert B.main(["nosuchboard"]) == 2
    err = capsys.readouterr().err
    assert "unknown board 'nosuchboard'" in err and "ulx3s-85f" in err
    assert B.main(["ecpix5-85"]) == 2
    assert "read leveling" in capsys.readouterr().err
    # a core clock the PLL cannot make from the 25 MHz oscillator: one line, no traceback
    assert B.main(["ulx3s-85f", "--freq-mhz", "33.333"]) == 2
    assert "no EHXPLLL setting" in capsys.readouterr().err


def test_committed_summaries_are_consistent():
    """Every build summary in the repository is a real build of its board's current
    configuration that met timing (the README's board table is made from them)."""
    found = list((ROOT / "bitstreams").glob("*/summary.json"))
    for path in found:
        s = json.loads(path.read_text())
        b = boards.board(s["board"])
        assert s["timing_met"], path
        for net, c in s["clocks"].items():
            assert c["fmax_mhz"] >= c["target_mhz"], (path, net)
        assert s["requested_mhz"]["sync"] == b.core_hz / 1e6
        assert s["core"]["lanes"] == b.core.lanes


def test_critical_paths_summarize_nextpnr_reports():
    """build.critical_paths on a report in the layout nextpnr's report.cc writes: one
    entry per clock pair with its delay, the routing share, the cells it passes and the
    Amaranth source lines of its nets (site-packages lines left out)."""
    import build as B

    def seg(kind, a, b, delay, sources=()):
        d = {"type": kind, "delay": delay, "from": {"cell": a, "port": "Q", "loc": [1, 2]},
             "to": {"cell": b, "port": "A", "loc": [3, 4]}}
        if kind == "routing":
            d.update(net=f"{a}_net", sources=list(sources))
        return d

    report = {"critical_paths": [{
        "from": "posedge clk", "to": "posedge clk", "path": [
            seg("clk-to-q", "cp.space", "cp.space", 0.5),
            seg("routing", "cp.space", "lut1", 1.5,
                ["/x/y/hw/mmfree_hw/command.py:342", "/v/site-packages/amaranth/a.py:1"]),
            seg("logic", "lut1", "lut1", 0.25),
            seg("routing", "lut1", "core.ram", 2.0, ["/x/y/hw/mmfree_hw/core.py:10"]),
            seg("setup", "core.ram", "core.ram", 0.1)]},
        {"from": "posedge clk", "to": "posedge clk", "path": []}]}
    (p,) = B.critical_paths(report)
    assert p["delay_ns"] == 4.35 and p["routing_ns"] == 3.5 and p["logic_cells"] == 1
    assert (p["start"], p["end"]) == ("cp.space", "core.ram")
    assert p["sources"] == ["hw/mmfree_hw/command.py:342", "hw/mmfree_hw/core.py:10"]
    assert B.critical_paths({}) == []
