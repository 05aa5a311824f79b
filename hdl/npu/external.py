"""The overlay with its external memory: :class:`OverlayWithSdram` joins an :class:`~hdl.npu.bus.OverlayBus`
whose configuration has one (``Config.ext_depth`` > 0) to an :class:`~hdl.sdram.litedram.SdramController` on
the board's SDRAM pins. The result is a host-bus device like ``OverlayBus`` itself (``bus``, ``status``), for
a board's top and for the simulators (``sim.npu_sdram``)."""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import wiring

from ..sdram.litedram import GeneratedCore, SdramController, SdramPins
from .bus import OverlayBus
from .isa import Config
from .overlay import EXT_WORD_BITS, ext_address_bits

__all__ = ["OverlayWithSdram"]


class OverlayWithSdram(wiring.Component):
    """``OverlayBus(config, images)`` with its external memory on ``pins``, through LiteDRAM's ``core``.

    Members: ``OverlayBus``'s ``bus`` and ``status`` (the SDRAM's pins are ``pins``' I/O ports).
    """

    def __init__(self, config: Config, core: GeneratedCore, pins: SdramPins, images: dict | None = None):
        if not config.ext_depth:
            raise ValueError("the configuration has no external memory (ext_depth 0)")
        if core.data_bits != EXT_WORD_BITS:
            raise ValueError(f"the overlay streams {EXT_WORD_BITS}-bit words, the SDRAM has {core.data_bits}")
        if ext_address_bits(config) > core.address_bits:
            raise ValueError(f"{config.ext_depth:,} weight-store words need {ext_address_bits(config)} address bits, "
                             f"the SDRAM has {core.address_bits}")
        self.inner = OverlayBus(config, images)
        self.sdram = SdramController(core, pins)
        members = self.inner.signature.members
        super().__init__({"bus": members["bus"], "status": members["status"]})

    @property
    def config(self) -> Config:
        return self.inner.config

    def elaborate(self, platform):
        m = Module()
        m.submodules.overlay = inner = self.inner
        m.submodules.sdram = sdram = self.sdram
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
