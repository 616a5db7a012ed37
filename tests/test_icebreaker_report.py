"""bitstreams/reports/icebreaker.json (written by bitstreams/ice40_fit.py) against itself and
the board table: every verdict follows from its numbers and the device's limits, and the
limits are the ones boards.py has for the iCEBreaker. No synthesis here."""

import json
from pathlib import Path

import pytest

from mmfree_fpga.boards import board

REPORT = Path(__file__).resolve().parents[1] / "bitstreams" / "reports" / "icebreaker.json"
LIMITED = ("LUT4", "FF", "EBR", "SPRAM", "DSP")


@pytest.fixture(scope="module")
def report():
    return json.loads(REPORT.read_text())


def test_device_limits_are_the_board_tables(report):
    d, b = report["device"], board("icebreaker")
    assert (d["LUT4"], d["EBR"], d["DSP"]) == (b.luts, b.bram_blocks, b.dsp_blocks)
    # the iCE40UP5K datasheet's figures: one LUT4 and one FF per logic cell
    assert (d["LUT4"], d["FF"], d["EBR"], d["SPRAM"], d["DSP"]) == (5280, 5280, 30, 4, 8)
    assert b.family == "ice40" and b.fpga.startswith("iCE40UP5K")


def test_each_verdict_follows_from_its_numbers(report):
    d = report["device"]
    assert {"accelerator", "accelerator-4", "engine", "command-processor"} <= set(
        report["units"])
    for name, row in report["units"].items():
        over = {k: row[k] / d[k] for k in LIMITED if row[k] > d[k]}
        assert row["fits"] == (not over), name
        assert set(row["over"]) == set(over), name
        worst = max(row[k] / d[k] for k in LIMITED)
        assert row["factor"] == pytest.approx(worst, abs=0.01), name
        if row.get("fmax_mhz") is not None:
            assert row["fits"], f"{name} was placed but does not fit"


def test_overall_verdict(report):
    u = report["units"]
    fits = u["accelerator"]["fits"] or u["accelerator-4"]["fits"]
    assert report["fits"] == fits
    assert report["verdict_text"].startswith("**Verdict: fits" if fits
                                             else "**Verdict: does not fit")
    assert u["accelerator-4"]["lanes"] < u["accelerator"]["lanes"]
    # the board table says the same thing
    b = board("icebreaker")
    assert b.buildable == fits or (fits and b.core is None)
    if not fits:
        assert b.status.startswith("does not fit")


def test_the_core_config_runs_the_model(report):
    cfg, m, foot = report["core_config"], report["model"], report["footprint"]
    assert cfg["max_d"] >= m["hidden_size"] and cfg["max_vocab"] >= m["vocab_size"]
    assert cfg["max_layers"] >= m["num_hidden_layers"]
    for space, key in (("WEIGHTS", "weight_words"), ("PARAMS", "param_words"),
                       ("EMBED", "embed_words"), ("SCRATCH", "scratch_words"),
                       ("PROGRAM", "program_words")):
        assert cfg[key] >= foot[space], space


def test_memory_table(report):
    mems = {m["memory"]: m for m in report["memories"]}
    # the embedding table of the tiny model: 256 x 64 int16 entries, one SPRAM's worth
    big = max(report["memories"], key=lambda m: m["depth"] * m["width"])
    assert big["depth"] * big["width"] == 256 * 64 * 16
    for m in mems.values():
        if m["spram_if_single_port"] is not None:
            assert m["read_ports"] == 1 and m["write_ports"] >= 1
