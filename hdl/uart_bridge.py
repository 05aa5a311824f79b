"""The UART bridge: framed requests from the host over a UART, executed on the host bus (:mod:`hdl.hostbus`).

Frames (``docs/protocol.md`` is the reference; :mod:`compiler.host.link` is the host side)::

    request   A5  command  length (16 bits LE)  payload  CRC (16 bits LE)
    response  5A  status   length (16 bits LE)  payload  CRC (16 bits LE)

The CRC is CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, no reflection, no final XOR) over
the command or status byte, the length and the payload. Commands:

=========  ====================================  ======================================================
command    request payload                       response (status = the command) payload
=========  ====================================  ======================================================
PING 0x01  none                                  version (8 bits), addr_width (8), max_burst (16 LE)
WRITE 0x02 addr (24 LE), 0..max_burst words      none: the words went to addr, addr + 1, ...
READ 0x03  addr (24 LE), count (16 LE)           count words (32 LE each) read from addr, addr + 1, ...
=========  ====================================  ======================================================

An error is answered with status NAK (0xFF) and the payload ``code, command`` (:data:`ERR_CRC`,
:data:`ERR_COMMAND`, :data:`ERR_LENGTH`, :data:`ERR_TIMEOUT`); nothing is executed.

Behaviour
---------
Bytes before a SYNC byte are skipped, and so is anything that arrives while the bridge executes a request
or answers it (the host waits for each answer). A frame whose next byte does not come within ``timeout``
seconds is abandoned with a NAK ``ERR_TIMEOUT``, after which the bridge looks for SYNC again; a SYNC byte
out of noise therefore costs at most one timeout. A WRITE's words are kept in a buffer of ``max_burst``
words and written only once the frame's CRC has checked, so that a corrupted frame never writes (a stray
write to the control register would start an inference); a READ is streamed, one bus read per four bytes
sent. A burst wraps around at the end of the ``addr_width``-bit address space.

Timing: the bus is driven from registers (a request reaches it one cycle after the state machine makes
it; a read answers ``1 + READ_LATENCY`` cycles after it is asked). The answer's start bit follows the end
of the request's stop bit by 5 cycles (a WRITE of ``n`` words: ``n + 6``; its bus writes are in consecutive cycles), a
timeout's NAK follows the last byte by ``timeout`` plus a few cycles, and a READ's answer leaves back to
back (the next word is read from the bus while the previous byte is on the line). Resources (yosys
``synth_ecp5``, before LUT mapping, at 50 MHz with the defaults): 316 flip-flops and one DP16KD for the
write buffer.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from .hostbus import READ_LATENCY, HostBusSignature
from .protocol import (ADDR_BYTES, CMD_PING, CMD_READ, CMD_WRITE, CRC_INIT, CRC_POLY, ERR_COMMAND, ERR_CRC,
                       ERR_LENGTH, ERR_TIMEOUT, MAX_BURST, MAX_READ_WORDS, PROTOCOL_VERSION, RESP_NAK,
                       SYNC_REQUEST, SYNC_RESPONSE)
from .uart import Uart, divisor

__all__ = ["UartBridge", "crc16_update"]

def crc16_update(crc, byte):
    """CRC-16/CCITT-FALSE of ``crc`` after one more ``byte`` (Amaranth values in, value out).

    The eight shift-and-XOR steps are a linear map over GF(2): each output bit is the XOR of a fixed set
    of input bits, worked out here, so the hardware is 16 XOR trees of at most a dozen inputs."""
    bits = Cat(crc, byte)                   # input k: crc bit k (0..15), byte bit k - 16
    value = [1 << i for i in range(16)]     # each register bit as a mask of inputs
    for j in range(8):
        value[8 + j] ^= 1 << (16 + j)
    for _ in range(8):
        msb = value[15]
        value = [0] + value[:15]
        value = [v ^ msb if (CRC_POLY >> i) & 1 else v for i, v in enumerate(value)]
    return Cat(*[Cat(*[bits[k] for k in range(24) if mask >> k & 1]).xor() for mask in value])


class UartBridge(wiring.Component):
    """Host-bus master driven by framed requests over a UART (see the module's description).

    Parameters
    ----------
    clk_freq : float
        Clock frequency in Hz.
    baud : float
        UART bit rate (:func:`hdl.uart.divisor`: e.g. 3 Mbaud needs a clock of at least 12 MHz, exact at
        a multiple of 3 MHz or within 2.5%).
    addr_width : int
        Width of the host bus address, at most 24 (the frames carry 24-bit addresses; higher bits are dropped).
    timeout : float, optional
        Inter-byte timeout in seconds: a frame is abandoned when its next byte takes longer. At least two
        byte times; default 2 ms, or four byte times where that is longer (below about 20 kbaud).
    max_burst : int
        Words one WRITE may carry (the size of the write buffer); reported by PING.

    Members
    -------
    rx : In(1)
        UART receive line (from the host).
    tx : Out(1)
        UART transmit line (to the host).
    bus : Out(HostBusSignature(addr_width))
        The host bus, driven by the bridge.
    """

    def __init__(self, clk_freq: float, baud: float, addr_width: int = 24, *, timeout: float | None = None,
                 max_burst: int = 64):
        if isinstance(addr_width, bool) or not isinstance(addr_width, int) or not 1 <= addr_width <= 8 * ADDR_BYTES:
            raise ValueError(f"addr_width must be an integer in 1..{8 * ADDR_BYTES}, not {addr_width!r}")
        if isinstance(max_burst, bool) or not isinstance(max_burst, int) or not 1 <= max_burst <= MAX_BURST:
            raise ValueError(f"max_burst must be an integer in 1..{MAX_BURST}, not {max_burst!r}")
        self._clk_freq = clk_freq
        self._baud = baud
        self._divisor = divisor(clk_freq, baud)
        if timeout is None:                     # 2 ms, or four byte times at a slow rate
            timeout = max(2e-3, 40 * self._divisor / clk_freq)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        self._timeout_cycles = math.ceil(timeout * clk_freq)
        if self._timeout_cycles < 20 * self._divisor:
            raise ValueError(f"timeout {timeout!r} s is shorter than two byte times at {baud!r} baud")
        self._addr_width = addr_width
        self._max_burst = max_burst
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "bus": Out(HostBusSignature(addr_width))})

    @property
    def divisor(self) -> int:
        """Clock cycles per UART bit."""
        return self._divisor

    @property
    def timeout_cycles(self) -> int:
        return self._timeout_cycles

    @property
    def max_burst(self) -> int:
        return self._max_burst

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart = uart = Uart(self._clk_freq, self._baud)
        m.submodules.buffer = buffer = memory.Memory(shape=32, depth=self._max_burst, init=[])
        wr, rd = buffer.write_port(), buffer.read_port()

        got, byte = uart.rx.valid, uart.rx.payload
        m.d.comb += [uart.rx_pin.eq(self.rx), self.tx.eq(uart.tx_pin), uart.rx.ready.eq(1)]

        cmd = Signal(8)
        length = Signal(16)
        pos = Signal(16)            # payload bytes received; then the word index of a WRITE
        addr = Signal(8 * ADDR_BYTES)
        word = Signal(32)           # WRITE: the word being assembled; READ request: its count in bits 16..31;
        count = Signal(16)          # answer: the bytes going out. count: WRITE words, then words still to answer
        crc = Signal(16)
        crc_rx = Signal(16)
        error = Signal(3)           # NAK code found in the header (command or length)
        resp = Signal(8)
        resp_len = Signal(16)
        nbytes = Signal(3)          # bytes of ``word`` still to send
        fetch = Signal()            # the answer's words are read from the bus

        idle = Signal(range(self._timeout_cycles))
        with m.If(got):
            m.d.sync += idle.eq(0)
        with m.Else():
            m.d.sync += idle.eq(idle + 1)
        timed_out = idle == self._timeout_cycles - 1

        out = Signal(8)
        # The bus is driven from registers, one cycle after the state machine asks: the write buffer's
        # block-RAM output and the address decode stay off the accelerator's paths (at 100 MHz the write data
        # straight from the DP16KD into the accelerator's command decode was the board's critical path).
        we, re = Signal(), Signal()
        wait = Signal(range(READ_LATENCY))
        m.d.sync += [self.bus.addr.eq(addr), self.bus.wdata.eq(rd.data), self.bus.we.eq(we), self.bus.re.eq(re)]
        m.d.comb += [
            uart.tx.payload.eq(out),
            rd.addr.eq(pos),
            wr.addr.eq(count),
            wr.data.eq(Cat(word[8:], byte)),
        ]

        @contextmanager
        def frame_byte(update_crc: bool = True):
            """Inside a frame: the body runs on a byte; a missing byte abandons the frame."""
            with m.If(got):
                if update_crc:
                    m.d.sync += crc.eq(crc16_update(crc, byte))
                yield
            with m.Elif(timed_out):
                m.d.sync += error.eq(ERR_TIMEOUT)
                m.next = "NAK"

        @contextmanager
        def send(value, update_crc: bool = True):
            """Offer ``value`` to the UART; the body runs when it is taken."""
            m.d.comb += [out.eq(value), uart.tx.valid.eq(1)]
            with m.If(uart.tx.ready):
                if update_crc:
                    m.d.sync += crc.eq(crc16_update(crc, out))
                yield

        new_len = Cat(length[:8], byte)
        word_end = (pos >= ADDR_BYTES) & (pos[:2] == (ADDR_BYTES + 3) % 4)

        with m.FSM():
            with m.State("SYNC"):
                with m.If(got & (byte == SYNC_REQUEST)):
                    m.d.sync += [crc.eq(CRC_INIT), cmd.eq(0), error.eq(0), pos.eq(0), count.eq(0)]
                    m.next = "CMD"
            with m.State("CMD"):
                with frame_byte():
                    m.d.sync += cmd.eq(byte)
                    m.next = "LEN0"
            with m.State("LEN0"):
                with frame_byte():
                    m.d.sync += length[:8].eq(byte)
                    m.next = "LEN1"
            with m.State("LEN1"):
                with frame_byte():
                    m.d.sync += length[8:].eq(byte)
                    with m.Switch(cmd):
                        with m.Case(CMD_PING):
                            m.d.sync += error.eq(Mux(new_len == 0, 0, ERR_LENGTH))
                        with m.Case(CMD_WRITE):
                            fits = (new_len[:2] == ADDR_BYTES) & (new_len <= ADDR_BYTES + 4 * self._max_burst)
                            m.d.sync += error.eq(Mux(fits, 0, ERR_LENGTH))
                        with m.Case(CMD_READ):
                            m.d.sync += error.eq(Mux(new_len == ADDR_BYTES + 2, 0, ERR_LENGTH))
                        with m.Default():
                            m.d.sync += error.eq(ERR_COMMAND)
                    with m.If(new_len == 0):
                        m.next = "CRC0"
                    with m.Else():
                        m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                with frame_byte():
                    m.d.sync += pos.eq(pos + 1)
                    with m.If(pos < ADDR_BYTES):
                        m.d.sync += addr.eq(Cat(addr[8:], byte))
                    with m.Else():
                        m.d.sync += word.eq(Cat(word[8:], byte))
                    with m.If((cmd == CMD_WRITE) & (error == 0) & word_end):
                        m.d.comb += wr.en.eq(1)
                        m.d.sync += count.eq(count + 1)
                    with m.If(pos + 1 == length):
                        m.next = "CRC0"
            with m.State("CRC0"):
                with frame_byte(update_crc=False):
                    m.d.sync += crc_rx[:8].eq(byte)
                    m.next = "CRC1"
            with m.State("CRC1"):
                with frame_byte(update_crc=False):
                    m.d.sync += crc_rx[8:].eq(byte)
                    m.next = "CHECK"
            with m.State("CHECK"):
                m.d.sync += [resp.eq(cmd), resp_len.eq(0), fetch.eq(0)]
                with m.If(crc_rx != crc):
                    m.d.sync += error.eq(ERR_CRC)
                    m.next = "NAK"
                with m.Elif(error != 0):
                    m.next = "NAK"
                with m.Elif(cmd == CMD_PING):
                    m.d.sync += [resp_len.eq(4), count.eq(1), nbytes.eq(4),
                                 word.eq(Cat(Const(PROTOCOL_VERSION, 8), Const(self._addr_width, 8),
                                             Const(self._max_burst, 16)))]
                    m.next = "TX_SYNC"
                with m.Elif(cmd == CMD_WRITE):
                    m.d.sync += pos.eq(0)
                    with m.If(count == 0):
                        m.next = "TX_SYNC"
                    with m.Else():
                        m.next = "WRITE_PREP"
                with m.Elif(word[16:] > MAX_READ_WORDS):
                    m.d.sync += error.eq(ERR_LENGTH)
                    m.next = "NAK"
                with m.Else():                          # READ
                    m.d.sync += [resp_len.eq(word[16:] << 2), count.eq(word[16:]), fetch.eq(1)]
                    m.next = "TX_SYNC"
            with m.State("NAK"):
                m.d.sync += [resp.eq(RESP_NAK), resp_len.eq(2), word.eq(Cat(error, Const(0, 5), cmd)),
                             count.eq(1), nbytes.eq(2), fetch.eq(0)]
                m.next = "TX_SYNC"
            with m.State("WRITE_PREP"):                 # the buffer's first word is read
                m.d.sync += pos.eq(1)
                m.next = "WRITE"
            with m.State("WRITE"):
                m.d.comb += we.eq(1)
                m.d.sync += [addr.eq(addr + 1), pos.eq(pos + 1), count.eq(count - 1)]
                with m.If(count == 1):
                    m.next = "TX_SYNC"
            with m.State("TX_SYNC"):
                with send(SYNC_RESPONSE, update_crc=False):
                    m.d.sync += crc.eq(CRC_INIT)
                    m.next = "TX_CMD"
            with m.State("TX_CMD"):
                with send(resp):
                    m.next = "TX_LEN0"
            with m.State("TX_LEN0"):
                with send(resp_len[:8]):
                    m.next = "TX_LEN1"
            with m.State("TX_LEN1"):
                with send(resp_len[8:]):
                    with m.If(resp_len == 0):
                        m.next = "TX_CRC0"
                    with m.Elif(fetch):
                        m.next = "TX_FETCH"
                    with m.Else():
                        m.next = "TX_DATA"
            with m.State("TX_FETCH"):
                m.d.comb += re.eq(1)
                m.d.sync += wait.eq(0)
                m.next = "TX_WAIT"
            with m.State("TX_WAIT"):                    # the bus's registered read request, then its latency
                m.d.sync += wait.eq(wait + 1)
                with m.If(wait == READ_LATENCY - 1):
                    m.next = "TX_CAPTURE"
            with m.State("TX_CAPTURE"):
                m.d.sync += [word.eq(self.bus.rdata), nbytes.eq(4), addr.eq(addr + 1)]
                m.next = "TX_DATA"
            with m.State("TX_DATA"):
                with send(word[:8]):
                    m.d.sync += [word.eq(word >> 8), nbytes.eq(nbytes - 1)]
                    with m.If(nbytes == 1):
                        m.d.sync += count.eq(count - 1)
                        with m.If(count == 1):
                            m.next = "TX_CRC0"
                        with m.Else():
                            m.next = "TX_FETCH"
            with m.State("TX_CRC0"):
                with send(crc[:8], update_crc=False):
                    m.next = "TX_CRC1"
            with m.State("TX_CRC1"):
                with send(crc[8:], update_crc=False):
                    m.next = "SYNC"
        return m
