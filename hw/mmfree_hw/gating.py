"""Clock gating of idle units, for the simulated accelerator only.

Verilator evaluates a clock domain's logic (its flip-flops and every combinational cone
that reads only them) only at an edge of that domain's clock. Most of the core's units are
idle most of a token (the top-k unit works for the lm_head alone, the MLGRU for one vector
a layer, the command processor waits while a token runs), yet in one clock domain each of
them costs its whole netlist every cycle. :func:`gate` gives a unit a clock domain of its
own whose clock ticks only at the edges where the unit could do something, so an idle unit
costs a few instructions a cycle instead of its netlist.

The enable of a gated unit is high in a cycle where

- a ``valid`` of any of its stream ports (In or Out, at any depth of its signature) is
  high, or an ``extra`` signal is (the pipe that drives the unit is busy, a host access
  port is enabled: whatever the caller knows to cover the unit's silent work), or
- fewer than ``hold`` cycles have passed since such a cycle: ``hold`` covers the longest
  stretch in which the unit works with no valid at any port and no ``extra``.

At an edge where the enable was low, no register of the unit changes: it has nothing in
flight, no input offered, no output waiting, so its registers hold or take values that no
later output depends on (data registers loading an input that is not valid). Gating that
edge changes no output of the unit; ``tests/test_sim_gating.py`` checks it where it counts,
byte for byte, on the replies (records, results and cycle counters) of the gated and the
ungated simulator for the same command stream.

The clock is ``clk & en_n``, ``en_n`` the enable sampled at the falling edge (a latch-free
glitch-free gate: ``en_n`` changes only while ``clk`` is low), so the gated clock rises at
exactly the edges of ``clk`` at whose start the enable was high, and the unit samples what
it would have sampled in the ``sync`` domain. The gated domains are ``reset_less``: the
simulator resets only at power-up, where every register already holds its init value (the
reset value), and a reset mux would make each register's next-state logic depend on the
``sync`` domain's reset, so Verilator would evaluate it at every edge of ``clk`` again. The
enable stays low during that reset, so the units keep their init values through it.

For synthesis, never: FPGA clocks belong on clock networks and the units are meant to run
at every edge there (``Core(gate_idle=False)``, the default).
"""

from __future__ import annotations

from amaranth import Cat, ClockDomain, ClockSignal, Module, Signal
from amaranth.hdl import DomainRenamer
from amaranth.lib import wiring


def port_valids(unit: wiring.Component) -> list:
    """The ``valid`` of every stream port of ``unit``'s signature, at any depth."""
    return [value for path, _member, value in unit.signature.flatten(unit)
            if path[-1] == "valid"]


def gate(m: Module, name: str, unit: wiring.Component, *, hold: int, extra=()):
    """Add ``unit`` to ``m`` as submodule ``name`` in a clock domain of its own, ``gate_<name>``,
    gated as the module docstring says (``hold`` >= 1 cycles; ``extra``: more signals
    that keep it clocked). Returns ``unit``."""
    if hold < 1:
        raise ValueError("hold must be at least 1 cycle")
    neg = ClockDomain(f"gate_{name}_neg", clk_edge="neg", reset_less=True, local=True)
    m.domains += neg
    m.d.comb += neg.clk.eq(ClockSignal("sync"))
    domain = ClockDomain(f"gate_{name}", reset_less=True, local=True)
    m.domains += domain
    activity = Signal(name=f"gate_{name}_activity")
    m.d.comb += activity.eq(Cat(*port_valids(unit), *extra).any())
    left = Signal(range(hold + 1), name=f"gate_{name}_left")
    en = Signal(name=f"gate_{name}_en")
    en_n = Signal(name=f"gate_{name}_en_n")
    with m.If(activity):
        m.d.sync += left.eq(hold)
    with m.Elif(left != 0):
        m.d.sync += left.eq(left - 1)
    m.d.comb += en.eq(activity | (left != 0))
    m.d[neg.name] += en_n.eq(en)
    m.d.comb += domain.clk.eq(ClockSignal("sync") & en_n)
    m.submodules[name] = DomainRenamer(domain.name)(unit)
    return unit
