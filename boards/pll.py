"""The core clock: an ECP5 EHXPLLL that drives the ``sync`` clock domain from the board's oscillator.

Dividers
--------
The PLL feeds back from its primary output (``FEEDBK_PATH = "CLKOP"``), so

    f_out = f_in * CLKFB_DIV / CLKI_DIV,    f_vco = f_out * CLKOP_DIV,    f_pfd = f_in / CLKI_DIV.

:func:`pll_params` searches the dividers the way Project Trellis's ``ecppll`` does (``CLKI_DIV`` 1..128,
``CLKFB_DIV`` 1..80, ``CLKOP_DIV`` 1..128, ties broken by the VCO nearest 600 MHz) within the ECP5 data
sheet's sysCLOCK PLL limits: input 8-400 MHz, phase detector 3.125-400 MHz, VCO 400-800 MHz and output
3.125-400 MHz. It returns the closest achievable frequency, not necessarily the one asked for
(25 MHz -> 66 MHz gives 65.625 MHz).

Reset
-----
:class:`Pll` holds the domain in reset until the PLL reports lock (a :class:`ResetSynchronizer`: the reset
asserts at once and releases two clock edges after lock).
"""

import math
from dataclasses import dataclass

from amaranth.hdl import ClockSignal, Const, Instance, Module
from amaranth.lib import wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out

from .errors import BoardError

__all__ = ["PllParams", "pll_params", "Pll", "INPUT_MHZ", "PFD_MHZ", "VCO_MHZ", "OUTPUT_MHZ"]

INPUT_MHZ = (8.0, 400.0)
PFD_MHZ = (3.125, 400.0)
VCO_MHZ = (400.0, 800.0)
OUTPUT_MHZ = (3.125, 400.0)
_CLKI_DIVS, _CLKFB_DIVS, _CLKOP_DIVS = range(1, 129), range(1, 81), range(1, 129)


@dataclass(frozen=True)
class PllParams:
    """EHXPLLL dividers for an input frequency (see the module's documentation for the relations)."""

    f_in_mhz: float
    clki_div: int
    clkfb_div: int
    clkop_div: int

    @property
    def f_out_mhz(self) -> float:
        return self.f_in_mhz * self.clkfb_div / self.clki_div

    @property
    def f_pfd_mhz(self) -> float:
        return self.f_in_mhz / self.clki_div

    @property
    def f_vco_mhz(self) -> float:
        return self.f_out_mhz * self.clkop_div

    @property
    def clkop_cphase(self) -> int:
        """The coarse phase of ``CLKOP`` for 0 degrees: ``CLKOP_DIV - 1`` (what Lattice's tools set)."""
        return self.clkop_div - 1


def _within(value: float, limits: tuple[float, float]) -> bool:
    return limits[0] <= value <= limits[1]


def pll_params(f_in_mhz: float, f_out_mhz: float) -> PllParams:
    """The dividers that bring ``f_in_mhz`` closest to ``f_out_mhz`` within the ECP5 PLL's limits.

    Raises :class:`~boards.errors.BoardError` if either frequency is outside the PLL's range.
    """
    if not _within(f_in_mhz, INPUT_MHZ):
        raise BoardError(f"the PLL takes {INPUT_MHZ[0]:g}-{INPUT_MHZ[1]:g} MHz in, not {f_in_mhz:g} MHz")
    if not _within(f_out_mhz, OUTPUT_MHZ):
        raise BoardError(f"the PLL makes {OUTPUT_MHZ[0]:g}-{OUTPUT_MHZ[1]:g} MHz, not {f_out_mhz:g} MHz")
    best, best_key = None, None
    for clki_div in _CLKI_DIVS:
        if not _within(f_in_mhz / clki_div, PFD_MHZ):
            continue
        for clkfb_div in _CLKFB_DIVS:
            f = f_in_mhz * clkfb_div / clki_div
            if not _within(f, OUTPUT_MHZ):
                continue
            # the output divider only places the VCO: the one or two in range nearest 600 MHz
            lo = max(_CLKOP_DIVS.start, math.ceil(VCO_MHZ[0] / f))
            hi = min(_CLKOP_DIVS.stop - 1, math.floor(VCO_MHZ[1] / f))
            for clkop_div in {min(max(n, lo), hi) for n in (math.floor(600.0 / f), math.ceil(600.0 / f))}:
                params = PllParams(f_in_mhz, clki_div, clkfb_div, clkop_div)
                if not _within(params.f_vco_mhz, VCO_MHZ):
                    continue
                key = (abs(f - f_out_mhz), abs(params.f_vco_mhz - 600.0), clkop_div)
                if best_key is None or key < best_key:
                    best, best_key = params, key
    return best


class Pll(wiring.Component):
    """An EHXPLLL that drives the clock of domain ``domain`` from ``clk_in`` and holds the domain in reset until
    the PLL locks. The parent defines the domain (``m.domains += ClockDomain("sync")``).

    Parameters
    ----------
    params : PllParams
        The dividers (:func:`pll_params`).
    domain : str
        The clock domain it drives (``sync``).

    Members
    -------
    clk_in : In(1)
        The oscillator.
    locked : Out(1)
        The PLL's lock output (asynchronous).
    """

    clk_in: In(1)
    locked: Out(1)

    def __init__(self, params: PllParams, domain: str = "sync"):
        if not isinstance(params, PllParams):
            raise TypeError(f"params must be a PllParams, not {params!r}")
        self._params = params
        self._domain = domain
        super().__init__()

    @property
    def params(self) -> PllParams:
        return self._params

    def elaborate(self, platform):
        p = self._params
        m = Module()
        clk = ClockSignal(self._domain)
        m.submodules.pll = Instance(
            "EHXPLLL",
            # loop filter settings as ecppll and Lattice's tools write them (nextpnr's defaults are zeros)
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
            a_FREQUENCY_PIN_CLKI=f"{p.f_in_mhz:g}", a_FREQUENCY_PIN_CLKOP=f"{p.f_out_mhz:g}",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_FEEDBK_PATH="CLKOP",
            p_CLKI_DIV=p.clki_div, p_CLKFB_DIV=p.clkfb_div,
            p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p.clkop_div, p_CLKOP_CPHASE=p.clkop_cphase, p_CLKOP_FPHASE=0,
            i_CLKI=self.clk_in, i_CLKFB=clk, i_RST=Const(0, 1), i_STDBY=Const(0, 1),
            i_PHASESEL0=Const(0, 1), i_PHASESEL1=Const(0, 1), i_PHASEDIR=Const(1, 1),
            i_PHASESTEP=Const(1, 1), i_PHASELOADREG=Const(1, 1), i_PLLWAKESYNC=Const(0, 1),
            i_ENCLKOP=Const(0, 1),
            o_CLKOP=clk, o_LOCK=self.locked,
        )
        m.submodules.reset = ResetSynchronizer(~self.locked, domain=self._domain)
        return m
