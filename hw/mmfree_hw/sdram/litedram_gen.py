"""LiteDRAM's SDR SDRAM controller for the ULX3S, generated as a standalone Verilog core.

``generate(sys_clk_freq, ...) -> GeneratedCore`` builds litedram's ``LiteDRAMCore`` (the
class behind ``litedram_gen``) with the settings of litex-boards' ULX3S target
(``litex_boards/targets/radiona_ulx3s.py``: ``GENSDRPHY(pads, sys_clk_freq)``, the 1:1 PHY
with its default CAS latency, the ``MT48LC16M16`` module at rate ``"1:1"``, LiteDRAM's default
controller settings), no CPU, one native user port at the controller's own width (16 bits:
a wider port goes through a port converter that costs an idle cycle per command), and writes
its Verilog, CSR map and init sequence. Migen / LiteX run in a subprocess with the same
Python (``python -c "...litedram_gen._main()" params.json outdir``): they are imported by
nothing else, and the patches below stay inside that process.

Changes to what ``litedram_gen`` would write, and why:

(a) DQ split. ``LiteDRAMCore`` gives GENSDRPHY an inout ``dq`` pad and wraps it in the
    platform's tristate (on ECP5 a ``TRELLIS_IO``, whose pin Migen declares ``input``:
    Verilator rejects the assignment to it, ``%Error-ASSIGNIN``). Here the ``sdram`` pads have
    ``dq_o[15:0]``, ``dq_oe`` and ``dq_i[15:0]`` instead, and GENSDRPHY's ``SDRTristate`` is
    replaced by the same three registers without a tristate (output, output enable, input:
    what LiteX's ``InferedSDRTristate`` infers). The board shell puts the IO buffer outside.
(b) No vendor primitives. On a Lattice platform LiteX lowers the PHY's ``SDROutput`` /
    ``SDRInput`` to ``OFS1P3BX`` / ``IFS1P3BX`` and the CRG's ``AsyncResetSynchronizer`` to
    ``FD1S3BX``, cells without a simulation model here: they are lowered to plain flip-flops
    instead (LiteX's ``InferedSDRIO``; the reset synchronizer as two synchronous stages, the
    Amaranth ``sync`` reset being synchronous already). So the pin registers are fabric
    flip-flops, not the ECP5's IO registers (the ``OFS1P3BX`` / ``IFS1P3BX`` LiteX would
    instantiate): enough at 50 MHz (the core alone: ~93 MHz out of context on the 85F,
    speed 6); a board build that wants IO registers can map them in its shell.
(c) ``syn_useioff`` attributes, if any, are stripped (out-of-context nextpnr fails on them),
    and so is LiteX's generation date (the same parameters give the same file).
(d) The generated ``always @(*)`` blocks are not run by Icarus at time 0 (the command mux
    stays NOP and the first row open is dropped silently): simulate with Verilator; Icarus
    is not supported.

Every change is checked on the output (the port list must have the split dq and no ``dq``,
no vendor cell may remain), so a LiteDRAM version that generates differently fails loudly.

The init sequence is regenerated from the same Python objects litedram writes
``sdram_phy.h`` from (``litedram.init.get_sdram_phy_init_sequence``), as CSR writes and
delays (:class:`InitStep`); the CSR addresses come from the generated ``csr.json``.

Output is cached under ``<cache>/litedram/<hash>/`` (``<cache>`` as in
:mod:`mmfree_hw.verilator.build`: ``$MMFREE_FPGA_CACHE``, else
``$XDG_CACHE_HOME/mmfree-fpga`` or ``~/.cache/mmfree-fpga``), the hash covering the
parameters, the litex / litedram / migen versions and this file's source; a second call reads
``core.json`` from there and costs nothing (a generation takes ~2 s).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

#: Pinned in pyproject's ``hw`` extra; the cache key covers the installed versions.
PACKAGES = ("litex", "litedram", "migen")
MODULE_NAME = "litedram_core"

# DFII bits of sdram_phy.h (litedram.init.get_sdram_phy_c_header).
DFII_CONTROL = {"DFII_CONTROL_SEL": 0x01, "DFII_CONTROL_CKE": 0x02, "DFII_CONTROL_ODT": 0x04,
                "DFII_CONTROL_RESET_N": 0x08}
DFII_COMMAND = {"DFII_COMMAND_CS": 0x01, "DFII_COMMAND_WE": 0x02, "DFII_COMMAND_CAS": 0x04,
                "DFII_COMMAND_RAS": 0x08, "DFII_COMMAND_WRDATA": 0x10,
                "DFII_COMMAND_RDDATA": 0x20}
#: liblitedram's sdram_software_control_on / _off values of ``sdram_dfii_control``.
DFII_CONTROL_SOFTWARE = 0x02 | 0x04 | 0x08
DFII_CONTROL_HARDWARE = 0x01


@dataclass(frozen=True)
class InitStep:
    """One entry of LiteDRAM's init sequence: CSR writes ``(name, value)`` in order, then a
    ``delay`` (``cdelay(n)`` in sdram_phy.h: at least n cycles)."""
    comment: str
    writes: tuple[tuple[str, int], ...]
    delay: int


@dataclass(frozen=True)
class GeneratedCore:
    """A generated core: ``verilog`` (the file, module ``module_name``), the CSR word
    addresses on the ``wb_ctrl`` Wishbone slave (``csr``: name -> byte address / 4), the init
    sequence, and the geometry: the native port's ``address_width`` (word address of
    ``data_width``-bit words, LiteDRAM's ROW_BANK_COL mapping: ``addr = row << (bankbits +
    colbits) | bank << colbits | col``), ``rowbits`` / ``colbits`` / ``bankbits``, and the PHY's
    CAS latency ``cl`` and ``read_latency`` (cycles from a READ on the DFI to its data)."""
    verilog: Path
    module_name: str
    sys_clk_freq: float
    params: dict
    csr: dict[str, int]
    init_sequence: tuple[InitStep, ...]
    address_width: int
    data_width: int
    rowbits: int
    colbits: int
    bankbits: int
    cl: int
    read_latency: int
    timing: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)

    @property
    def ports(self) -> list[str]:
        text = self.verilog.read_text()
        return _port_names(text, self.module_name)


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for p in PACKAGES:
        try:
            out[p] = version(p)
        except PackageNotFoundError as e:
            raise RuntimeError(f"{p} is not installed: pip install -e '.[hw]' (the hw extra "
                               "pins litex, litedram and migen)") from e
    return out


def cache_base(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    from mmfree_hw.verilator.build import cache_root
    return cache_root().parent / "litedram"


def generate(sys_clk_freq: float = 50e6, *, refresh_postponing: int = 1,
             module: str = "MT48LC16M16", cl: int | None = None,
             cache_dir: str | os.PathLike | None = None, quiet: bool = True) -> GeneratedCore:
    """The core for ``sys_clk_freq`` (Hz), generated now or read from the cache.
    ``refresh_postponing``: LiteDRAM's ControllerSettings option (1 = refresh every tREFI;
    up to 8 refreshes postponed and issued back to back). ``cl``: the PHY's CAS latency
    (None: LiteDRAM's default for the clock, 2 up to 100 MHz, else 3)."""
    params = {"sys_clk_freq": float(sys_clk_freq), "refresh_postponing": int(refresh_postponing),
              "module": module, "cl": cl, "name": MODULE_NAME}
    versions = package_versions()
    key = hashlib.sha256(json.dumps([params, versions, Path(__file__).read_text()],
                                    sort_keys=True).encode()).hexdigest()[:20]
    base = cache_base(cache_dir)
    final = base / key
    meta = final / "core.json"
    if not meta.exists():
        base.mkdir(parents=True, exist_ok=True)
        tmp = base / f"{key}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        (tmp / "params.json").write_text(json.dumps(params, indent=1))
        cmd = [sys.executable, "-c",
               "from mmfree_hw.sdram.litedram_gen import _main; _main()",
               str(tmp / "params.json"), str(tmp)]
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        (tmp / "gen.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0 or not (tmp / "core.json").exists():
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
            raise RuntimeError(f"LiteDRAM generation failed (exit {proc.returncode}; log in "
                               f"{tmp / 'gen.log'}):\n{tail}")
        if not quiet:
            print(f"generated LiteDRAM core in {final}", file=sys.stderr)
        try:
            os.replace(tmp, final)
        except OSError:               # another process finished the same generation first
            shutil.rmtree(tmp, ignore_errors=True)
    return _load(final, versions)


def _load(path: Path, versions: dict) -> GeneratedCore:
    m = json.loads((path / "core.json").read_text())
    return GeneratedCore(
        verilog=path / m["verilog"], module_name=m["module_name"],
        sys_clk_freq=m["params"]["sys_clk_freq"], params=m["params"], csr=m["csr"],
        init_sequence=tuple(InitStep(s["comment"], tuple(map(tuple, s["writes"])), s["delay"])
                            for s in m["init_sequence"]),
        address_width=m["address_width"], data_width=m["data_width"], rowbits=m["rowbits"],
        colbits=m["colbits"], bankbits=m["bankbits"], cl=m["cl"],
        read_latency=m["read_latency"], timing=m["timing"], versions=versions)


def _port_names(text: str, name: str) -> list[str]:
    mod = re.search(rf"^module\s+{re.escape(name)}\s*\((.*?)\);", text, re.M | re.S)
    if not mod:
        raise ValueError(f"no module {name} in the generated Verilog")
    return re.findall(r"(?:input|output|inout)\s+(?:wire|reg)?\s*(?:\[[^\]]*\])?\s*(\w+)",
                      mod.group(1))


def _eval_flags(expr: str, table: dict[str, int]) -> int:
    """``"DFII_COMMAND_RAS|DFII_COMMAND_WE"`` -> its value."""
    return sum({table[t.strip()] for t in expr.split("|")})


def init_steps(init_sequence) -> list[InitStep]:
    """sdram_phy.h's ``init_sequence()`` as CSR writes, from the tuples of
    ``get_sdram_phy_init_sequence`` ``(comment, a, ba, cmd, delay)``: a ``DFII_CONTROL_*``
    cmd is a write of ``sdram_dfii_control`` after the address / bank writes, a
    ``DFII_COMMAND_*`` cmd is ``command_p0``: command, then command_issue = 1."""
    steps = []
    for comment, a, ba, cmd, delay in init_sequence:
        writes = [("sdram_dfii_pi0_address", a), ("sdram_dfii_pi0_baddress", ba)]
        if cmd.startswith("DFII_CONTROL"):
            writes.append(("sdram_dfii_control", _eval_flags(cmd, DFII_CONTROL)))
        else:
            writes += [("sdram_dfii_pi0_command", _eval_flags(cmd, DFII_COMMAND)),
                       ("sdram_dfii_pi0_command_issue", 1)]
        steps.append(InitStep(comment, tuple(writes), int(delay)))
    return steps


# ------------------------------------------------------------------------------------------
# The generation itself: runs in the subprocess only (Migen / LiteX imported here).

def _main():
    params = json.loads(Path(sys.argv[1]).read_text())
    _build(params, Path(sys.argv[2]))


def _build(params: dict, out: Path):                                 # noqa: C901
    import litedram.gen as gen
    import litedram.phy.gensdrphy as gensdrphy
    from litedram import modules as litedram_modules
    from litedram import phy as litedram_phys
    from litedram.common import PHYPadsCombiner
    from litedram.init import get_sdram_phy_init_sequence
    from litex.build.generic_platform import Pins, Subsignal
    from litex.build.io import InferedSDRIO, SDRInput, SDROutput
    from litex.build.lattice import LatticePlatform
    from litex.soc.integration.builder import Builder
    from migen import ClockDomain, ClockSignal, Module, Signal, wrap
    from migen.fhdl.specials import Special
    from migen.genlib.resetsync import AsyncResetSynchronizer

    name = params["name"]
    module_cls = getattr(litedram_modules, params["module"])
    nb = 2                                                      # x16: two byte lanes

    # (a) The sdram pads with dq split (replaces get_dram_ios' SDR entry).
    def get_dram_ios(core_config):
        m = core_config["sdram_module"]
        return [("sdram", 0,
                 Subsignal("a", Pins(m.nrows.bit_length() - 1)),
                 Subsignal("ba", Pins(m.nbanks.bit_length() - 1)),
                 Subsignal("ras_n", Pins(1)), Subsignal("cas_n", Pins(1)),
                 Subsignal("we_n", Pins(1)), Subsignal("cs_n", Pins(1)),
                 Subsignal("dm", Pins(nb)),
                 Subsignal("dq_o", Pins(8 * nb)), Subsignal("dq_oe", Pins(1)),
                 Subsignal("dq_i", Pins(8 * nb)),
                 Subsignal("cke", Pins(1)))]

    class _DQBit:
        """What GENSDRPHY's ``pads.dq[k]`` becomes: the split pads and the bit."""
        def __init__(self, pads, k):
            self.pads, self.k = pads, k

    class _SplitDQCombiner(PHYPadsCombiner):
        def __getattr__(self, attr):
            if attr == "dq":
                assert len(self.groups) == 1
                g = self.groups[0]
                return [_DQBit(g, k) for k in range(len(g.dq_i))]
            return super().__getattr__(attr)

    class _SplitSDRTristateImpl(Module):
        def __init__(self, bit, o, oe, i, clk):
            p, k = bit.pads, bit.k
            self.specials += SDROutput(o, p.dq_o[k], clk)
            self.specials += SDRInput(p.dq_i[k], i, clk)
            if k == 0:                                          # one OE register for all
                self.specials += SDROutput(oe, p.dq_oe, clk)

    class _SplitSDRTristate(Special):
        def __init__(self, io, o, oe, i, clk=None):
            Special.__init__(self)
            assert isinstance(io, _DQBit)
            self.bit = io
            self.o, self.oe, self.i = wrap(o), wrap(oe), wrap(i)
            self.clk = wrap(clk) if clk is not None else ClockSignal()

        def iter_expressions(self):
            from migen.fhdl.specials import SPECIAL_INPUT, SPECIAL_OUTPUT
            yield self, "o", SPECIAL_INPUT
            yield self, "oe", SPECIAL_INPUT
            yield self, "i", SPECIAL_OUTPUT
            yield self, "clk", SPECIAL_INPUT

        @staticmethod
        def lower(dr):
            return _SplitSDRTristateImpl(dr.bit, dr.o, dr.oe, dr.i, dr.clk)

    gen.get_dram_ios = get_dram_ios
    gensdrphy.PHYPadsCombiner = _SplitDQCombiner
    gensdrphy.SDRTristate = _SplitSDRTristate

    # (b) Plain flip-flops instead of the ECP5 IO registers and reset synchronizer cells.
    class _GenericSDRIO:
        @staticmethod
        def lower(dr):
            return InferedSDRIO(dr.i, dr.o, dr.clk)

    class _ResetSyncImpl(Module):
        def __init__(self, cd, async_reset):
            self.clock_domains.cd_rsync = ClockDomain(reset_less=True)
            rst_meta = Signal(reset=1)
            self.comb += self.cd_rsync.clk.eq(cd.clk)
            self.sync.rsync += [rst_meta.eq(async_reset), cd.rst.eq(rst_meta | async_reset)]

    class _ResetSync:
        @staticmethod
        def lower(dr):
            return _ResetSyncImpl(dr.cd, dr.async_reset)

    overrides = {SDROutput: _GenericSDRIO, SDRInput: _GenericSDRIO,
                 AsyncResetSynchronizer: _ResetSync}

    core_config = {
        "memtype": "SDR", "cpu": None, "device": "LFE5U-85F-6BG381C",
        "sdram_module": module_cls, "sdram_module_nb": nb, "sdram_rank_nb": 1,
        "sdram_phy": litedram_phys.GENSDRPHY, "sys_clk_freq": params["sys_clk_freq"],
        "refresh_postponing": params["refresh_postponing"],
        "user_ports": {"native_0": {"type": "native"}},     # the controller's width (16)
    }
    if params["cl"] is not None:
        orig_init = gensdrphy.GENSDRPHY.__init__

        def init_with_cl(self, pads, sys_clk_freq=100e6, cl=None):
            orig_init(self, pads, sys_clk_freq, params["cl"])
        gensdrphy.GENSDRPHY.__init__ = init_with_cl

    platform = LatticePlatform(core_config["device"], io=[], toolchain="trellis")
    soc = gen.LiteDRAMCore(platform, core_config, integrated_rom_size=0xC000)
    builder = Builder(soc, output_dir=str(out / "build"), compile_gateware=False,
                      compile_software=False, csr_json=str(out / "csr.json"),
                      csr_csv=str(out / "csr.csv"))
    builder.build(build_name=name, regular_comb=False, special_overrides=overrides)

    v = (out / "build" / "gateware" / f"{name}.v").read_text()
    # (c) syn_useioff: nextpnr out of context fails on it.
    v, n_ioff = re.subn(r"\(\*\s*syn_useioff[^*]*\*\)\s*", "", v)
    # LiteX stamps the generation date into the file: dropped, so that the same parameters
    # give the same text (and simulator builds keyed by it stay cached).
    v = re.sub(r"(Date\s*:|Auto-Generated by LiteX on) \d{4}-\d\d-\d\d \d\d:\d\d:\d\d",
               r"\1 (date removed)", v)
    # Checks of (a) and (b).
    ports = _port_names(v, name)
    for p in ("sdram_dq_o", "sdram_dq_oe", "sdram_dq_i"):
        assert p in ports, f"generated core lacks {p}: {ports}"
    assert "sdram_dq" not in ports, "generated core still has an sdram_dq port"
    for cell in ("TRELLIS_IO", "OFS1P3BX", "IFS1P3BX", "FD1S3BX", "BB "):
        assert not re.search(rf"^\s*{cell}\b", v, re.M), f"vendor cell {cell} left in the core"
    assert "$readmem" not in v, "the core has memory init files (not handled)"
    (out / f"{name}.v").write_text(v)

    csr_json = json.loads((out / "csr.json").read_text())
    csr = {}
    for reg, d in csr_json["csr_registers"].items():
        assert d["size"] == 1, f"CSR {reg} spans {d['size']} words"
        csr[reg] = d["addr"] // 4
    phy = soc.sdrphy.settings
    ctl = soc.sdram.controller.settings
    geom, timing = ctl.geom, ctl.timing
    seq, _ = get_sdram_phy_init_sequence(phy, timing)
    port = soc.sdram.crossbar.masters[0] if soc.sdram.crossbar.masters else None
    meta = {
        "verilog": f"{name}.v", "module_name": name, "params": params, "csr": csr,
        "init_sequence": [s.__dict__ | {"writes": list(s.writes)} for s in init_steps(seq)],
        "address_width": port.address_width if port else None,
        "data_width": port.data_width if port else None,
        "rowbits": geom.rowbits, "colbits": geom.colbits, "bankbits": geom.bankbits,
        "cl": phy.cl, "read_latency": phy.read_latency,
        "timing": {k: getattr(timing, k) for k in ("tRP", "tRCD", "tWR", "tWTR", "tREFI",
                                                     "tRFC", "tFAW", "tCCD", "tRRD", "tRC",
                                                     "tRAS") if hasattr(timing, k)},
        "syn_useioff_stripped": n_ioff, "ports": ports,
    }
    (out / "core.json").write_text(json.dumps(meta, indent=1))
