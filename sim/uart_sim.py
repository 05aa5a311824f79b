"""A simulated board behind a pseudo-terminal: the host driver talks to Verilated gateware over its UART pins.

:func:`simulated_board` Verilates a component with ``rx``/``tx`` pins (a :class:`hdl.uart_bridge.UartBridge`
and whatever it drives: :class:`UartBoard` puts the bridge on any bus device), runs it in a C++ harness
(``sim/harness/uart_pty.cpp``) and yields the harness's pty (:class:`SimulatedBoard`), which the host opens
like any serial port, so that :class:`compiler.host.link.Link` and the overlay's driver run unchanged::

    with simulated_board(UartBoard(OverlayBus(config), 48e6, 3e6), "build/sim") as board, \
            SerialPort(board.path) as port:
        driver = NpuDriver(Link(port))
        driver.load(program)
        logits, cycles = driver.infer(x)

The harness bit-bangs the pins at ``divisor`` clock cycles per bit: bytes the host writes to the pty go
out on ``rx`` back to back; frames the gateware sends on ``tx`` are sampled mid-bit and written to the pty.
No Python runs per cycle. While bytes move it simulates without pause; after ``idle_cycles`` cycles with
no UART activity (no byte queued or on either line) it stops the clock until the host writes again, so an
idle board costs no CPU and simulated time does not run while the host thinks. ``idle_cycles`` must
therefore exceed the longest silence that the gateware itself ends (the bridge's inter-byte timeout,
a device's latency before it answers). The gateware starts from its registers' initial values, without a
reset (faster to simulate). Binaries are cached by a hash of their Verilog.
"""

from __future__ import annotations

import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from amaranth.hdl import ClockDomain, ClockSignal, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hdl.uart_bridge import UartBridge
from sim.verilator_host import HARNESS_FLAGS, harness_source, verilate

__all__ = ["build", "simulated_board", "SimulatedBoard", "UartBoard"]

# The pty harness's C++ source, package data (sim/harness/).
_HARNESS = harness_source("uart_pty.cpp")


class UartBoard(wiring.Component):
    """The gateware of a board without its PLL and LEDs: a :class:`hdl.uart_bridge.UartBridge` on the
    ``rx``/``tx`` pins, driving the host bus of ``device``; the component to give :func:`simulated_board`.

    Parameters
    ----------
    device : wiring.Component
        The bus device, with a port ``bus: In(HostBusSignature(addr_width))`` (e.g.
        :class:`hdl.npu.bus.OverlayBus`); the bridge's address width is the bus's.
    clk_freq : float
        Clock frequency in Hz that the bridge is built for.
    baud : float
        UART bit rate (:func:`hdl.uart.divisor`).
    **bridge_args
        More arguments of :class:`hdl.uart_bridge.UartBridge` (``timeout``, ``max_burst``).

    Attributes
    ----------
    bridge : UartBridge
        The bridge.
    device : wiring.Component
        The device on its bus.

    Members
    -------
    rx : In(1)
        The bridge's ``rx``: the line from the host.
    tx : Out(1)
        The bridge's ``tx``: the line to the host.
    """

    def __init__(self, device, clk_freq: float, baud: float, **bridge_args):
        self.bridge = UartBridge(clk_freq, baud, len(device.bus.addr), **bridge_args)
        self.device = device
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1)})

    @property
    def divisor(self) -> int:
        """Clock cycles per UART bit (the rate :func:`simulated_board` runs the line at)."""
        return self.bridge.divisor

    def elaborate(self, platform):
        m = Module()
        m.submodules.bridge = self.bridge
        m.submodules.device = self.device
        wiring.connect(m, self.bridge.bus, self.device.bus)
        m.d.comb += [self.bridge.rx.eq(self.rx), self.tx.eq(self.bridge.tx)]
        return m


class _PowerOnBoard(wiring.Component):
    """``component`` in a ``sync`` domain without a reset: every register starts from its initial value
    (as after a reset; without a reset input the Verilated model runs faster, see ``sim.verilator_host``)."""

    def __init__(self, component):
        self._inner = component
        super().__init__({"clk": In(1), "rx": In(1, init=1), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain("sync", reset_less=True)
        m.submodules.board = self._inner
        m.d.comb += [ClockSignal("sync").eq(self.clk), self._inner.rx.eq(self.rx), self.tx.eq(self._inner.tx)]
        return m


def build(component, build_root: str | Path, jobs: int = 2, *, key=None, progress=None, sources=None) -> Path:
    """Verilate ``component`` (pins ``rx``, ``tx``) with the pty harness; return the binary (cached).

    The component runs from its initial state (:class:`_PowerOnBoard`): the harness drives no reset.
    ``key`` (what determines the component's Verilog: then a cached binary is found without generating it),
    ``progress`` and ``sources`` (the design as Verilog files instead, a module ``top`` with ports ``clk``, ``rx``
    and ``tx``; ``component`` None): :func:`sim.verilator_host.verilate`'s."""
    return verilate(None if sources else _PowerOnBoard(component), _HARNESS, build_root, prefix="uart-sim",
                    binary="Vtop_uart", jobs=jobs, key=None if key is None else ("uart-pty", key), progress=progress,
                    flags=HARNESS_FLAGS, sources=sources)


@dataclass
class SimulatedBoard:
    """A running simulated board.

    Attributes
    ----------
    path : str
        The pty: the host's end of the board's UART (open it as a serial port).
    stats : dict or None
        After the board stopped: ``cycles`` simulated, ``seconds`` spent simulating (idle waits excluded),
        ``bytes_in`` (host to board), ``bytes_out``, ``framing_errors`` (seen on the board's ``tx``).
    """

    path: str
    stats: dict | None = None


@contextmanager
def simulated_board(component, build_dir: str | Path, *, divisor: int | None = None,
                    idle_cycles: int = 1_000_000, key=None, progress=None, sources=None) -> Iterator[SimulatedBoard]:
    """Run ``component`` (ports ``rx``, ``tx``) in the pty harness; yield it, with the host's end of its pty.

    Parameters
    ----------
    component : wiring.Component
        The board's gateware, with pins ``rx: In(1)`` and ``tx: Out(1)``, clocked by ``sync`` (e.g. a
        :class:`UartBoard`); it starts from its registers' initial values (no reset).
    build_dir : str or Path
        Where the Verilated binary is built (and cached).
    divisor : int, optional
        Clock cycles per UART bit; ``component.divisor`` if None.
    idle_cycles : int
        Cycles without UART activity after which the clock stops until the host writes (see the module).
    key, progress, sources : optional
        :func:`build`'s: what determines the component's Verilog (the cache key), a callback of the seconds
        spent while a binary is built, and the design as Verilog files instead of ``component`` (then None,
        and ``divisor`` is required).
    """
    divisor = component.divisor if divisor is None else divisor
    binary = build(component, build_dir, key=key, progress=progress, sources=sources)
    process = subprocess.Popen([str(binary), str(divisor), str(idle_cycles)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    board = None
    try:
        path = process.stdout.readline().strip()
        if not path:
            raise RuntimeError(f"the simulated board did not start: {process.stderr.read().strip()}")
        board = SimulatedBoard(path)
        yield board
    finally:
        process.stdin.close()                       # the harness stops when its stdin closes
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        fields = process.stdout.read().split()
        process.stdout.close()
        process.stderr.close()
        if board is not None and process.returncode == 0 and len(fields) == 5:
            board.stats = {"cycles": int(fields[0]), "seconds": float(fields[1]), "bytes_in": int(fields[2]),
                          "bytes_out": int(fields[3]), "framing_errors": int(fields[4])}
