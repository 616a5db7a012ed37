"""``mmfree-fpga boards`` and ``--board`` (the simulated accelerator built with a board's
core and SDRAM configuration, sw/mmfree_fpga/boards.py): the table, its JSON, and every
mistake refused before anything is built. No Verilator build here: where a command gets as
far as starting the simulator, a stand-in records what it was asked for."""

import dataclasses
import json

import pytest

from mmfree_fpga import boards
from mmfree_fpga.boards import BOARDS
from mmfree_fpga.cli import main
from mmfree_fpga.commands import Identity
from mmfree_fpga.core_config import CoreConfig
from mmfree_fpga.driver import devices
from mmfree_fpga.isa import Space


def test_boards_table(capsys):
    assert main(["boards"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["board", "FPGA", "core", "clock", "weight", "memory", "lanes",
                                "status"]
    assert len(lines) == 1 + len(BOARDS)
    rows = dict(zip(BOARDS, lines[1:], strict=True))
    for name, b in BOARDS.items():
        assert rows[name].startswith(name) and b.fpga in rows[name]
        assert rows[name].endswith(b.status)
        assert f"{b.core_hz / 1e6:g} MHz" in rows[name]
    b = BOARDS["ulx3s-85f"]
    packing = "1.6-bit" if b.sdram.packing else "2-bit"
    assert f"SDRAM ({b.sdram.onchip_words:,} words on chip, {packing})" in rows["ulx3s-85f"]
    assert f" {b.core.lanes} " in rows["ulx3s-85f"]


def test_boards_json(capsys):
    assert main(["boards", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(BOARDS)
    for r in rows:
        b = BOARDS[r["name"]]
        assert r["buildable"] == b.buildable and r["status"] == b.status
        assert r["core_hz"] == b.core_hz and r["fpga"] == b.fpga
        assert r["core"] == (None if b.core is None else dataclasses.asdict(b.core))
        assert r["onchip_weight_words"] == b.onchip_weight_words
        if b.core is None:
            assert r["weight_memory"] == "-"


def _run(capsys, command, *args):
    extra = ["--prompt", "hello", "--max-new-tokens", "2"] if command == "run" else []
    rc = main([command, *extra, *args])
    return rc, capsys.readouterr().err


COMMANDS = ("run", "bench", "info", "load")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("option", [("--memory", "sdram"), ("--memory", "bram"),
                                    ("--packing", "1.6bit"), ("--sdram-mhz", "100"),
                                    ("--onchip-words", "0")])
def test_board_excludes_the_memory_options(capsys, command, option):
    rc, err = _run(capsys, command, "--backend", "sim", "--board", "ulx3s-85f", *option)
    assert rc == 2 and err == (f"error: --board takes the board's memory configuration: "
                               f"{option[0]} cannot be combined with it\n")


@pytest.mark.parametrize("command", COMMANDS)
def test_board_is_for_the_simulator(capsys, command):
    rc, err = _run(capsys, command, "--backend", "serial", "--board", "ulx3s-85f")
    assert rc == 2 and err == ("error: --board picks the simulated accelerator's "
                               "configuration; a board on a serial port reports its own (use "
                               "--backend sim --board ulx3s-85f)\n")


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_board(capsys, command):
    rc, err = _run(capsys, command, "--backend", "sim", "--board", "zybo")
    assert rc == 2 and err == (f"error: unknown board 'zybo'; known boards: "
                               f"{', '.join(BOARDS)}\n")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("name", [b.name for b in BOARDS.values() if b.core is None])
def test_a_board_without_a_core(capsys, command, name):
    rc, err = _run(capsys, command, "--backend", "sim", "--board", name)
    assert rc == 2 and err == (f"error: {name} has no core configuration to simulate: "
                               f"{BOARDS[name].status}\n")


@pytest.fixture
def no_simulator(monkeypatch):
    """open_simulator records its arguments and stops the command there."""
    from mmfree_fpga.generate import BackendError

    calls = []

    def fake(core, sdram=None):
        calls.append((core, sdram))
        raise BackendError("(the stand-in simulator stops here)")
    monkeypatch.setattr("mmfree_fpga.driver.simulator.open_simulator", fake)
    return calls


def _board_with(monkeypatch, **core_changes):
    b = BOARDS["ulx3s-85f"]
    nb = dataclasses.replace(b, core=dataclasses.replace(b.core, **core_changes))
    monkeypatch.setitem(boards.BOARDS, "ulx3s-85f", nb)
    return nb


@pytest.mark.parametrize("command", ("run", "bench", "load"))
def test_a_model_too_big_for_the_board_is_refused_before_a_build(capsys, monkeypatch,
                                                                 no_simulator, command):
    _board_with(monkeypatch, param_words=256)
    rc, err = _run(capsys, command, "--backend", "sim", "--board", "ulx3s-85f")
    assert rc == 2 and no_simulator == []
    assert "(ulx3s-85f's core): the model does not fit the core:" in err
    assert "PARAMS: the model needs" in err and "the core has 256" in err


@pytest.mark.parametrize("command", COMMANDS)
def test_the_simulator_is_the_boards(capsys, monkeypatch, no_simulator, command):
    # a core that holds the shipped model (whatever the table's sizes are today)
    b = _board_with(monkeypatch, param_words=1 << 15, scratch_words=1 << 12)
    rc, err = _run(capsys, command, "--backend", "sim", "--board", "ulx3s-85f")
    assert rc == 2 and err == "error: (the stand-in simulator stops here)\n"
    assert no_simulator == [(b.core, b.sdram)]


def test_without_board_the_simulator_is_sim(capsys, no_simulator):
    from mmfree_fpga.core_config import SIM, SdramConfig

    rc, _ = _run(capsys, "bench", "--memory", "sdram", "--sdram-mhz", "100")
    assert rc == 2 and no_simulator == [(SIM, SdramConfig(clock_hz=100e6))]


def test_the_board_cores_are_known_to_a_serial_host():
    for b in BOARDS.values():
        if b.core is None:
            continue
        cfg: CoreConfig = b.core
        ident = Identity(version=2, lanes=cfg.lanes, words={s: cfg.size(s) for s in Space},
                         max_topk=cfg.max_topk, n_counters=8)
        assert devices.core_of(ident) == cfg
