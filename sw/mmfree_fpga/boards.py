"""The board table: every board the project knows, in one place.

A :class:`Board` says what a bitstream for that board is: the FPGA (its amaranth-boards
platform), the clocks (the board oscillator, the PLL's core clock and the SDRAM clock with
its phase), where the weights live (block RAM only, or SDRAM behind LiteDRAM with part of
them resident in block RAM), the core's configuration (``core_config.CoreConfig``: lanes
and memory sizes; the same object the simulator is built with), the UART (pins by
amaranth-boards resource name, baud) and how openFPGALoader programs it.

The gateware's board shells (``mmfree_hw.board``), the build (``bitstreams/build.py``,
``make bitstream BOARD=...``), ``mmfree-fpga flash`` and the benchmark all read this table;
nothing else lists boards. A board whose ``status`` is not ``"builds"`` is in the table so
that a user who asks for it learns exactly why it does not build (and what it would need).

Nothing here imports Amaranth: the platform is named by its import path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .core_config import CoreConfig, SdramConfig


class UnknownBoard(ValueError):
    """A board name that is not in :data:`BOARDS` (the message lists the known ones)."""


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    platform: str                   # "module:Class" of an amaranth-boards platform
    fpga: str                       # the device, as nextpnr and the datasheet name it
    family: str                     # "ecp5" or "ice40"
    clk_in_hz: float                # the board oscillator
    core_hz: float                  # the PLL's core clock (the SDRAM runs on it too)
    core: CoreConfig | None
    sdram: SdramConfig | None = None
    sdram_clock_phase: float = 180.0    # degrees: the SDRAM chip's clock against the core's
    uart_baud: int = 3_000_000
    uart_resource: str = "uart"
    #: DP16KD (or SPRAM) blocks the device has, for the summary's utilization
    bram_blocks: int = 0
    dsp_blocks: int = 0
    luts: int = 0
    openfpgaloader_board: str | None = None
    #: the shipped models (``models/<name>``) this board's core runs
    models: tuple[str, ...] = ()
    #: "builds", or why not (a sentence the build prints and exits 2 with)
    status: str = "builds"
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def buildable(self) -> bool:
        return self.status == "builds"

    @property
    def onchip_weight_words(self) -> int:
        """Weight words resident in block RAM: all of them without SDRAM."""
        if self.core is None:
            return 0
        return self.core.weight_words if self.sdram is None else self.sdram.onchip_words


#: The ULX3S-85F core for the shipped model: 128 lanes; every weight word it needs (48,128)
#: is addressable, the first 2,048 (262,144 ternary weights, 32 DP16KD) in block RAM and
#: the rest streamed from the SDRAM with the embedding table. PARAMS (18,944 words for the
#: shipped model) and SCRATCH (3,584) are what decide the block RAM: PARAMS is two true
#: dual-port copies of 40 DP16KD, SCRATCH six copies of 8.
ULX3S_85F_CORE = CoreConfig(lanes=128, weight_words=1 << 16, param_words=20480,
                            embed_words=1 << 20, scratch_words=4096, program_words=512,
                            max_d=512, max_n=512, max_inter=1024, max_layers=8,
                            max_vocab=4096, max_topk=64)

#: The ULX3S-85F core for a model whose ternary weights all stay on chip (the board-sized
#: model, models/board): 6,144 words (786,432 weights, 96 DP16KD) in block RAM, 2,048 more
#: in SDRAM for a model a little larger; smaller PARAMS and SCRATCH than the shipped model
#: needs, which is what pays for the resident weights.
ULX3S_85F_RESIDENT_CORE = CoreConfig(lanes=128, weight_words=8192, param_words=6144,
                                     embed_words=1 << 20, scratch_words=3072,
                                     program_words=512, max_d=256, max_n=256,
                                     max_inter=1024, max_layers=8, max_vocab=4096,
                                     max_topk=64)

#: The 45F has 108 DP16KD, too few for the shipped model's PARAMS and SCRATCH (about 130
#: blocks): 64 lanes, the board-sized model's memories, every weight in SDRAM.
ULX3S_45F_CORE = CoreConfig(lanes=64, weight_words=1 << 14, param_words=6144,
                            embed_words=1 << 20, scratch_words=3072, program_words=512,
                            max_d=256, max_n=256, max_inter=1024, max_layers=8,
                            max_vocab=4096, max_topk=64)

def _ulx3s(name: str, description: str, size: str, core: CoreConfig, sdram: SdramConfig,
           models: tuple[str, ...]) -> Board:
    """A ULX3S entry: ``size`` is the ECP5's ("85" or "45"); everything but the core,
    the SDRAM split and the models is the board's."""
    resources = {"85": (208, 156, 83_640), "45": (108, 72, 43_848)}[size]
    return Board(
        name=name, description=description,
        platform=f"amaranth_boards.ulx3s:ULX3S_{size}F_Platform",
        fpga=f"LFE5U-{size}F-6BG381C", family="ecp5",
        clk_in_hz=25e6, core_hz=sdram.clock_hz, core=core, sdram=sdram,
        bram_blocks=resources[0], dsp_blocks=resources[1], luts=resources[2],
        openfpgaloader_board="ulx3s", models=models)


BOARDS: dict[str, Board] = {b.name: b for b in (
    _ulx3s("ulx3s-85f", "Radiona ULX3S with an ECP5-85F, 32 MB SDR SDRAM, FT231X USB UART",
           "85", ULX3S_85F_CORE,
           SdramConfig(clock_hz=100e6, packing=1, onchip_words=2048, embed_in_sdram=True),
           models=("default",)),
    _ulx3s("ulx3s-85f-resident", "ULX3S-85F for the board-sized model: its ternary weights "
           "in block RAM, the embedding in SDRAM", "85", ULX3S_85F_RESIDENT_CORE,
           SdramConfig(clock_hz=100e6, packing=1, onchip_words=6144, embed_in_sdram=True),
           models=("board",)),
    _ulx3s("ulx3s-45f", "Radiona ULX3S with an ECP5-45F: fewer lanes, the same SDRAM and UART",
           "45", ULX3S_45F_CORE,
           SdramConfig(clock_hz=100e6, packing=1, onchip_words=0, embed_in_sdram=True),
           models=("board",)),
    Board(
        name="icebreaker",
        description="1BitSquared iCEBreaker, iCE40UP5K (5,280 LUT4, 30 EBR, 4 SPRAM, 8 DSP)",
        platform="amaranth_boards.icebreaker:ICEBreakerPlatform",
        fpga="iCE40UP5K-SG48", family="ice40",
        clk_in_hz=12e6, core_hz=12e6, core=None,
        bram_blocks=30, dsp_blocks=8, luts=5_280,
        openfpgaloader_board="ice40_generic",
        status="does not fit: the smallest accelerator (4 lanes) synthesizes to 19,255 LUT4, "
               "16,515 FF, 234 EBR and 67 DSP against the iCE40UP5K's 5,280 / 5,280 / 30 / 8 "
               "(bitstreams/reports/icebreaker.md)"),
    Board(
        name="ecpix5-85",
        description="LambdaConcept ECPIX-5 with an ECP5-5G-85F and 16-bit DDR3 (MT41K256M16)",
        platform="amaranth_boards.ecpix5:ECPIX585Platform",
        fpga="LFE5UM5G-85F-8BG554I", family="ecp5",
        clk_in_hz=100e6, core_hz=100e6, core=None,
        bram_blocks=208, dsp_blocks=156, luts=83_640,
        openfpgaloader_board="ecpix5",
        status="not built: LiteDRAM's ECP5DDRPHY needs DDR3 read leveling, which LiteX runs "
               "from a CPU's BIOS; the hardware leveling sequencer that would replace it, "
               "and a timing-checked DDR3 model to test it against, are not written yet",
    ),
)}


def board(name: str) -> Board:
    """The board called ``name`` (case-insensitive), or :class:`UnknownBoard`."""
    try:
        return BOARDS[name.lower()]
    except KeyError:
        raise UnknownBoard(f"unknown board {name!r}; known boards: "
                           f"{', '.join(BOARDS)}") from None
