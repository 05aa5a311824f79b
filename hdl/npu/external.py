"""The overlay with its external memory: :class:`OverlayWithSdram` joins an :class:`~hdl.npu.bus.OverlayBus`
whose configuration has one (``Config.ext_depth`` > 0) to an :class:`~hdl.sdram.litedram.SdramController` on
the board's SDRAM pins. The result is a host-bus device like ``OverlayBus`` itself (``bus``, ``status``), for
a board's top (``boards.top.BoardTop``) and for the simulators (``sim.npu_sdram``).

On a board the pins come from the platform's ``sdram`` resource, LiteDRAM's Verilog is added to the build
(``platform.add_file``), and the chip's clock pin gets the core clock inverted (a DDR output, low then high
in each cycle): the chip samples a command half a cycle after the FPGA launched it, as in LiteX's ULX3S
target, and as ``sim.sdram_bench`` simulates it."""

from __future__ import annotations

from amaranth.hdl import Const, Module
from amaranth.lib import io, wiring

from ..sdram.litedram import CORE_NAME, GeneratedCore, SdramController, SdramPins
from .bus import OverlayBus
from .isa import Config
from .overlay import EXT_WORD_BITS, ext_address_bits

__all__ = ["OverlayWithSdram"]


class OverlayWithSdram(wiring.Component):
    """``OverlayBus(config, images)`` with its external memory on ``pins``, through LiteDRAM's ``core``.

    Members: ``OverlayBus``'s ``bus`` and ``status`` (the SDRAM's pins are ``pins``' I/O ports; None: the
    board's, requested from the platform at elaboration, its clock pin driven too).
    """

    def __init__(self, config: Config, core: GeneratedCore, pins: SdramPins | None = None,
                 images: dict | None = None):
        if not config.ext_depth:
            raise ValueError("the configuration has no external memory (ext_depth 0)")
        if core.data_bits != EXT_WORD_BITS:
            raise ValueError(f"the overlay streams {EXT_WORD_BITS}-bit words, the SDRAM has {core.data_bits}")
        if ext_address_bits(config) > core.address_bits:
            raise ValueError(f"{config.ext_depth:,} weight-store words need {ext_address_bits(config)} address bits, "
                             f"the SDRAM has {core.address_bits}")
        self.inner = OverlayBus(config, images)
        self._core, self._pins = core, pins
        self._verilog = core.verilog.read_text() if pins is None else None    # for the board's build
        members = self.inner.signature.members
        super().__init__({"bus": members["bus"], "status": members["status"]})

    @property
    def config(self) -> Config:
        return self.inner.config

    @property
    def overlay(self):
        """The overlay (``hdl.npu.overlay.Overlay``) inside."""
        return self.inner.overlay

    def elaborate(self, platform):
        m = Module()
        m.submodules.overlay = inner = self.inner
        pins = self._pins
        if pins is None:
            pins, clock = SdramPins.request(platform)
            m.submodules.sdram_clk = clk = io.DDRBuffer("o", clock)
            m.d.comb += [clk.o[0].eq(Const(0)), clk.o[1].eq(Const(1))]
            platform.add_file(f"{CORE_NAME}.v", self._verilog)
        m.submodules.sdram = sdram = SdramController(self._core, pins)
        wiring.connect(m, wiring.flipped(self.bus), inner.bus)
        m.d.comb += self.status.eq(inner.status)
        # the overlay's addresses are narrower than the SDRAM's: the same streams but for that
        m.d.comb += [sdram.cmd.valid.eq(inner.ext_cmd.valid), inner.ext_cmd.ready.eq(sdram.cmd.ready),
                     sdram.cmd.payload.we.eq(inner.ext_cmd.payload.we),
                     sdram.cmd.payload.addr.eq(inner.ext_cmd.payload.addr),
                     inner.ext_ready.eq(sdram.ready), inner.ext_idle.eq(sdram.idle)]
        wiring.connect(m, inner.ext_wdata, sdram.wdata)
        wiring.connect(m, sdram.rdata, inner.ext_rdata)
        return m
