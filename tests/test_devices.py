"""Choosing the accelerator (sw/mmfree_fpga/driver/devices.py): ``--backend serial`` and
``auto`` against ports that are missing, silent or several, and the one-line errors the CLI
prints for them (no traceback, exit 2)."""

import os
import tty

import pytest

from mmfree_fpga import core_config
from mmfree_fpga.cli import main
from mmfree_fpga.commands import Identity
from mmfree_fpga.driver import devices
from mmfree_fpga.generate import BackendError
from mmfree_fpga.isa import Space


@pytest.fixture
def silent_pty():
    """A serial port with nothing behind it (a board that does not answer)."""
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    yield os.ttyname(slave)
    os.close(master)
    os.close(slave)


def _cli(capsys, *args):
    rc = main(["run", "--prompt", "hello", "--max-new-tokens", "2", *args])
    err = capsys.readouterr().err
    return rc, err


def test_serial_no_device_at_the_port(capsys):
    rc, err = _cli(capsys, "--backend", "serial", "--port", "/dev/ttyNOPE9")
    assert rc == 2 and err == ("error: no device at /dev/ttyNOPE9 (is the board plugged in? "
                               "ls /dev/ttyUSB* /dev/ttyACM*)\n")


def test_serial_no_adapter_found(capsys, monkeypatch):
    monkeypatch.setattr(devices, "find_ports", lambda: [])
    rc, err = _cli(capsys, "--backend", "serial")
    assert rc == 2 and "no board: no USB serial adapter found" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_serial_several_adapters(capsys, monkeypatch):
    monkeypatch.setattr(devices, "find_ports", lambda: ["/dev/ttyUSB0", "/dev/ttyUSB1"])
    rc, err = _cli(capsys, "--backend", "serial")
    assert rc == 2 and "several serial adapters (/dev/ttyUSB0, /dev/ttyUSB1)" in err


def test_serial_silent_board(capsys, silent_pty):
    rc, err = _cli(capsys, "--backend", "serial", "--port", silent_pty, "--baud", "115200")
    assert rc == 2 and err.startswith(f"error: {silent_pty}: no accelerator answers (")
    assert err.count("\n") == 1


def test_auto_falls_back_to_the_simulator(monkeypatch, silent_pty, capsys):
    opened = []
    monkeypatch.setattr("mmfree_fpga.driver.simulator.open_simulator",
                        lambda core, sdram=None: opened.append(core) or "SIM-DRIVER")
    monkeypatch.setattr(devices, "find_ports", lambda: [silent_pty])
    drv, core, name = devices.open_backend_driver("auto", None, 115200)
    err = capsys.readouterr().err
    assert (drv, core, name) == ("SIM-DRIVER", core_config.SIM, "sim") and opened
    assert f"auto: {silent_pty}: {silent_pty}: no accelerator answers" in err
    assert err.rstrip().endswith("auto: no board answers; using the simulated accelerator "
                                 "(--backend sim)")


def test_core_of_known_and_unknown():
    cfg = core_config.ULX3S_85F
    ident = Identity(version=2, lanes=cfg.lanes, words={s: cfg.size(s) for s in Space},
                     max_topk=64, n_counters=8)
    assert devices.core_of(ident) is cfg
    odd = ident._replace(lanes=64)
    with pytest.raises(BackendError, match="64 lanes.*none of the known configurations"):
        devices.core_of(odd)


@pytest.mark.parametrize("args,message", [
    (("--backend", "sim", "--packing", "1.6bit"),
     "error: --packing and --onchip-words apply to --memory sdram only\n"),
    (("--backend", "sim", "--onchip-words", "100"),
     "error: --packing and --onchip-words apply to --memory sdram only\n"),
    (("--backend", "sim", "--memory", "sdram", "--sdram-mhz", "500"),
     "error: --sdram-mhz 500: the SDRAM model and LiteDRAM's timings are for 10 .. 200 MHz\n"),
    (("--backend", "sim", "--memory", "sdram", "--onchip-words", "-1"),
     "error: --onchip-words -1: 0 .. 65535\n"),
    (("--backend", "serial", "--port", "/dev/ttyNOPE9", "--memory", "sdram"),
     "error: --memory sdram picks the simulated accelerator's memory; a board's is its "
     "bitstream's (use --backend sim)\n"),
])
def test_memory_options_are_checked_before_anything_starts(capsys, args, message):
    rc, err = _cli(capsys, *args)
    assert rc == 2 and err == message
