"""The overlay with its weights in SDRAM, Verilated: :class:`hdl.npu.external.OverlayWithSdram` (the overlay,
LiteDRAM's controller) on the SDRAM device model (``sim.sdram_model``), joined as on the board
(``sim.sdram_bench``), behind the host-bus harness of ``sim.verilator_host``. The host driver
(``compiler.host.npu.NpuDriver``) runs on it through ``sim.verilator_host.Session`` as on a board: it loads
the external image through the bus, waits for the chip's initialisation, and runs.

The model stops the simulation at its first violation of the chip's timing (the harness then fails).
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Callable

from amaranth.hdl import ClockDomain, ClockSignal, Module, ResetSignal
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from hdl.hostbus import HostBusSignature
from hdl.npu.external import OverlayWithSdram
from hdl.npu.isa import Config
from hdl.npu.overlay import ext_ratio
from hdl.npu.regmap import AddressMap
from hdl.sdram.chip import MT48LC16M16A2, SdramChip
from hdl.sdram.litedram import generate

from . import verilator_host
from .sdram_bench import write_bench

__all__ = ["CLOCK_MHZ", "model_rows", "build"]

#: The clock the simulated controller is generated for (the 85F overlay's: docs/architecture.md).
CLOCK_MHZ = 60.0


def model_rows(config: Config, chip: SdramChip = MT48LC16M16A2) -> int:
    """Rows a bank the device model stores for ``config.ext_depth`` weight-store words (LiteDRAM puts a
    row's columns, then the banks, then rows in consecutive addresses): a power of two, at least 2."""
    words = config.ext_depth * ext_ratio(config)
    rows = -(-words // (chip.columns * chip.banks))
    return max(2, 1 << (rows - 1).bit_length())


class _PowerOn(wiring.Component):
    """``device`` clocked by a ``clk`` port, its reset never asserted: it starts from its initial state, as the
    harness has no reset to drive (the chip's pins stay ``device``'s I/O ports)."""

    def __init__(self, device):
        self._inner = device
        super().__init__({"bus": In(HostBusSignature(len(device.bus.addr))), "clk": In(1)})

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain("sync")
        m.d.comb += [ClockSignal("sync").eq(self.clk), ResetSignal("sync").eq(0)]
        m.submodules.dut = self._inner
        wiring.connect(m, wiring.flipped(self.bus), self._inner.bus)
        return m


def build(config: Config, build_root: str | Path, *, chip: SdramChip = MT48LC16M16A2, clock_mhz: float = CLOCK_MHZ,
          model_chip: SdramChip | None = None, progress: Callable[[float], None] | None = None) -> Path:
    """The Verilated overlay of ``config`` with its SDRAM (cached in ``build_root`` like
    ``sim.verilator_host.build``'s): LiteDRAM generated for ``chip`` at ``clock_mhz``, the device model storing
    :func:`model_rows` rows a bank. ``model_chip``: the part the model checks the controller against instead
    (``sim.sdram_bench.write_bench``'s)."""
    AddressMap(config)                                  # a configuration the host link can address, or ValueError
    rows = model_rows(config, chip)

    def sources(folder: Path) -> list[Path]:
        core = generate(chip, clock_mhz, folder / "litedram")
        return write_bench(core, folder, rows=rows, top="top", stop_on_violation=True, model_chip=model_chip,
                           host=lambda core, pins: _PowerOn(OverlayWithSdram(config, core, pins)))

    key = ("OverlayWithSdram", config, chip, clock_mhz, model_chip, rows, metadata.version("litedram"))
    return verilator_host.build(None, build_root, key=key, progress=progress, sources=sources)
