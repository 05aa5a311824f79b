"""What the flow needs to know about one ECP5 board: :class:`BoardSpec`.

A board is an amaranth-boards platform class plus the facts the flow uses from it: the oscillator, the UART
and LED resources, the device's resource totals (for reports) and the openFPGALoader board name (for
flashing). One board module (``boards/ulx3s.py``, ``boards/ecpix5.py``) defines the specs of its variants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

from amaranth.vendor import LatticeECP5Platform

from hdl.sdram.chip import SdramChip

__all__ = ["BoardSpec", "Led", "RESOURCE_NAMES", "DATASHEET_TOTALS"]

#: The resource names of :attr:`BoardSpec.totals` and of :attr:`boards.build.BuildResult.resources`.
RESOURCE_NAMES = ("LUT4", "FF", "DP16KD", "MULT18X18D")

#: Lattice's data sheet totals where they are smaller than what nextpnr offers (the 12F is a 25F die that
#: nextpnr gives the 25F's totals, docs/boards.md): a design meant for the device must fit these.
DATASHEET_TOTALS = {"LFE5U-12F": {"LUT4": 12_000, "FF": 12_000, "DP16KD": 32, "MULT18X18D": 28}}


class Led(NamedTuple):
    """One LED: a resource ``name`` and ``number`` of the platform, and for an RGB LED its subsignal."""

    name: str
    number: int
    subsignal: str | None = None


@dataclass(frozen=True)
class BoardSpec:
    """One ECP5 board variant.

    Attributes
    ----------
    name : str
        The name the user types (``ulx3s-85f``).
    platform : Callable[[], LatticeECP5Platform]
        The amaranth-boards platform class, e.g. ``amaranth_boards.ulx3s.ULX3S_85F_Platform``.
    device, package : str
        As the platform class spells them (``"LFE5U-85F"``, ``"BG381"``).
    speed : int
        The speed grade (6, 7 or 8).
    lut4, ff, dp16kd, mult18x18d : int
        The device's totals as nextpnr-ecp5 reports them as available (``TRELLIS_COMB``, ``TRELLIS_FF``,
        ``DP16KD``, ``MULT18X18D`` in ``--report``), the numbers a build is checked against.
    clock : str
        The oscillator's resource name (number 0).
    clock_mhz : float
        The oscillator's frequency.
    uart : tuple[str, int]
        The resource name and number of the UART to the host (``rx`` and ``tx`` subsignals).
    leds : tuple[Led, ...]
        The LEDs that :class:`boards.top.BoardTop` drives, in the order it assigns them.
    loader_board : str
        The board's name for ``openFPGALoader -b``.
    sdram : hdl.sdram.chip.SdramChip or None
        The SDR SDRAM chip on the platform's ``sdram`` resource that the overlay can stream weights from
        (``hdl.npu.external``), or None.
    """

    name: str
    platform: Callable[[], LatticeECP5Platform]
    device: str
    package: str
    speed: int
    lut4: int
    ff: int
    dp16kd: int
    mult18x18d: int
    clock: str
    clock_mhz: float
    uart: tuple[str, int]
    leds: tuple[Led, ...]
    loader_board: str
    sdram: SdramChip | None = None

    @property
    def totals(self) -> dict[str, int]:
        """The resource totals keyed by :data:`RESOURCE_NAMES`."""
        return dict(zip(RESOURCE_NAMES, (self.lut4, self.ff, self.dp16kd, self.mult18x18d)))

    @property
    def fit_totals(self) -> dict[str, int]:
        """The totals a design must stay within: :attr:`totals`, lowered to :data:`DATASHEET_TOTALS`."""
        totals = self.totals
        for name, value in DATASHEET_TOTALS.get(self.device, {}).items():
            totals[name] = min(totals[name], value)
        return totals
