"""The host side of the link (compiler/host/link.py): frames, the Link's chunking and retries, and
SerialPort on a pty. The transport here is a Python stand-in for the bridge; tests/test_uart_sim.py runs
the same code against the Verilated gateware."""

import os
import struct
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.host import link as lk
from hdl import uart_bridge as ub


def test_crc16_check_value():
    assert lk.crc16(b"123456789") == 0x29B1          # the catalogue's check value for CRC-16/CCITT-FALSE
    assert lk.crc16(b"") == 0xFFFF
    assert lk.crc16(b"56789", lk.crc16(b"1234")) == 0x29B1


def test_request_layout():
    frame = lk.write_request(0x123456, [0xDEADBEEF, -1])
    body = bytes([ub.CMD_WRITE, 11, 0, 0x56, 0x34, 0x12, 0xEF, 0xBE, 0xAD, 0xDE, 0xFF, 0xFF, 0xFF, 0xFF])
    assert frame == bytes([0xA5]) + body + struct.pack("<H", lk.crc16(body))
    body = bytes([ub.CMD_READ, 5, 0, 0x02, 0x00, 0x20, 0x10, 0x00])
    assert lk.read_request((2 << 20) | 2, 16) == bytes([0xA5]) + body + struct.pack(
        "<H", lk.crc16(body))
    assert lk.encode_request(ub.CMD_PING) == bytes([0xA5, 1, 0, 0]) + struct.pack("<H", lk.crc16(b"\x01\x00\x00"))


@pytest.mark.parametrize("call, error", [
    (lambda: lk.write_request(0, [1 << 32]), ValueError),
    (lambda: lk.write_request(0, [-(1 << 31) - 1]), ValueError),
    (lambda: lk.write_request((1 << 24) - 1, [1, 2]), ValueError),
    (lambda: lk.write_request(-1, [1]), ValueError),
    (lambda: lk.write_request(0, [1.5]), TypeError),
    (lambda: lk.read_request(0, ub.MAX_READ_WORDS + 1), ValueError),
    (lambda: lk.encode_request(256), ValueError),
    (lambda: lk.encode_request(1, bytes(0x10000)), ValueError),
])
def test_bad_requests_are_refused(call, error):
    with pytest.raises(error):
        call()


@settings(max_examples=200, deadline=None)
@given(code=st.integers(0, 255), payload=st.binary(max_size=600))
def test_frames_round_trip(code, payload):
    assert lk.decode_frame(lk.encode_request(code, payload), ub.SYNC_REQUEST) == (code, payload)
    assert lk.decode_response(lk.encode_frame(ub.SYNC_RESPONSE, code, payload)) == (code, payload)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), code=st.integers(0, 255), payload=st.binary(max_size=300))
def test_any_corrupted_byte_is_detected(data, code, payload):
    frame = bytearray(lk.encode_frame(ub.SYNC_RESPONSE, code, payload))
    position = data.draw(st.integers(0, len(frame) - 1))
    frame[position] ^= data.draw(st.integers(1, 255))
    with pytest.raises(lk.FrameError):
        lk.decode_response(bytes(frame))


@given(payload=st.binary(max_size=40), cut=st.integers(1, 8))
def test_truncated_or_padded_frames_are_detected(payload, cut):
    frame = lk.encode_frame(ub.SYNC_RESPONSE, ub.CMD_READ, payload)
    with pytest.raises(lk.FrameError):
        lk.decode_response(frame[:-cut])
    with pytest.raises(lk.FrameError):
        lk.decode_response(frame + bytes(cut))
    with pytest.raises(lk.FrameError, match="SYNC"):
        lk.decode_response(lk.encode_request(ub.CMD_READ, payload))


class FakeBoard:
    """A transport that answers like the bridge from a dict of words, with a queue of faults to inject.

    Faults, one per request: "corrupt" (a flipped payload byte, then stray bytes that a retry must drain),
    "truncate" (half an answer), "drop" (no answer), ("nak", code), ("garbage", bytes before the answer)."""

    def __init__(self, max_burst: int = 4):
        self.timeout = 1.0
        self.max_burst = max_burst
        self.words: dict[int, int] = {}
        self.requests: list[tuple[int, bytes]] = []
        self.faults: list = []
        self.out = bytearray()

    def read_word(self, addr: int) -> int:
        return self.words.get(addr, 0)

    def write_word(self, addr: int, value: int) -> None:
        self.words[addr] = value

    def answer(self, cmd: int, payload: bytes) -> tuple[int, bytes]:
        if cmd == ub.CMD_PING:
            return cmd, struct.pack("<BBH", ub.PROTOCOL_VERSION, 24, self.max_burst)
        addr = int.from_bytes(payload[:3], "little")
        if cmd == ub.CMD_WRITE:
            words = np.frombuffer(payload[3:], dtype="<u4")
            if len(words) > self.max_burst:
                return ub.RESP_NAK, bytes([ub.ERR_LENGTH, cmd])
            for i, w in enumerate(words):
                self.write_word(addr + i, int(w))
            return cmd, b""
        if cmd == ub.CMD_READ:
            count = int.from_bytes(payload[3:5], "little")
            return cmd, b"".join(self.read_word(addr + i).to_bytes(4, "little") for i in range(count))
        return ub.RESP_NAK, bytes([ub.ERR_COMMAND, cmd])

    def write(self, data: bytes) -> int:
        cmd, payload = lk.decode_frame(data, ub.SYNC_REQUEST)
        self.requests.append((cmd, payload))
        fault = self.faults.pop(0) if self.faults else None
        if isinstance(fault, tuple) and fault[0] == "nak":
            status, answer = ub.RESP_NAK, bytes([fault[1], cmd])
        else:
            status, answer = self.answer(cmd, payload)
        frame = bytearray(lk.encode_frame(ub.SYNC_RESPONSE, status, answer))
        if fault == "corrupt":
            frame[-3] ^= 0x10
            frame += b"\x5a\x02"
        elif fault == "truncate":
            frame = frame[:len(frame) // 2]
        elif fault == "drop":
            frame = b""
        elif isinstance(fault, tuple) and fault[0] == "garbage":
            frame = fault[1] + frame
        self.out += frame
        return len(data)

    def read(self, size: int) -> bytes:
        chunk = bytes(self.out[:size])
        del self.out[:size]
        return chunk


def test_link_chunks_writes_and_reads():
    board = FakeBoard(max_burst=4)
    link = lk.Link(board, read_chunk=3)
    assert link.ping() == lk.DeviceInfo(ub.PROTOCOL_VERSION, 24, 4)
    words = np.arange(10, dtype=np.uint32) * 0x01010101 + 0x80000000
    link.write_words(0x100, words)
    assert [len(p) for c, p in board.requests if c == ub.CMD_WRITE] == [3 + 16, 3 + 16, 3 + 8]
    assert board.words == {0x100 + i: int(w) for i, w in enumerate(words)}
    got = link.read_words(0x0FF, 11)
    assert got.dtype == np.uint32 and got.tolist() == [0] + words.tolist()
    assert [p for c, p in board.requests if c == ub.CMD_READ] == [
        bytes([0xFF, 0, 0, 3, 0]), bytes([2, 1, 0, 3, 0]), bytes([5, 1, 0, 3, 0]), bytes([8, 1, 0, 2, 0])]
    assert link.read_words(5, 0).tolist() == []


@pytest.mark.parametrize("fault", ["corrupt", "truncate", "drop", ("nak", ub.ERR_CRC), ("nak", ub.ERR_TIMEOUT)])
def test_link_retries_once_after_draining(fault):
    board = FakeBoard()
    board.words[7] = 0x1234
    link = lk.Link(board)
    link.ping()
    board.faults = [fault]
    assert link.read_words(7, 1).tolist() == [0x1234]
    assert [c for c, _ in board.requests] == [ub.CMD_PING, ub.CMD_READ, ub.CMD_READ]
    assert not board.out

    board.faults = [fault, fault]
    expected = lk.NakError if isinstance(fault, tuple) else (lk.FrameError, lk.LinkTimeout)
    with pytest.raises(expected):
        link.read_words(7, 1)


def test_link_does_not_retry_a_request_the_device_refuses():
    board = FakeBoard()
    link = lk.Link(board)
    board.faults = [("nak", ub.ERR_LENGTH)]
    with pytest.raises(lk.NakError, match="bad length") as info:
        link.ping()
    assert info.value.code == ub.ERR_LENGTH and info.value.command == ub.CMD_PING
    assert len(board.requests) == 1
    with pytest.raises(lk.NakError, match="unknown command"):
        link.request(lk.encode_request(0x77))


def test_link_skips_bytes_before_the_answer_and_checks_the_status():
    board = FakeBoard()
    link = lk.Link(board)
    board.faults = [("garbage", b"\x00\xff\x13")]
    assert link.ping().max_burst == 4
    board.answer = lambda cmd, payload: (ub.CMD_WRITE, b"")
    with pytest.raises(lk.FrameError, match="answer 0x02 to command 0x03"):
        link.read_words(0, 1)


def test_serial_port_on_a_pty_is_raw_and_times_out():
    master, slave = os.openpty()
    try:
        port = lk.SerialPort(os.ttyname(slave), timeout=0.1)
        data = bytes(range(256)) * 8                  # CR, ^C, XON/XOFF, ... must pass unchanged
        os.write(master, data)
        assert port.read(len(data)) == data
        port.write(b"\x03\r\n\x11")
        assert os.read(master, 16) == b"\x03\r\n\x11"
        t0 = time.monotonic()
        assert port.read(4) == b""
        assert 0.09 < time.monotonic() - t0 < 0.5
        port.close()
    finally:
        os.close(master)
        os.close(slave)
    with pytest.raises(ValueError, match="baud"):
        lk.SerialPort("/dev/null", baud=12345)


# ---------------------------------------------------------------- a hostile board never hangs the host

class HostileBoard:
    """A transport whose answers are hostile: ``flood`` (bytes without end, never a frame), ``drip`` (one
    byte of a valid answer per read, each just inside the timeout), ``hangup`` (the port fails)."""

    def __init__(self, kind: str, answer: bytes = b""):
        self.kind, self.answer, self.timeout, self.sent = kind, answer, 1.0, 0

    def write(self, data: bytes) -> int:
        if self.kind == "hangup":
            raise lk.LinkError("the port failed: Input/output error")
        return len(data)

    def read(self, size: int) -> bytes:
        if self.kind == "flood":
            return b"\x00" * size
        time.sleep(min(self.timeout, 0.05) * 0.9)           # never quite times out
        if not self.answer:
            return b""
        self.sent += 1
        return self.answer[self.sent % len(self.answer): self.sent % len(self.answer) + 1]


@pytest.mark.parametrize("kind", ["flood", "drip"])
def test_a_board_that_floods_or_drips_fails_the_request_in_bounded_time(kind):
    good = lk.encode_frame(ub.SYNC_RESPONSE, ub.CMD_PING, struct.pack("<BBH", ub.PROTOCOL_VERSION, 24, 4))
    link = lk.Link(HostileBoard(kind, good * 1000), timeout=0.05, deadline=0.3, retries=2)
    t0 = time.monotonic()
    with pytest.raises(lk.LinkError):
        link.ping()
    assert time.monotonic() - t0 < 3 * (0.3 + 0.3) + 1          # (retries + 1) x (deadline + drain), and slack


def test_a_board_that_hangs_up_is_a_link_error():
    with pytest.raises(lk.LinkError, match="the port failed"):
        lk.Link(HostileBoard("hangup")).ping()


@pytest.mark.parametrize("addr_width, max_burst", [(24, 0), (0, 4), (25, 4)])
def test_a_ping_answer_that_no_bridge_gives_is_refused(addr_width, max_burst):
    board = FakeBoard()
    board.answer = lambda cmd, payload: (cmd, struct.pack("<BBH", ub.PROTOCOL_VERSION, addr_width, max_burst))
    with pytest.raises(lk.LinkError, match="not a bridge's"):
        lk.Link(board).ping()


def test_serial_port_refuses_what_is_not_a_terminal(tmp_path):
    plain = tmp_path / "file"
    plain.write_bytes(b"")
    for path in ("/dev/null", str(plain)):
        with pytest.raises(OSError, match="not a serial port"):
            lk.SerialPort(path)


def test_serial_port_whose_other_end_closes_is_a_link_error():
    master, slave = os.openpty()
    port = lk.SerialPort(os.ttyname(slave), timeout=0.5)
    os.close(slave)
    os.close(master)                                          # the board goes away
    with pytest.raises(lk.LinkError, match="the port failed"):
        port.read(4)
    port.close()


class DuplicatingBoard(FakeBoard):
    """Answers every request twice (or, with ``late``, answers each READ once more after the next request
    came: a late answer to a request the host already has)."""

    def write(self, data: bytes) -> int:
        before = len(self.out)
        n = super().write(data)
        self.out += self.out[before:]                         # the same answer again
        return n


def test_a_duplicated_answer_is_never_taken_for_the_next_one():
    board = DuplicatingBoard()
    for a in range(8):
        board.words[0x40 + a] = 1000 + a
    link = lk.Link(board)
    assert [int(link.read_words(0x40 + a, 1)[0]) for a in range(8)] == [1000 + a for a in range(8)]


# ---------------------------------------------------------------- pyserial for real ports, --port auto

def test_pyserial_port_is_raw_times_out_and_fails_as_a_link_error():
    master, slave = os.openpty()
    try:
        port = lk.PySerialPort(os.ttyname(slave), 3_000_000, timeout=0.1)
        data = bytes(range(256)) * 8                  # CR, ^C, XON/XOFF, ... must pass unchanged
        os.write(master, data)
        assert port.read(len(data)) == data
        assert port.write(b"\x03\r\n\x11") == 4
        assert os.read(master, 16) == b"\x03\r\n\x11"
        port.timeout = 0.2                             # as Link sets it, request by request
        t0 = time.monotonic()
        assert port.read(4) == b""
        assert 0.19 < time.monotonic() - t0 < 0.6
        os.close(master)
        master = None                                  # the board goes away
        with pytest.raises(lk.LinkError, match="the port failed"):
            port.read(4)
        port.close()
    finally:
        if master is not None:
            os.close(master)
        os.close(slave)


def test_a_link_runs_over_pyserial():
    """PING through pyserial to a bridge answered by hand on the pty's other end."""
    master, slave = os.openpty()
    try:
        answer = lk.encode_frame(ub.SYNC_RESPONSE, ub.CMD_PING, struct.pack("<BBH", ub.PROTOCOL_VERSION, 24, 4))
        port = lk.PySerialPort(os.ttyname(slave), 115200, timeout=0.5)
        link = lk.Link(port, timeout=0.5)
        request = lk.encode_request(ub.CMD_PING)
        received = []

        def bridge():                                   # the device: reads the request, then answers
            data = b""
            while len(data) < len(request):
                data += os.read(master, 64)
            received.append(data)
            os.write(master, answer)

        thread = threading.Thread(target=bridge, daemon=True)
        thread.start()
        assert link.ping() == lk.DeviceInfo(ub.PROTOCOL_VERSION, 24, 4)
        thread.join(5)
        assert received == [request]
        port.close()
    finally:
        os.close(master)
        os.close(slave)


def test_open_port_takes_termios_for_a_pty_and_pyserial_for_the_rest(tmp_path):
    master, slave = os.openpty()
    try:
        pty = lk.open_port(os.ttyname(slave), 3_000_000, timeout=0.1)
        assert isinstance(pty, lk.SerialPort)
        pty.close()
    finally:
        os.close(master)
        os.close(slave)
    with pytest.raises(OSError):
        lk.open_port(str(tmp_path / "ttyUSB9"), 3_000_000)      # no such device: pyserial's OSError
    with pytest.raises(OSError):
        lk.open_port(str(tmp_path), 3_000_000)                   # not a serial port


class _Port:
    def __init__(self, device, vid=None, pid=None, location=None, description="n/a"):
        self.device, self.vid, self.pid, self.location, self.description = device, vid, pid, location, description


def test_port_auto_finds_the_one_board():
    ulx3s = _Port("/dev/ttyUSB0", 0x0403, 0x6015, "1-2:1.0", "FT231X USB UART")
    other = _Port("/dev/ttyACM0", 0x2341, 0x0043, "1-3:1.0", "Arduino Uno")
    serial0 = _Port("/dev/ttyS0")
    assert lk.find_board_port([other, ulx3s, serial0]) == "/dev/ttyUSB0"
    jtag = _Port("/dev/ttyUSB1", 0x0403, 0x6010, "1-4:1.0", "FT2232H")          # the ECPIX-5's JTAG interface
    uart = _Port("/dev/ttyUSB2", 0x0403, 0x6010, "1-4:1.1", "FT2232H")          # and its UART
    assert lk.find_board_port([jtag, uart, serial0]) == "/dev/ttyUSB2"


def test_port_auto_names_the_candidates_when_there_are_none_or_several():
    serial0 = _Port("/dev/ttyS0")
    with pytest.raises(LookupError, match=r"no board's USB serial port .*ports here: /dev/ttyS0 \(no USB id\)"):
        lk.find_board_port([serial0])
    with pytest.raises(LookupError, match="ports here: none"):
        lk.find_board_port([])
    two = [_Port("/dev/ttyUSB0", 0x0403, 0x6015), _Port("/dev/ttyUSB1", 0x0403, 0x6015)]
    with pytest.raises(LookupError, match=r"2 boards' serial ports .*/dev/ttyUSB0 \(0403:6015, FTDI FT231X "
                                          r"\(ULX3S\)\), /dev/ttyUSB1"):
        lk.find_board_port(two)
