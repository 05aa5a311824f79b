"""An 8N1 UART: a receiver and a transmitter of bytes as ``amaranth.lib.stream`` interfaces.

One frame on the line is a start bit (0), eight data bits (least significant first) and a stop bit (1);
the idle line is 1. Both directions run from one clock and a bit period of ``divisor`` cycles,
``divisor = round(clk_freq / baud)`` (:func:`divisor`), which must be at least 4 and within 2.5% of the
requested rate: two ends that are each within 2.5% stay within half a bit over a frame.

Receiver
--------
The pin passes through a two-flop synchronizer. A 0 on the idle line starts a frame; the start bit is
sampled again half a bit later and, if the line is back at 1, the glitch is dropped (a false start).
Every data bit and the stop bit are then sampled one bit period apart, so each sample falls in the
middle of its bit. A 0 where the stop bit should be is a framing error: the byte is dropped,
``framing_error`` pulses for one cycle and the receiver waits for the line to return to 1 before it
looks for the next start bit (so that a break is not read as a stream of zero bytes). The receiver is
ready for the next start bit right after the middle of the stop bit, so a transmitter up to half a bit
per frame faster is followed. The received byte waits in an output register; a byte that completes while
that register is still full is dropped and ``overrun`` pulses.

Transmitter
-----------
A ten-bit shift register drives the pin from a flip-flop; it takes a byte when the previous frame's stop
bit ends, so a continuous stream leaves back to back (exactly ``10 * divisor`` cycles per byte).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Uart", "UartRx", "UartTx", "divisor"]

MIN_DIVISOR = 4
MAX_RATE_ERROR = 0.025


def divisor(clk_freq: float, baud: float) -> int:
    """Clock cycles per bit for ``baud`` at ``clk_freq`` (rounded); ValueError if that is too coarse.

    Parameters
    ----------
    clk_freq : float
        Clock frequency in Hz.
    baud : float
        Bit rate in bits per second.
    """
    for name, value in (("clk_freq", clk_freq), ("baud", baud)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a positive number, not {value!r}")
    cycles = round(clk_freq / baud)
    if cycles < MIN_DIVISOR:
        raise ValueError(f"baud {baud!r} is too fast for a {clk_freq!r} Hz clock: {clk_freq / baud:.2f} cycles "
                         f"per bit, at least {MIN_DIVISOR} are needed")
    error = abs(clk_freq / cycles - baud) / baud
    if error > MAX_RATE_ERROR:
        raise ValueError(f"baud {baud!r} is off by {100 * error:.1f}% at {clk_freq!r} Hz ({cycles} cycles per bit); "
                         f"at most {100 * MAX_RATE_ERROR}% is allowed")
    return cycles


class _Clocked(wiring.Component):
    """A component that moves one bit every ``divisor`` cycles: the part that :class:`UartRx`, :class:`UartTx`
    and :class:`Uart` share.

    Parameters
    ----------
    clk_freq, baud : float
        As for :func:`divisor`.
    members : dict
        The component's signature members.
    """

    def __init__(self, clk_freq: float, baud: float, members: dict):
        self._clk_freq = clk_freq
        self._baud = baud
        self._divisor = divisor(clk_freq, baud)
        super().__init__(members)

    @property
    def divisor(self) -> int:
        """Clock cycles per bit."""
        return self._divisor


class UartRx(_Clocked):
    """8N1 receiver: the line in, bytes out.

    Parameters
    ----------
    clk_freq : float
        Clock frequency in Hz.
    baud : float
        Bit rate (see :func:`divisor`).

    Members
    -------
    pin : In(1)
        The receive line (asynchronous; synchronized inside).
    o : Out(stream.Signature(8))
        Received bytes.
    framing_error : Out(1)
        One-cycle pulse: a frame ended with 0 instead of the stop bit (its byte is dropped).
    overrun : Out(1)
        One-cycle pulse: a byte was dropped because the previous one had not been taken.
    """

    def __init__(self, clk_freq: float, baud: float):
        super().__init__(clk_freq, baud, {"pin": In(1, init=1), "o": Out(stream.Signature(unsigned(8))),
                                          "framing_error": Out(1), "overrun": Out(1)})

    def elaborate(self, platform):
        m = Module()
        div = self._divisor

        sync = Signal(2, init=0b11)
        line = sync[1]
        m.d.sync += sync.eq(Cat(self.pin, sync[0]))

        timer = Signal(range(div))
        bits = Signal(range(8))
        shreg = Signal(8)
        expired = timer == 0
        with m.If(~expired):
            m.d.sync += timer.eq(timer - 1)

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        m.d.sync += [self.framing_error.eq(0), self.overrun.eq(0)]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += timer.eq(div // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(expired):
                    with m.If(line):
                        m.next = "IDLE"                 # a glitch, not a start bit
                    with m.Else():
                        m.d.sync += [timer.eq(div - 1), bits.eq(0)]
                        m.next = "DATA"
            with m.State("DATA"):
                with m.If(expired):
                    m.d.sync += [shreg.eq(Cat(shreg[1:], line)), timer.eq(div - 1), bits.eq(bits + 1)]
                    with m.If(bits == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(expired):
                    with m.If(line):
                        with m.If(self.o.valid & ~self.o.ready):
                            m.d.sync += self.overrun.eq(1)
                        with m.Else():
                            m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += self.framing_error.eq(1)
                        m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(line):
                    m.next = "IDLE"
        return m


class UartTx(_Clocked):
    """8N1 transmitter: bytes in, the line out.

    Parameters
    ----------
    clk_freq : float
        Clock frequency in Hz.
    baud : float
        Bit rate (see :func:`divisor`).

    Members
    -------
    i : In(stream.Signature(8))
        Bytes to send; one is taken when the line is idle or the previous stop bit ends.
    pin : Out(1)
        The transmit line (from a flip-flop; 1 when idle).
    """

    def __init__(self, clk_freq: float, baud: float):
        super().__init__(clk_freq, baud, {"i": In(stream.Signature(unsigned(8))), "pin": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        div = self._divisor

        shreg = Signal(10, init=0x3FF)          # start, 8 data bits, stop; shifted out from bit 0
        left = Signal(range(11))                # bits still to send, the current one included
        timer = Signal(range(div))
        bit_done = timer == 0
        m.d.comb += [
            self.pin.eq(shreg[0]),
            self.i.ready.eq((left == 0) | ((left == 1) & bit_done)),
        ]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [shreg.eq(Cat(Const(0, 1), self.i.payload, Const(1, 1))), left.eq(10), timer.eq(div - 1)]
        with m.Elif(left != 0):
            with m.If(bit_done):
                m.d.sync += [shreg.eq(Cat(shreg[1:], Const(1, 1))), left.eq(left - 1), timer.eq(div - 1)]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        return m


class Uart(_Clocked):
    """A receiver and a transmitter at the same rate.

    Parameters
    ----------
    clk_freq : float
        Clock frequency in Hz.
    baud : float
        Bit rate (see :func:`divisor`).

    Members
    -------
    rx_pin : In(1)
        The receive line.
    tx_pin : Out(1)
        The transmit line.
    rx : Out(stream.Signature(8))
        Received bytes.
    tx : In(stream.Signature(8))
        Bytes to send.
    framing_error, overrun : Out(1)
        The receiver's error pulses (:class:`UartRx`).
    """

    def __init__(self, clk_freq: float, baud: float):
        super().__init__(clk_freq, baud, {
            "rx_pin": In(1, init=1), "tx_pin": Out(1, init=1),
            "rx": Out(stream.Signature(unsigned(8))), "tx": In(stream.Signature(unsigned(8))),
            "framing_error": Out(1), "overrun": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.receiver = receiver = UartRx(self._clk_freq, self._baud)
        m.submodules.transmitter = transmitter = UartTx(self._clk_freq, self._baud)
        m.d.comb += [
            receiver.pin.eq(self.rx_pin),
            self.tx_pin.eq(transmitter.pin),
            self.framing_error.eq(receiver.framing_error),
            self.overrun.eq(receiver.overrun),
        ]
        wiring.connect(m, receiver.o, wiring.flipped(self.rx))
        wiring.connect(m, wiring.flipped(self.tx), transmitter.i)
        return m
