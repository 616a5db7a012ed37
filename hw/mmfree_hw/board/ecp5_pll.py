"""The ECP5's PLL (``EHXPLLL``) as an Amaranth component: one input clock, up to three
outputs of chosen frequencies and phases, each a clock domain held in reset until the PLL
locks.

The divider search follows the primitive's documented structure (Lattice TN1263, "ECP5
and ECP5-5G sysCLOCK PLL/DLL Design and User Guide"): the phase detector compares
``f_in / CLKI_DIV`` with the feedback, here the first output, so
``f_vco = f_in / CLKI_DIV * CLKFB_DIV * CLKOP_DIV`` and every output is ``f_vco / DIV``.
Limits: f_pfd 10-400 MHz, f_vco 400-800 MHz, outputs 3.125-400 MHz. A phase is set in
steps of 1/8 of a VCO period (``FPHASE``) plus whole VCO periods (``CPHASE``, which counts
from ``DIV - 1`` for no shift), so the achievable phases of an output of divider D are
multiples of 45/D degrees; :func:`plan` picks the nearest and reports it.
"""


from dataclasses import dataclass

from amaranth import ClockDomain, Instance, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out

PFD_HZ = (10e6, 400e6)
VCO_HZ = (400e6, 800e6)
OUT_HZ = (3.125e6, 400e6)
OUTPUT_NAMES = ("CLKOP", "CLKOS", "CLKOS2", "CLKOS3")


@dataclass(frozen=True)
class Output:
    domain: str
    hz: float          # achieved
    phase: float       # achieved, degrees
    div: int
    cphase: int
    fphase: int


@dataclass(frozen=True)
class Plan:
    clki_div: int
    clkfb_div: int
    vco_hz: float
    outputs: tuple[Output, ...]


def plan(f_in: float, outputs: list[tuple[str, float, float]], tolerance: float = 0.0
         ) -> Plan:
    """Dividers for ``outputs`` (``(domain, hz, phase_degrees)``, the first is the feedback
    and must have phase 0) from ``f_in``: the exact frequencies if ``tolerance`` is 0, else
    within that relative error; raises ``ValueError`` if none exist."""
    if not outputs or len(outputs) > len(OUTPUT_NAMES):
        raise ValueError(f"1 to {len(OUTPUT_NAMES)} outputs")
    if outputs[0][2] != 0:
        raise ValueError("the first output is the feedback: phase 0")
    best = None
    for clki_div in range(1, 129):
        pfd = f_in / clki_div
        if not PFD_HZ[0] <= pfd <= PFD_HZ[1]:
            continue
        for op_div in range(1, 129):
            for fb_div in range(1, 129):
                vco = pfd * fb_div * op_div
                if not VCO_HZ[0] <= vco <= VCO_HZ[1]:
                    continue
                divs, err = [], 0.0
                for _, hz, _ in outputs:
                    d = max(1, min(128, round(vco / hz)))
                    e = abs(vco / d - hz) / hz
                    if e > tolerance + 1e-12 or not OUT_HZ[0] <= vco / d <= OUT_HZ[1]:
                        break
                    divs.append(d)
                    err = max(err, e)
                else:
                    if divs[0] != op_div:
                        continue
                    # prefer the smallest error, then the highest VCO (less jitter)
                    key = (err, -vco)
                    if best is None or key < best[0]:
                        best = (key, clki_div, fb_div, vco, divs)
    if best is None:
        raise ValueError(f"no EHXPLLL setting makes {[o[1] for o in outputs]} Hz "
                         f"from {f_in} Hz")
    _, clki_div, fb_div, vco, divs = best
    outs = []
    for (domain, _, phase), d in zip(outputs, divs, strict=True):
        steps = round(phase % 360 * d / 45)            # 1/8 VCO periods
        outs.append(Output(domain, vco / d, steps * 45 / d % 360, d,
                           cphase=(steps >> 3) + d - 1, fphase=steps & 7))
    return Plan(clki_div, fb_div, vco, tuple(outs))


class Ecp5Pll(wiring.Component):
    """``EHXPLLL`` making the clock domains of ``outputs`` (``(domain, hz, phase)``) from
    ``clk_in`` (``f_in`` Hz). Each domain is added to the module that elaborates this one
    (so the caller does not declare them) with a reset held while the PLL is unlocked,
    released synchronously to its own clock.

    Ports: ``clk_in`` (In: the oscillator), ``locked`` (Out)."""

    clk_in: In(1)
    locked: Out(1)

    def __init__(self, f_in: float, outputs: list[tuple[str, float, float]],
                 tolerance: float = 0.0):
        self.f_in = f_in
        self.plan = plan(f_in, outputs, tolerance)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        p = self.plan
        params = {
            "a_FREQUENCY_PIN_CLKI": f"{self.f_in / 1e6:g}",
            "a_ICP_CURRENT": "12", "a_LPF_RESISTOR": "8",
            "a_MFG_ENABLE_FILTEROPAMP": "1", "a_MFG_GMCREF_SEL": "2",
            "p_PLLRST_ENA": "DISABLED", "p_INTFB_WAKE": "DISABLED",
            "p_STDBY_ENABLE": "DISABLED", "p_DPHASE_SOURCE": "DISABLED",
            "p_OUTDIVIDER_MUXA": "DIVA", "p_OUTDIVIDER_MUXB": "DIVB",
            "p_OUTDIVIDER_MUXC": "DIVC", "p_OUTDIVIDER_MUXD": "DIVD",
            "p_CLKI_DIV": p.clki_div, "p_CLKFB_DIV": p.clkfb_div,
            "p_FEEDBK_PATH": "INT_OP",      # the first output, fed back inside the PLL
            "i_CLKI": self.clk_in,
            "i_RST": 0, "i_STDBY": 0, "i_PHASESEL0": 0, "i_PHASESEL1": 0,
            "i_PHASEDIR": 1, "i_PHASESTEP": 1, "i_PHASELOADREG": 1, "i_PLLWAKESYNC": 0,
            "i_ENCLKOP": 0, "i_ENCLKOS": 0, "i_ENCLKOS2": 0, "i_ENCLKOS3": 0,
            "o_LOCK": self.locked,
        }
        for name, out in zip(OUTPUT_NAMES, p.outputs, strict=False):
            suffix = name[3:]                       # "OP", "OS", "OS2", "OS3"
            clk = Signal(name=f"pll_{name.lower()}")
            params.update({f"p_CLK{suffix}_ENABLE": "ENABLED", f"p_CLK{suffix}_DIV": out.div,
                           f"p_CLK{suffix}_CPHASE": out.cphase,
                           f"p_CLK{suffix}_FPHASE": out.fphase,
                           f"a_FREQUENCY_PIN_{name}": f"{out.hz / 1e6:g}",
                           f"o_{name}": clk})
            cd = ClockDomain(out.domain)
            m.domains += cd
            m.d.comb += cd.clk.eq(clk)
            m.submodules[f"rst_{out.domain}"] = ResetSynchronizer(~self.locked,
                                                                  domain=out.domain)
        m.submodules.pll = Instance("EHXPLLL", **params)
        return m
