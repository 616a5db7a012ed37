"""What the SDRAM weight path costs on the ECP5: YoWASP Yosys ``synth_ecp5`` of the
1.6-bit decoder ``TritUnpack(128)`` (each way of writing its decode table) against the
2-bit path it replaces (``sdram.weight_store.BeatAssembler``: 16 16-bit beats into a
256-bit word, the same one-word output register and handshake), one bare table (one byte
in, five codes out), and the whole SDRAM weight store for the simulation core (128 lanes,
its 512-word prefetch FIFO, the embedding port) with either packing. Prints LUT4 / CCU2C /
FF (and the LUT-RAM, wide-mux and block RAM cells) per design; builds under
``build/sdram_cost/``.

    python scripts/sdram_cost.py [DESIGN ...]

Measured (YoWASP Yosys 0.70.0.0.post1259, default ``synth_ecp5``):

| design | LUT4 | CCU2C | FF | PFUMX | L6MUX21 | DPR16X4 | DP16KD |
|---|---|---|---|---|---|---|---|
| tritunpack-128-switch | 269 | 0 | 501 | 109 | 55 | 0 | 0 |
| tritunpack-128-array | 269 | 0 | 501 | 109 | 55 | 0 | 0 |
| tritunpack-128-rom | 281 | 0 | 501 | 126 | 75 | 0 | 0 |
| twobit-128 | 21 | 0 | 501 | 8 | 4 | 0 | 0 |
| store-128-2bit | 1260 | 178 | 1665 | 137 | 11 | 0 | 8 |
| store-128-base3 | 1746 | 192 | 1664 | 282 | 74 | 0 | 8 |
| table-switch | 123 | 0 | 0 | 51 | 27 | 0 | 0 |
| table-array | 123 | 0 | 0 | 51 | 27 | 0 | 0 |
| table-rom | 123 | 0 | 0 | 51 | 27 | 0 | 0 |

So the packed path costs ~248 LUT4 more than the 2-bit one (two tables), the same FFs;
in the whole store (which also packs the host's writes) ~490 LUT4 more: 1,746 against
1,260, the prefetch FIFO in 8 DP16KD either way.
Other choices for bytes 243..255 (e.g. their digits below 3^4, top digit zero) map one
table to 103..146 LUT4: ABC's noise, not worth giving up "an invalid byte adds nothing".
"""

from __future__ import annotations

import sys
from pathlib import Path

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from mmfree_hw.sdram.weight_store import BeatAssembler, SdramWeightStore
from mmfree_hw.tritpack import DECODE_BITS, TritUnpack, decode_byte

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bitstreams"))
import ooc  # noqa: E402  (bitstreams/ooc.py: the project's Yosys flow)

BUILD = ROOT / "build" / "sdram_cost"
CELLS = ["LUT4", "CCU2C", "TRELLIS_FF", "PFUMX", "L6MUX21", "TRELLIS_DPR16X4", "DP16KD"]


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
    "twobit-128": lambda: BeatAssembler(256, 16),
    "table-switch": lambda: BareTable("switch"),
    "table-array": lambda: BareTable("array"),
    "table-rom": lambda: BareTable("rom"),
    "store-128-2bit": lambda: _store(0),
    "store-128-base3": lambda: _store(1),
}


def _store(packing: int) -> SdramWeightStore:
    """The store as ``top.Accelerator`` builds it for ``core_config.SIM`` (65,536 weight
    words, 2^20 embedding entries, LiteDRAM's 24-bit word address)."""
    return SdramWeightStore(128, 1 << 16, addr_bits=16, count_bits=17, mem_addr_bits=24,
                            prefetch_words=512, packing=packing, embed_words=1 << 20,
                            embed_addr_bits=20, embed_count_bits=17)


def synth(name: str, factory) -> dict:
    stat = ooc.synth_stat(name, factory, BUILD)
    return {cell: ooc.cell_count(stat, cell) for cell in CELLS}


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
