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

from hdl.npu.external import OverlayWithSdram
from hdl.npu.isa import Config
from hdl.npu.overlay import ext_ratio
from hdl.npu.regmap import AddressMap
from hdl.sdram.chip import MT48LC16M16A2, SdramChip
from hdl.sdram.litedram import generate

from hdl.uart import divisor

from . import verilator_host
from .sdram_bench import write_bench
from .uart_sim import UartBoard

__all__ = ["CLOCK_MHZ", "model_rows", "build", "uart_board"]

#: The clock the simulated controller is generated for (the 85F overlay's: docs/architecture.md).
CLOCK_MHZ = 60.0


def model_rows(words: int, chip: SdramChip = MT48LC16M16A2) -> int:
    """Rows a bank that a device model of ``chip`` stores to hold external words ``0 .. words - 1`` (LiteDRAM puts
    a row's columns, then the banks, then the rows in consecutive addresses): a power of two, at least 2. A
    board's configuration addresses the whole chip; its model stores what the image needs (a 32 MB store
    takes minutes to convert), and an access beyond it is a violation (``ROW_OUTSIDE``)."""
    rows = -(-max(int(words), 1) // (chip.columns * chip.banks))
    return min(chip.rows, max(2, 1 << (rows - 1).bit_length()))


class _PowerOn(wiring.Component):
    """``device`` clocked by a ``clk`` port, its reset never asserted: it starts from its initial state, as the
    harnesses have no reset to drive. Its other members (the host bus, or a UART's ``rx`` and ``tx``) are the
    wrapper's; the chip's pins stay ``device``'s I/O ports."""

    def __init__(self, device):
        self._inner = device
        super().__init__({**device.signature.members, "clk": In(1)})

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain("sync")
        m.d.comb += [ClockSignal("sync").eq(self.clk), ResetSignal("sync").eq(0)]
        m.submodules.dut = inner = self._inner
        for name, member in inner.signature.members.items():
            if member.is_signature:
                wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(inner, name))
            elif member.flow == wiring.In:
                m.d.comb += getattr(inner, name).eq(getattr(self, name))
            else:
                m.d.comb += getattr(self, name).eq(getattr(inner, name))
        return m


def _sources(config: Config, words: int | None, chip: SdramChip, clock_mhz: float, model_chip: SdramChip | None,
             wrap):
    """The writer of the Verilog of ``wrap(OverlayWithSdram(config, ...))`` on the device model, and what
    determines it: LiteDRAM generated for ``chip`` at ``clock_mhz``, the model storing :func:`model_rows` rows a
    bank for ``words`` external words (None: all that ``config`` addresses)."""
    AddressMap(config)                                  # a configuration the host link can address, or ValueError
    rows = model_rows(config.ext_depth * ext_ratio(config) if words is None else words, chip)

    def sources(folder: Path) -> list[Path]:
        core = generate(chip, clock_mhz, folder / "litedram")
        return write_bench(core, folder, rows=rows, top="top", stop_on_violation=True, model_chip=model_chip,
                           host=lambda core, pins: _PowerOn(wrap(OverlayWithSdram(config, core, pins))))
    return sources, (config, chip, clock_mhz, model_chip, rows, metadata.version("litedram"))


def build(config: Config, build_root: str | Path, *, words: int | None = None, chip: SdramChip = MT48LC16M16A2,
          clock_mhz: float = CLOCK_MHZ, model_chip: SdramChip | None = None,
          progress: Callable[[float], None] | None = None) -> Path:
    """The Verilated overlay of ``config`` with its SDRAM behind the host-bus harness (cached in ``build_root``
    like ``sim.verilator_host.build``'s): LiteDRAM generated for ``chip`` at ``clock_mhz``, the device model
    storing ``words`` external words (:func:`model_rows`; None: all that ``config`` addresses). ``model_chip``:
    the part the model checks the controller against instead (``sim.sdram_bench.write_bench``'s)."""
    sources, key = _sources(config, words, chip, clock_mhz, model_chip, lambda device: device)
    return verilator_host.build(None, build_root, key=("OverlayWithSdram", *key), progress=progress, sources=sources)


def uart_board(config: Config, clk_freq: float, baud: float, *, words: int | None = None,
               chip: SdramChip = MT48LC16M16A2):
    """``(sources, key, divisor)`` of the simulated board (``sim.uart_sim.simulated_board``) of the overlay of
    ``config`` with its SDRAM: the UART bridge (``sim.uart_sim.UartBoard``) on ``OverlayWithSdram``, the
    controller generated for ``chip`` at ``clk_freq``, the model storing ``words`` external words (as
    :func:`build`)."""
    sources, key = _sources(config, words, chip, clk_freq / 1e6, None, lambda device: UartBoard(device, clk_freq, baud))
    return sources, ("UartBoard", "OverlayWithSdram", *key, baud), divisor(clk_freq, baud)
