"""The top level on a board: oscillator -> PLL -> ``sync``; a host link over the UART drives the core's bus.

LEDs, in the order of :attr:`boards.spec.BoardSpec.leds`:

0. heartbeat: toggles every 0.5-1 s (the core clock runs and is out of reset);
1. PLL locked;
2. UART activity: lit for about 20 ms after either line was low (a start bit or data);
3. and on: the bits of the core's optional ``status`` output, lowest first (the overlay's: busy, done, error).
"""

from __future__ import annotations

from typing import Callable

from amaranth.hdl import ClockDomain, Const, Elaboratable, Module, Signal, Value
from amaranth.lib import io, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import Out

from .pll import Pll, pll_params
from .spec import BoardSpec

__all__ = ["BoardTop"]

ACTIVITY_S = 0.02


class BoardTop(Elaboratable):
    """An accelerator ``core`` on board ``spec`` at about ``clock_mhz``, its bus driven by a UART link.

    Parameters
    ----------
    core : wiring.Component
        The bus slave: a ``bus`` member ``In(HostBusSignature(...))``, optionally a ``status`` member ``Out(n)``
        shown on the LEDs after the first three.
    spec : BoardSpec
        The board.
    clock_mhz : float
        The requested core clock; the PLL makes the closest it can (:attr:`clk_freq_hz`).
    link_factory : Callable[[int], wiring.Component]
        Called with the core clock in Hz; returns the bus master: ``rx: In(1)``, ``tx: Out(1)`` and
        ``bus: Out(HostBusSignature(...))`` of the core's address width (e.g. ``hdl.uart_bridge.UartBridge``).
        ``rx`` arrives synchronized to ``sync`` (two flip-flops, idle high).

    Attributes
    ----------
    pll : boards.pll.PllParams
        The PLL's dividers.
    clk_freq_hz : int
        The core clock the PLL makes.
    link : wiring.Component
        The link ``link_factory`` made.
    """

    def __init__(self, core: wiring.Component, spec: BoardSpec, clock_mhz: float,
                 link_factory: Callable[[int], wiring.Component]):
        if not isinstance(spec, BoardSpec):
            raise TypeError(f"spec must be a BoardSpec, not {spec!r}")
        if "bus" not in core.signature.members:
            raise TypeError(f"core must have a bus member, not signature {core.signature!r}")
        self.core = core
        self.spec = spec
        self.pll = pll_params(spec.clock_mhz, clock_mhz)
        self.clk_freq_hz = round(self.pll.f_out_mhz * 1e6)
        self.link = link_factory(self.clk_freq_hz)

    def elaborate(self, platform):
        spec = self.spec
        m = Module()
        m.domains += ClockDomain("sync")
        m.submodules.osc = osc = io.Buffer("i", platform.request(spec.clock, 0, dir="-"))
        m.submodules.pll = pll = Pll(self.pll)
        m.d.comb += pll.clk_in.eq(osc.i)

        m.submodules.core = self.core
        m.submodules.link = link = self.link
        wiring.connect(m, link.bus, self.core.bus)

        uart = platform.request(*spec.uart, dir="-")
        m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
        m.submodules.rx_sync = FFSynchronizer(rx.i, link.rx, init=1)
        m.d.comb += tx.o.eq(link.tx)

        heartbeat = Signal(self.clk_freq_hz.bit_length())          # the top bit toggles every 0.5-1 s
        m.d.sync += heartbeat.eq(heartbeat + 1)
        hold = round(ACTIVITY_S * self.clk_freq_hz)
        activity = Signal(range(hold + 1))
        with m.If(~link.rx | ~link.tx):
            m.d.sync += activity.eq(hold)
        with m.Elif(activity != 0):
            m.d.sync += activity.eq(activity - 1)

        status = []
        members = self.core.signature.members
        if "status" in members and members["status"].flow == Out:
            value = Value.cast(self.core.status)
            status = [value[i] for i in range(len(value))]
        self._drive_leds(m, platform, [heartbeat[-1], pll.locked, activity != 0, *status])
        return m

    def _drive_leds(self, m: Module, platform, values: list) -> None:
        """LED ``k`` of the spec shows ``values[k]``; LEDs past the values stay off."""
        ports = {}
        for k, led in enumerate(self.spec.leds):
            key = (led.name, led.number)
            if key not in ports:
                ports[key] = platform.request(led.name, led.number, dir="-")
            port = ports[key] if led.subsignal is None else getattr(ports[key], led.subsignal)
            m.submodules[f"led{k}"] = buf = io.Buffer("o", port)
            m.d.comb += buf.o.eq(values[k] if k < len(values) else Const(0, 1))
