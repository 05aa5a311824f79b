"""The host side of the UART link: frames (pure functions) and a :class:`Link` over any byte transport, which
the overlay's driver (:mod:`compiler.host.npu`) reads and writes the board's host bus through.

The gateware end is :class:`hdl.uart_bridge.UartBridge`; both ends take the protocol's constants and CRC
from :mod:`hdl.protocol`; ``docs/protocol.md`` describes the frames. A
transport is anything with ``read(n) -> bytes`` (at most ``n`` bytes, fewer when ``timeout`` seconds pass),
``write(data)`` and a settable ``timeout`` attribute: a ``serial.Serial``, the :class:`SerialPort` here
(a tty or pty opened raw with termios), or the simulated board of :mod:`sim.uart_sim`.

:func:`open_port` opens what ``run --port`` names: a board's USB serial port through pyserial
(:class:`PySerialPort`: any rate the adapter takes, on Linux, macOS and Windows), a pseudo-terminal (the
simulated board's) through :class:`SerialPort`; :func:`find_board_port` is ``--port auto``.
"""

from __future__ import annotations

import errno
import os
import re
import select
import struct
import termios
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from hdl.protocol import (ADDR_BYTES, CMD_PING, CMD_READ, CMD_WRITE, ERR_CRC, ERR_TIMEOUT, ERROR_NAMES,
                          MAX_READ_WORDS, PROTOCOL_VERSION, RESP_NAK, SYNC_REQUEST, SYNC_RESPONSE, crc16)

__all__ = ["LinkError", "FrameError", "NakError", "LinkTimeout", "crc16", "encode_frame", "decode_frame",
           "encode_request", "decode_response", "write_request", "read_request", "Transport", "SerialPort",
           "PySerialPort", "open_port", "find_board_port", "BOARD_USB_IDS", "DeviceInfo", "Link"]

HEADER_BYTES = 4                  # SYNC, command/status, length
CRC_BYTES = 2
MAX_PAYLOAD = 0xFFFF


class LinkError(Exception):
    """The link failed: no valid answer after the retries, or an answer that does not fit the request."""


class FrameError(LinkError):
    """A malformed frame: wrong SYNC byte, a length that does not match, or a bad CRC."""


class LinkTimeout(LinkError):
    """No (complete) answer within the timeout."""


class NakError(LinkError):
    """The device answered NAK: ``code`` (``hdl.protocol.ERR_*``) for request ``command``."""

    def __init__(self, code: int, command: int):
        self.code = code
        self.command = command
        super().__init__(f"device refused command 0x{command:02x}: {ERROR_NAMES.get(code, f'error {code}')}")


def encode_frame(sync: int, code: int, payload: bytes = b"") -> bytes:
    """``sync, code, len(payload) (16 LE), payload, CRC (16 LE)`` with the CRC over all but ``sync``."""
    if not 0 <= code <= 0xFF:
        raise ValueError(f"a command or status must be a byte, not {code!r}")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"a payload holds at most {MAX_PAYLOAD} bytes, not {len(payload)}")
    body = struct.pack("<BH", code, len(payload)) + bytes(payload)
    return bytes([sync]) + body + struct.pack("<H", crc16(body))


def decode_frame(frame: bytes, sync: int) -> tuple[int, bytes]:
    """The ``(code, payload)`` of one complete frame; FrameError if it is malformed."""
    frame = bytes(frame)
    if len(frame) < HEADER_BYTES + CRC_BYTES:
        raise FrameError(f"a frame has at least {HEADER_BYTES + CRC_BYTES} bytes, not {len(frame)}")
    if frame[0] != sync:
        raise FrameError(f"frame starts with 0x{frame[0]:02x}, not SYNC 0x{sync:02x}")
    code, length = struct.unpack_from("<BH", frame, 1)
    if len(frame) != HEADER_BYTES + length + CRC_BYTES:
        raise FrameError(f"frame of {len(frame)} bytes, its length field says {HEADER_BYTES + length + CRC_BYTES}")
    (crc,) = struct.unpack_from("<H", frame, len(frame) - CRC_BYTES)
    if crc != crc16(frame[1:-CRC_BYTES]):
        raise FrameError(f"bad CRC 0x{crc:04x} (computed 0x{crc16(frame[1:-CRC_BYTES]):04x})")
    return code, frame[HEADER_BYTES:-CRC_BYTES]


def encode_request(command: int, payload: bytes = b"") -> bytes:
    """A request frame (SYNC 0xA5)."""
    return encode_frame(SYNC_REQUEST, command, payload)


def decode_response(frame: bytes) -> tuple[int, bytes]:
    """``(status, payload)`` of a complete response frame (SYNC 0x5A); FrameError if it is malformed."""
    return decode_frame(frame, SYNC_RESPONSE)


def _check_addr(addr: int, count: int) -> int:
    if isinstance(addr, bool) or not isinstance(addr, (int, np.integer)):
        raise TypeError(f"an address must be an integer, not {addr!r}")
    addr = int(addr)
    if addr < 0 or addr + count > 1 << (8 * ADDR_BYTES):
        raise ValueError(f"addresses {addr}..{addr + count - 1} do not fit {8 * ADDR_BYTES} bits")
    return addr


def _words(words) -> np.ndarray:
    """32-bit words (negative integers as two's complement) as uint32."""
    arr = np.asarray(words if isinstance(words, np.ndarray) else list(words))
    if arr.size == 0:
        return np.zeros(0, dtype=np.uint32)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"words must be a 1-D sequence of integers, not {words!r}")
    arr = arr.astype(np.int64)
    if arr.min() < -(1 << 31) or arr.max() > 0xFFFFFFFF:
        raise ValueError("a word must fit 32 bits (signed or unsigned)")
    return (arr & 0xFFFFFFFF).astype(np.uint32)


def write_request(addr: int, words) -> bytes:
    """A WRITE frame: ``words`` to ``addr``, ``addr + 1``, ..."""
    data = _words(words)
    addr = _check_addr(addr, len(data))
    return encode_request(CMD_WRITE, addr.to_bytes(ADDR_BYTES, "little") + data.astype("<u4").tobytes())


def read_request(addr: int, count: int) -> bytes:
    """A READ frame: ``count`` words from ``addr``, ``addr + 1``, ..."""
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not 0 <= count <= MAX_READ_WORDS:
        raise ValueError(f"a READ asks for 0..{MAX_READ_WORDS} words, not {count!r}")
    addr = _check_addr(addr, int(count))
    return encode_request(CMD_READ, addr.to_bytes(ADDR_BYTES, "little") + struct.pack("<H", count))


class Transport(Protocol):
    """What :class:`Link` needs: pyserial's ``read``/``write``/``timeout``."""

    timeout: float | None

    def read(self, size: int) -> bytes: ...

    def write(self, data: bytes) -> int | None: ...


class SerialPort:
    """A tty (``/dev/ttyUSB0``) or pty opened raw (8N1, no flow control, no echo) with termios.

    Parameters
    ----------
    path : str
        The device.
    baud : int, optional
        Bit rate (a standard termios rate such as 115200 or 3000000); left alone if None (a pty).
    timeout : float
        Seconds a ``read`` waits for its bytes (None: forever).
    """

    def __init__(self, path: str, baud: int | None = None, timeout: float | None = 1.0):
        speed = None
        if baud is not None:
            speed = getattr(termios, f"B{baud}", None)
            if speed is None:
                raise ValueError(f"baud must be a rate termios knows (e.g. 115200, 3000000), not {baud!r}")
        self.timeout = timeout
        self._fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            if not os.isatty(self._fd):
                raise OSError(errno.ENOTTY, "not a serial port or terminal")
            iflag, oflag, cflag, lflag, ispeed, ospeed, cc = termios.tcgetattr(self._fd)
            iflag &= ~(termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP | termios.INLCR
                       | termios.IGNCR | termios.ICRNL | termios.IXON | termios.IXOFF | termios.IXANY
                       | termios.INPCK)
            oflag &= ~termios.OPOST
            lflag &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
            cflag &= ~(termios.CSIZE | termios.PARENB | termios.CSTOPB | termios.CRTSCTS)
            cflag |= termios.CS8 | termios.CLOCAL | termios.CREAD
            cc[termios.VMIN], cc[termios.VTIME] = 0, 0
            if speed is not None:
                ispeed = ospeed = speed
            termios.tcsetattr(self._fd, termios.TCSANOW, [iflag, oflag, cflag, lflag, ispeed, ospeed, cc])
            termios.tcflush(self._fd, termios.TCIOFLUSH)
        except termios.error as exc:
            os.close(self._fd)
            raise OSError(exc.args[0], f"not a serial port ({exc.args[-1]})") from None
        except BaseException:
            os.close(self._fd)
            raise

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes: returns when all arrived or ``timeout`` seconds passed. LinkError if the port
        fails (a board unplugged, a simulated board stopped)."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        data = bytearray()
        while len(data) < size:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self._fd], [], [], wait)[0]:
                break
            try:
                chunk = os.read(self._fd, size - len(data))
            except BlockingIOError:
                continue
            except OSError as exc:
                raise LinkError(f"the port failed: {exc.strerror or exc}") from None
            if not chunk:                   # readable, yet nothing: the other end hung up
                raise LinkError("the port failed: the other end hung up")
            data += chunk
        return bytes(data)

    def write(self, data: bytes) -> int:
        """All of ``data``; LinkTimeout if the port takes no byte for ``timeout`` seconds (a device that
        does not read), LinkError if it fails."""
        view = memoryview(bytes(data))
        while view:
            if not select.select([], [self._fd], [], self.timeout)[1]:
                raise LinkTimeout(f"the port took no byte for {self.timeout} s ({len(view)} of {len(data)} left)")
            try:
                view = view[os.write(self._fd, view):]
            except BlockingIOError:
                continue
            except OSError as exc:
                raise LinkError(f"the port failed: {exc.strerror or exc}") from None
        return len(data)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "SerialPort":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PySerialPort:
    """A serial port opened through pyserial (8N1, no flow control), with :class:`SerialPort`'s behaviour: ``read``
    returns what came within ``timeout``, ``write`` raises LinkTimeout when the port takes no byte for ``timeout``
    seconds, and a failing port (a board unplugged) raises LinkError.

    Parameters
    ----------
    path : str
        The device (``/dev/ttyUSB0``, ``/dev/cu.usbserial-...``, ``COM3``).
    baud : int
        Bit rate: any the adapter takes (an FTDI chip: up to 3 Mbaud, 12 on an FT2232H).
    timeout : float
        Seconds a ``read`` waits for its bytes (None: forever).
    """

    def __init__(self, path: str, baud: int = 115200, timeout: float | None = 1.0):
        import serial                               # pyserial (a dependency); deferred: only real ports need it

        self._error = serial.SerialException
        self._write_timeout = serial.SerialTimeoutException
        self.timeout = timeout
        self._applied = timeout
        # pyserial raises ValueError for a rate or a setting it refuses, SerialException (an OSError) when the
        # device cannot be opened: what SerialPort raises
        try:
            self._serial = serial.Serial(path, baudrate=baud, bytesize=serial.EIGHTBITS, parity=serial.PARITY_NONE,
                                         stopbits=serial.STOPBITS_ONE, timeout=timeout, write_timeout=timeout,
                                         xonxoff=False, rtscts=False, dsrdtr=False)
        except serial.SerialException as exc:
            if "configure port" in str(exc):         # opened, but termios refuses it: a file, /dev/null, ...
                raise OSError(errno.ENOTTY, "not a serial port or terminal") from None
            raise OSError(exc.errno, os.strerror(exc.errno) if exc.errno else str(exc)) from None
        try:
            self._serial.reset_input_buffer()
        except self._error as exc:
            self._serial.close()
            raise OSError(f"not a serial port ({exc})") from None

    def _apply(self) -> None:
        if self._applied != self.timeout:          # pyserial reconfigures the port on each change
            self._serial.timeout = self._serial.write_timeout = self.timeout
            self._applied = self.timeout

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes: returns when all arrived or ``timeout`` seconds passed."""
        try:
            self._apply()
            return bytes(self._serial.read(size))
        except self._error as exc:
            raise LinkError(f"the port failed: {exc}") from None

    def write(self, data: bytes) -> int:
        """All of ``data``."""
        try:
            self._apply()
            self._serial.write(bytes(data))
            self._serial.flush()
        except self._write_timeout:
            raise LinkTimeout(f"the port took no byte for {self.timeout} s") from None
        except self._error as exc:
            raise LinkError(f"the port failed: {exc}") from None
        return len(data)

    def close(self) -> None:
        self._serial.close()

    def __enter__(self) -> "PySerialPort":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _is_pty(path: str) -> bool:
    """A pseudo-terminal's slave end (the simulated board's): Linux's ``/dev/pts/N``, macOS's ``/dev/ttysNNN``."""
    real = os.path.realpath(path)
    return real.startswith("/dev/pts/") or re.fullmatch(r"/dev/ttys\d+", real) is not None


def open_port(path: str, baud: int | None = None, timeout: float | None = 1.0):
    """The transport for ``path``: a pseudo-terminal (the simulated board's, :mod:`sim.uart_sim`) through
    :class:`SerialPort` (termios; a rate is meaningless there), anything else through pyserial
    (:class:`PySerialPort`). OSError if it cannot be opened, ValueError for a rate it does not take."""
    if _is_pty(path):
        return SerialPort(path, None, timeout=timeout)
    return PySerialPort(path, 115200 if baud is None else baud, timeout=timeout)


#: The USB serial bridges of the supported boards, by (vendor id, product id): ``--port auto`` looks for them.
BOARD_USB_IDS = {
    (0x0403, 0x6015): "FTDI FT231X (ULX3S)",
    (0x0403, 0x6010): "FTDI FT2232H (ECPIX-5)",
}


def _describe(port) -> str:
    ids = f"{port.vid:04x}:{port.pid:04x}" if port.vid is not None and port.pid is not None else "no USB id"
    what = BOARD_USB_IDS.get((port.vid, port.pid)) or port.description or ""
    return f"{port.device} ({ids}{', ' + what if what and what != 'n/a' else ''})"


def find_board_port(ports=None) -> str:
    """``--port auto``: the serial port of the one board plugged in, recognised by its USB bridge's vendor and
    product id (:data:`BOARD_USB_IDS`; on an FT2232H, whose first interface is the JTAG, its second). ``ports``:
    pyserial's ``serial.tools.list_ports.comports()`` (the default). LookupError, naming the candidates, when
    there is none or more than one."""
    if ports is None:
        from serial.tools import list_ports
        ports = list_ports.comports()
    ports = sorted(ports, key=lambda p: p.device)
    found = []
    for port in ports:
        if (port.vid, port.pid) not in BOARD_USB_IDS:
            continue
        interface = (port.location or "").rpartition(".")[2] if ":" in (port.location or "") else None
        if (port.vid, port.pid) == (0x0403, 0x6010) and interface not in (None, "1"):
            continue                                # the FT2232H's JTAG interface, not its UART
        found.append(port)
    if len(found) == 1:
        return found[0].device
    if not found:
        others = ", ".join(_describe(p) for p in ports) or "none"
        known = ", ".join(f"{v:04x}:{p:04x} {what}" for (v, p), what in BOARD_USB_IDS.items())
        raise LookupError(f"--port auto: no board's USB serial port is plugged in (looked for {known}; serial "
                          f"ports here: {others}); give --port PATH")
    raise LookupError(f"--port auto: {len(found)} boards' serial ports are plugged in "
                      f"({', '.join(_describe(p) for p in found)}); give --port with one of them")


@dataclass(frozen=True)
class DeviceInfo:
    """What PING answers."""
    version: int          # protocol version
    addr_width: int       # host-bus address bits
    max_burst: int        # words one WRITE may carry


class Link:
    """Requests and answers over a transport, with retries.

    Every request waits for its answer. A bad answer (CRC, truncated, timeout) or a NAK for a bad CRC or an
    inter-byte timeout is retried ``retries`` times, after draining what is still arriving (so that the
    next answer starts in sync); other NAKs (a bug in the request) are raised at once. Retrying a WRITE
    writes the same words again: harmless for memories, and the control register ignores a start while busy.

    Parameters
    ----------
    transport : Transport
        The byte stream (see the module's description).
    timeout : float
        Seconds without any byte of the answer before it is abandoned.
    deadline : float, optional
        Seconds for a whole answer, however its bytes trickle in (default: 4 x ``timeout``, at least 1 s; the
        largest READ takes 0.2 s at 3 Mbaud, 6 s at 115,200 baud); with the retries, no request waits longer
        than ``(retries + 1) x (deadline + the drain's)``.
    retries : int
        Extra attempts per request.
    read_chunk : int
        Words per READ request (a long read is split, so that a retry repeats little).
    drain_quiet : float
        Before a retry, bytes are dropped until none has come for this many seconds (for at most ``deadline``
        seconds: a device that never stops sending fails the request).
    """

    def __init__(self, transport: Transport, *, timeout: float = 1.0, deadline: float | None = None,
                 retries: int = 1, read_chunk: int = 1024, drain_quiet: float = 0.05):
        if not 1 <= read_chunk <= MAX_READ_WORDS:
            raise ValueError(f"read_chunk must be in 1..{MAX_READ_WORDS}, not {read_chunk!r}")
        self.transport = transport
        self.timeout = timeout
        self.deadline = max(4 * timeout, 1.0) if deadline is None else deadline
        self.retries = retries
        self._ends = float("inf")             # when the answer being read must be complete
        self.read_chunk = read_chunk
        self.drain_quiet = drain_quiet
        self._info: DeviceInfo | None = None

    def _read_exact(self, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            left = self._ends - time.monotonic()
            if left <= 0:
                raise LinkTimeout(f"the answer did not complete within {self.deadline:g} s ({len(data)} of "
                                  f"{size} bytes came)")
            self.transport.timeout = min(self.timeout, left)
            chunk = self.transport.read(size - len(data))
            if not chunk:
                raise LinkTimeout(f"no answer for {self.timeout} s ({len(data)} of {size} bytes came)")
            data += chunk
        return bytes(data)

    def _read_response(self) -> tuple[int, bytes]:
        skipped = 0
        while self._read_exact(1)[0] != SYNC_RESPONSE:
            skipped += 1
            if skipped > MAX_PAYLOAD:
                raise FrameError(f"no SYNC byte in {skipped} bytes")
        header = self._read_exact(HEADER_BYTES - 1)
        (length,) = struct.unpack_from("<H", header, 1)
        rest = self._read_exact(length + CRC_BYTES)
        return decode_response(bytes([SYNC_RESPONSE]) + header + rest)

    def drain(self) -> bytes:
        """Drop (and return) what arrives until the line is quiet for ``drain_quiet`` seconds; LinkError if it
        is not quiet within ``deadline`` seconds."""
        saved, self.transport.timeout = self.transport.timeout, self.drain_quiet
        ends = time.monotonic() + self.deadline
        dropped = bytearray()
        try:
            while chunk := self.transport.read(4096):
                dropped += chunk
                if time.monotonic() > ends:
                    raise LinkError(f"the device never stops sending ({len(dropped):,} bytes in "
                                    f"{self.deadline:g} s)")
        finally:
            self.transport.timeout = saved
        return bytes(dropped)

    def discard_stale(self) -> bytes:
        """Drop (and return) bytes that arrived after the last answer (a late or a duplicated answer), for at
        most ``drain_quiet`` seconds, so that they are never taken for the next request's answer."""
        saved, self.transport.timeout = self.transport.timeout, 0
        ends = time.monotonic() + self.drain_quiet
        dropped = bytearray()
        try:
            while time.monotonic() < ends and (chunk := self.transport.read(4096)):
                dropped += chunk
        finally:
            self.transport.timeout = saved
        return bytes(dropped)

    def request(self, frame: bytes) -> bytes:
        """Send a request frame; return its answer's payload (the status must echo the command)."""
        command = frame[1]
        attempt = 0
        self.discard_stale()
        while True:
            try:
                self.transport.timeout = self.timeout
                self.transport.write(frame)
                self._ends = time.monotonic() + self.deadline
                status, payload = self._read_response()
                if status == RESP_NAK:
                    if len(payload) != 2:
                        raise FrameError(f"a NAK carries 2 bytes, not {len(payload)}")
                    raise NakError(payload[0], payload[1])
                if status != command:
                    raise FrameError(f"answer 0x{status:02x} to command 0x{command:02x}")
                return payload
            except (FrameError, LinkTimeout, NakError) as exc:
                retry = not isinstance(exc, NakError) or exc.code in (ERR_CRC, ERR_TIMEOUT)
                if not retry or attempt >= self.retries:
                    raise
                attempt += 1
                self.drain()

    def ping(self) -> DeviceInfo:
        """Ask the bridge what it is; LinkError if it speaks another protocol version."""
        payload = self.request(encode_request(CMD_PING))
        if len(payload) != 4:
            raise FrameError(f"a PING answer carries 4 bytes, not {len(payload)}")
        version, addr_width, max_burst = struct.unpack("<BBH", payload)
        if version != PROTOCOL_VERSION:
            raise LinkError(f"the device speaks protocol version {version}, this host {PROTOCOL_VERSION}")
        if not 1 <= addr_width <= 8 * ADDR_BYTES or max_burst < 1:
            raise LinkError(f"the device's PING answer is not a bridge's: {addr_width}-bit addresses, bursts of "
                            f"{max_burst} words")
        self._info = DeviceInfo(version, addr_width, max_burst)
        return self._info

    @property
    def info(self) -> DeviceInfo:
        """The PING answer (asked once)."""
        return self._info or self.ping()

    def write_words(self, addr: int, words) -> None:
        """Write ``words`` to ``addr``, ``addr + 1``, ... in bursts of at most the device's ``max_burst``."""
        data = _words(words)
        addr = _check_addr(addr, len(data))
        burst = self.info.max_burst
        for start in range(0, len(data), burst):
            payload = self.request(write_request(addr + start, data[start:start + burst]))
            if payload:
                raise FrameError(f"a WRITE answer carries no payload, not {len(payload)} bytes")

    def read_words(self, addr: int, count: int) -> np.ndarray:
        """``count`` words (uint32) from ``addr``, ``addr + 1``, ..."""
        addr = _check_addr(addr, count)
        parts = []
        for start in range(0, count, self.read_chunk):
            n = min(self.read_chunk, count - start)
            payload = self.request(read_request(addr + start, n))
            if len(payload) != 4 * n:
                raise FrameError(f"a READ of {n} words answered {len(payload)} bytes")
            parts.append(np.frombuffer(payload, dtype="<u4"))
        return np.concatenate(parts).astype(np.uint32) if parts else np.zeros(0, dtype=np.uint32)
