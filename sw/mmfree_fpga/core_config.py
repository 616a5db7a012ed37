"""The core's build parameters: what one bitstream (or simulation build) can hold.

A :class:`CoreConfig` is what the compiler compiles for and the executor and gateware are
built with: the engine's lanes, the size of every memory space of ``isa.Space`` in words of
that space, and the largest model dimensions the units take. Any hgrn_bit model within
these runs on the core unchanged; the compiler refuses one that is not (``DoesNotFit``).

``SIM`` holds the whole shipped model on chip (48,128 weight words of 256 bits, 2^20
embedding entries), which no ECP5 can: the board configurations come with the boards issue.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import isa
from . import numerics as N


@dataclass(frozen=True)
class CoreConfig:
    lanes: int = 128
    weight_words: int = 1 << 16       # WEIGHTS, words of 2 * lanes bits
    param_words: int = 1 << 16        # PARAMS, 32-bit words
    embed_words: int = 1 << 20        # EMBED, int16 entries
    scratch_words: int = 1 << 14      # SCRATCH, X words
    program_words: int = 1 << 12      # PROGRAM, 128-bit words
    max_d: int = 1024                 # hidden size (EMBED's len, the residual stream)
    max_n: int = 1024                 # MLGRU width (its state region per layer)
    max_inter: int = 4096             # GLU intermediate size (gate_proj gives 2 x this)
    max_layers: int = 32              # STATE regions
    max_vocab: int = 1 << 16          # embedding rows and lm_head rows
    max_topk: int = 64                # candidates per token

    def __post_init__(self):
        if self.lanes <= 0 or self.lanes % N.CODES_PER_BYTE:
            raise ValueError(f"lanes must be a positive multiple of {N.CODES_PER_BYTE} "
                             f"(a weight word is whole bytes), got {self.lanes}")
        for name in ("weight_words", "param_words", "embed_words", "scratch_words",
                     "program_words", "max_d", "max_n", "max_inter", "max_layers",
                     "max_vocab", "max_topk"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        # every address of a space must fit the ISA's field for it (never wrapped)
        for name, bits in (("weight_words", isa.WEIGHT_ADDR_BITS),
                           ("param_words", isa.PARAM_ADDR_BITS),
                           ("embed_words", isa.EMBED_ADDR_BITS),
                           ("scratch_words", isa.SCRATCH_ADDR_BITS)):
            if getattr(self, name) > 1 << bits:
                raise ValueError(f"{name} = {getattr(self, name):,} is more than the ISA's "
                                 f"{bits}-bit addresses reach")
        if self.max_k > N.MAX_K:
            raise ValueError(f"a vector of {self.max_k} is longer than the number formats "
                             f"are proven for ({N.MAX_K})")
        if self.max_rows >= 1 << isa.ROWS_BITS:
            raise ValueError(f"{self.max_rows} rows do not fit the {isa.ROWS_BITS}-bit field")
        if self.max_layers > 1 << isa.LAYER_BITS:
            raise ValueError(f"max_layers over {1 << isa.LAYER_BITS} (the layer field)")
        if self.max_topk > self.max_vocab:
            raise ValueError("max_topk over max_vocab")

    @property
    def word_bits(self) -> int:
        """Bits of a WEIGHTS word."""
        return N.CODE_BITS * self.lanes

    @property
    def state_words(self) -> int:
        return self.max_layers * self.max_n

    @property
    def max_k(self) -> int:
        """The longest vector a norm unit or the engine takes (their vector memories)."""
        return max(self.max_d, self.max_n, self.max_inter)

    @property
    def max_rows(self) -> int:
        """The most rows of a MATVEC (the dequantizer's count, the top-k unit's input)."""
        return max(self.max_d, self.max_n, 2 * self.max_inter, self.max_vocab)

    def size(self, space: isa.Space) -> int:
        """The size of a memory space in its words."""
        return {isa.Space.WEIGHTS: self.weight_words, isa.Space.PARAMS: self.param_words,
                isa.Space.EMBED: self.embed_words, isa.Space.SCRATCH: self.scratch_words,
                isa.Space.STATE: self.state_words,
                isa.Space.PROGRAM: self.program_words}[isa.Space(space)]

    def word_width(self, space: isa.Space) -> int:
        """The bits of one word of a space."""
        return {isa.Space.WEIGHTS: self.word_bits, isa.Space.PARAMS: 32, isa.Space.EMBED: 16,
                isa.Space.SCRATCH: N.X_BITS, isa.Space.STATE: N.X_BITS,
                isa.Space.PROGRAM: isa.WORD_BITS}[isa.Space(space)]


#: The simulation configuration: the shipped model (and larger ones) entirely on chip.
SIM = CoreConfig()

#: The ULX3S-85F with every memory in block RAM (``make ooc``'s ``core`` entry): 128 lanes,
#: the memories sized so that the core fits the ECP5-85F's 208 DP16KD with each memory
#: replicated per read port (SCRATCH six times, PARAMS four). 4,096 weight words are 1 M
#: ternary weights: a small model's, not the shipped one's 6.2 M, which the boards issue
#: streams from SDRAM instead.
ULX3S_85F = CoreConfig(lanes=128, weight_words=4096, param_words=2048, embed_words=16384,
                       scratch_words=2048, program_words=1024, max_d=512, max_n=512,
                       max_inter=1024, max_layers=8, max_vocab=1024, max_topk=64)


@dataclass(frozen=True)
class SdramConfig:
    """Weights in SDRAM behind LiteDRAM (``mmfree_hw.sdram``) instead of block RAM: the
    ULX3S's 16-bit SDR SDRAM (MT48LC16M16A2, 32 MB) at ``clock_hz`` (the core runs on the
    same clock), words stored as ``packing`` (``commands.Packing``: 2-bit codes, or 1.6-bit
    base 3), a prefetch FIFO of ``prefetch_words`` weight words in front of the engine.
    ``refresh_postponing``: LiteDRAM's (1 .. 8 refreshes postponed and issued together).
    ``embed_in_sdram``: the embedding table lives in the SDRAM too, after the weights (the
    core fetches a token's row into a ``max_d``-entry buffer); False keeps it in block
    RAM. ``onchip_words``: the first WEIGHTS words kept in block RAM
    (``mmfree_hw.hybrid_weights``; the compiler places the BitLinears that fill it there,
    ``compile_model(onchip_words=)``), the rest streamed; 0: every weight in SDRAM."""

    clock_hz: float = 50e6
    packing: int = 0
    prefetch_words: int = 512
    refresh_postponing: int = 1
    beat_bits: int = 16
    embed_in_sdram: bool = True
    onchip_words: int = 0

    def __post_init__(self):
        if not 1 <= self.refresh_postponing <= 8:
            raise ValueError("refresh_postponing must be 1 .. 8 (LiteDRAM's range)")
        if self.packing not in (0, 1):
            raise ValueError("packing must be 0 (2-bit codes) or 1 (base 3)")
        if self.prefetch_words < 2:
            raise ValueError("prefetch_words must be at least 2")
        if self.onchip_words < 0:
            raise ValueError("onchip_words must be >= 0")

    def beats_per_word(self, lanes: int) -> int:
        """Memory beats one weight word of ``lanes`` codes takes."""
        return N.word_beats(lanes, bool(self.packing), self.beat_bits)
