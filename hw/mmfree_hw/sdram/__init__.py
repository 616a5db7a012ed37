"""The ULX3S's SDR SDRAM (Micron MT48LC16M16A2, 32 MB, 16 bits) behind LiteDRAM.

- :mod:`.litedram_gen`: generates LiteDRAM's controller (``LiteDRAMCore`` with the 1:1
  ``GENSDRPHY`` and the ``MT48LC16M16`` module, as litex-boards' ULX3S target builds it) as
  a standalone Verilog core, at build time, from the pinned PyPI packages (``litex``,
  ``litedram``, ``migen``: the ``hw`` extra), in a subprocess, cached by a hash of its
  parameters and the package versions. Migen / LiteX are never imported by the rest of
  this package.
- :mod:`.controller`: :class:`~.controller.SdramController`, the Amaranth component around
  the generated core: an init sequencer that replays LiteDRAM's SDR init sequence over the
  core's Wishbone control port (no CPU), a power-up memory check, and streams for commands,
  write data and read data.
- ``mt48lc16m16a2.v``: a timing-checked Verilog model of the chip, for simulation (tests and
  ``scripts/sdram_stream_bench.py``).

Simulate with Verilator. Icarus is not supported: it does not run the generated core's
``always @(*)`` blocks at time 0, so the command mux stays at NOP and the first row open is
dropped silently.
"""

from .litedram_gen import GeneratedCore, generate

__all__ = ["GeneratedCore", "generate"]
