"""SDR SDRAM chips: geometry and the datasheet's timing limits, one :class:`SdramChip` per part.

The controller (:mod:`hdl.sdram.litedram`) takes a chip's LiteDRAM module name; the device model
(``sim.sdram_model``) takes its limits. The two are kept apart on purpose: LiteDRAM has its own timing table,
and the model checks what the controller does against the datasheet, not against that table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["SdramChip", "MT48LC16M16A2", "CHIPS"]


@dataclass(frozen=True)
class SdramChip:
    """One SDR SDRAM part.

    Parameters
    ----------
    name : str
        The part number.
    litedram_module : str
        The class of ``litedram.modules`` that describes it to LiteDRAM's generator.
    banks, rows, columns, data_bits : int
        Geometry: a bank is ``rows`` rows of ``columns`` words of ``data_bits``.
    t_rcd, t_rp, t_ras, t_rc, t_rfc, t_rrd, t_wr : float
        Minimum times in ns: ACTIVE to READ/WRITE, PRECHARGE to ACTIVE, ACTIVE to PRECHARGE, ACTIVE to ACTIVE
        (same bank), AUTO REFRESH to any command, ACTIVE to ACTIVE (another bank), last write data to PRECHARGE.
    t_mrd : int
        LOAD MODE REGISTER to any command, in clock cycles.
    t_refi : float
        Average interval between AUTO REFRESH commands in ns (the refresh period over the rows).
    postponed_refreshes : int
        How many AUTO REFRESH commands a controller may owe at any moment.
    t_init : float
        Power-up wait in ns, with the clock running, before the first command other than NOP.
    cas_latencies : tuple of int
        The CAS latencies the part supports.
    """

    name: str
    litedram_module: str
    banks: int
    rows: int
    columns: int
    data_bits: int
    t_rcd: float
    t_rp: float
    t_ras: float
    t_rc: float
    t_rfc: float
    t_rrd: float
    t_wr: float
    t_mrd: int
    t_refi: float
    postponed_refreshes: int
    t_init: float
    cas_latencies: tuple[int, ...]

    @property
    def bytes(self) -> int:
        """Capacity in bytes."""
        return self.banks * self.rows * self.columns * self.data_bits // 8

    def cycles(self, clock_mhz: float) -> dict[str, int]:
        """Each minimum time as whole clock cycles at ``clock_mhz`` (rounded up), ``init``, and ``refi``: the
        refresh interval, rounded up too, as LiteDRAM rounds it. A controller refreshing every ``refi`` cycles
        then runs up to one cycle an interval behind the datasheet's average (0.05% at 60 MHz: 469 cycles for
        468.75), which the chip's retention margin covers; counted from the exact average instead, a device
        model would find every such controller late by eight refreshes after a few million cycles."""
        if not clock_mhz > 0:
            raise ValueError(f"clock_mhz must be positive, not {clock_mhz!r}")
        period = 1e3 / clock_mhz
        up = {name: max(1, math.ceil(getattr(self, f"t_{name}") / period - 1e-9))
              for name in ("rcd", "rp", "ras", "rc", "rfc", "rrd", "wr", "init")}
        return {**up, "mrd": self.t_mrd, "refi": math.ceil(self.t_refi / period - 1e-9)}


#: The ULX3S's 32 MB part (Micron MT48LC16M16A2, 4M x 16 x 4 banks) at its slowest speed grade (-75):
#: a controller that meets these meets every grade the board may carry.
MT48LC16M16A2 = SdramChip(
    name="MT48LC16M16A2", litedram_module="MT48LC16M16", banks=4, rows=8192, columns=512, data_bits=16,
    t_rcd=20.0, t_rp=20.0, t_ras=44.0, t_rc=66.0, t_rfc=66.0, t_rrd=15.0, t_wr=15.0, t_mrd=2,
    t_refi=64e6 / 8192, postponed_refreshes=8, t_init=100_000.0, cas_latencies=(2, 3))

CHIPS = {chip.name: chip for chip in (MT48LC16M16A2,)}
