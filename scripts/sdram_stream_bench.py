#!/usr/bin/env python3
"""Streaming efficiency of the SDRAM controller (mmfree_hw.sdram.SdramController, LiteDRAM's
GENSDRPHY + MT48LC16M16) on the timing-checked chip model, in Verilator: 64 K sequential
words written, then read back, one command per cycle as the native port takes them; the
read phase's data-bus busy fraction (the chip model's data_cycles / cycles from the first
read's acceptance to the last read beat) and its bandwidth, per clock and
refresh_postponing. Reuses the harness of tests/test_sdram_controller.py
(sim/sdram_stream_tb.py); each configuration is a separate, cached simulator build (~20 s
the first time).

    .venv/bin/python scripts/sdram_stream_bench.py [--clocks 50,100,133] [--postponing 1,8]
                                                   [--words 65536]
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sim"))

import sdram_stream_tb as tb  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clocks", default="50,100,133", help="MHz, comma-separated")
    ap.add_argument("--postponing", default="1,8", help="refresh_postponing values")
    ap.add_argument("--words", type=int, default=1 << 16)
    a = ap.parse_args(argv)
    ops = tb.sequential(a.words)
    rows = []
    print(f"{'clock':>8} {'postpone':>8} {'CL':>3} {'read eff':>9} {'MB/s':>7} "
          f"{'write cyc':>9} {'refresh':>7} {'viol':>5}")
    for mhz in (float(x) for x in a.clocks.split(",")):
        for rp in (int(x) for x in a.postponing.split(",")):
            sim = tb.build(mhz * 1e6, rp, quiet=False)
            r = sim.run(ops)
            ok = r.init_done and not r.init_error and len(r.rdata) == a.words and all(
                d == tb.pattern(i) for i, (_, d) in enumerate(r.rdata))
            s = tb.stream_stats(sim, ops, r)
            from mmfree_hw.sdram import generate
            cl = generate(mhz * 1e6, refresh_postponing=rp).cl
            rows.append((mhz, rp, s, r.violations, ok))
            print(f"{mhz:6g}MHz {rp:>8} {cl:>3} {s['chip']:>8.2%} {s['mb_s']:>7.1f} "
                  f"{s['write_cycles']:>9} {s['refreshes']:>7} {r.violations:>5}"
                  + ("" if ok else "  DATA/INIT FAILED"), flush=True)
    return 0 if all(ok and v == 0 for *_, v, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
