# amaranth: UnusedElaboratable=no
"""The UART (hdl/uart.py) and the UART bridge (hdl/uart_bridge.py) in the Amaranth simulator: bytes on the
line bit by bit, framing errors, false starts, rate tolerance, and framed requests on a small bus device."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from compiler.host.link import crc16, decode_response, encode_request, read_request, write_request
from hdl import uart_bridge as ub
from hdl.hostbus import HostBusSignature
from hdl.uart import Uart, UartRx, UartTx, divisor
from sim.streams import recv, send
from sim.uart_sim import UartBoard

DIV = 8                         # the UART tests: 8 cycles per bit
CLK, BAUD = 8e6, 1e6


def line_bits(byte: int, stop: int = 1) -> list[int]:
    return [0] + [(byte >> i) & 1 for i in range(8)] + [stop]


async def drive_line(ctx, pin, data: bytes, bit_cycles: int, *, stop: int = 1) -> None:
    """Send ``data`` on ``pin`` as 8N1 frames of ``bit_cycles`` cycles per bit, back to back."""
    for byte in data:
        for bit in line_bits(byte, stop):
            ctx.set(pin, bit)
            await ctx.tick().repeat(bit_cycles)
    ctx.set(pin, 1)


class LineDecoder:
    """Decodes 8N1 frames from a line sampled once per cycle (mid-bit); a bad stop bit fails the test."""

    def __init__(self, bit_cycles: int):
        self.bit_cycles = bit_cycles
        self.data = bytearray()
        self.starts: list[int] = []           # cycle of each frame's falling edge
        self.cycle = 0                        # cycles seen
        self._sample_at = None                # cycle of the next sample, None while idle
        self._bits: list[int] = []

    def step(self, value: int) -> None:
        self.cycle += 1
        if self._sample_at is None:
            if not value:
                self.starts.append(self.cycle)
                self._sample_at = self.cycle + self.bit_cycles // 2
                self._bits = []
        elif self.cycle == self._sample_at:
            self._bits.append(value)
            self._sample_at += self.bit_cycles
            if len(self._bits) == 10:
                assert self._bits[0] == 0 and self._bits[9] == 1, f"bad frame {self._bits}"
                self.data.append(sum(b << i for i, b in enumerate(self._bits[1:9])))
                self._sample_at = None


def test_divisor_rounds_and_checks_the_rate():
    assert divisor(50e6, 3e6) == 17                 # 16.67 -> 17 (2% off)
    assert divisor(100e6, 3e6) == 33
    assert divisor(25e6, 115200) == 217
    assert divisor(12e6, 3e6) == 4
    with pytest.raises(ValueError, match="too fast"):
        divisor(10e6, 3e6)
    with pytest.raises(ValueError, match="off by"):
        divisor(25e6, 3e6)                          # 8 cycles: 4% off
    with pytest.raises(ValueError, match="positive"):
        divisor(0, 9600)


class _Loopback(wiring.Component):
    tx: In(stream.Signature(unsigned(8)))
    rx: Out(stream.Signature(unsigned(8)))
    framing_error: Out(1)

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart = uart = Uart(CLK, BAUD)
        m.d.comb += [uart.rx_pin.eq(uart.tx_pin), self.framing_error.eq(uart.framing_error)]
        wiring.connect(m, wiring.flipped(self.tx), uart.tx)
        wiring.connect(m, uart.rx, wiring.flipped(self.rx))
        return m


def test_loopback_with_stalls():
    dut = _Loopback()
    data = list(random.Random(3).randbytes(40))
    got = []
    sim = Simulator(dut)
    sim.add_clock(1e-6)

    async def source(ctx):
        await send(ctx, dut.tx, data, stall=0.3, rng=random.Random(1))

    async def sink(ctx):
        got.extend(await recv(ctx, dut.rx, len(data), timeout=len(data) * 12 * DIV + 100))
        for _ in range(20 * DIV):
            assert not ctx.get(dut.rx.valid) and not ctx.get(dut.framing_error)
            await ctx.tick()

    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.run()
    assert got == data


def test_transmitter_sends_back_to_back_frames():
    dut = UartTx(CLK, BAUD)
    data = bytes([0x00, 0xFF, 0x55, 0xA5, 0x5A, 0x01, 0x80])
    line = LineDecoder(DIV)
    sim = Simulator(dut)
    sim.add_clock(1e-6)

    async def observe(ctx):
        async for _, _, pin in ctx.tick().sample(dut.pin):
            line.step(pin)

    async def source(ctx):
        assert ctx.get(dut.pin) == 1
        await send(ctx, dut.i, data)
        await ctx.tick().repeat(12 * DIV)

    sim.add_testbench(observe, background=True)
    sim.add_testbench(source)
    sim.run()
    assert bytes(line.data) == data
    assert [b - a for a, b in zip(line.starts, line.starts[1:])] == [10 * DIV] * (len(data) - 1)


@pytest.mark.parametrize("bit_cycles", [DIV * 4 - 1, DIV * 4, DIV * 4 + 1])
def test_receiver_tolerates_three_percent(bit_cycles):
    """32 cycles per bit received from a sender at 31 or 33 (3% off)."""
    dut = UartRx(32e6, 1e6)
    data = bytes([0x00, 0xFF, 0x55, 0xAA, 0x01, 0x80, 0x7F, 0xFE]) + random.Random(bit_cycles).randbytes(8)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    got = []

    async def line(ctx):
        await ctx.tick().repeat(5)
        await drive_line(ctx, dut.pin, data, bit_cycles)

    async def sink(ctx):
        got.extend(await recv(ctx, dut.o, len(data), timeout=len(data) * 11 * bit_cycles))

    sim.add_testbench(line)
    sim.add_testbench(sink)
    sim.run()
    assert bytes(got) == data


def _receive(events, *, ready: bool = True, cycles: int = 0):
    """Drive the receiver's pin with ``events`` ((bytes, stop) frames or ints: cycles of 0 glitch, negative:
    idle cycles); return (bytes, framing error pulses, overrun pulses)."""
    dut = UartRx(CLK, BAUD)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    got, errors, overruns = [], [0], [0]

    async def line(ctx):
        ctx.set(dut.o.ready, ready)
        for event in events:
            if isinstance(event, tuple):
                await drive_line(ctx, dut.pin, event[0], DIV, stop=event[1])
            elif event < 0:
                await ctx.tick().repeat(-event)
            else:
                ctx.set(dut.pin, 0)
                await ctx.tick().repeat(event)
                ctx.set(dut.pin, 1)
        await ctx.tick().repeat(cycles or 4 * DIV)

    async def monitor(ctx):
        while True:
            _, _, valid, payload, error, overrun = await ctx.tick().sample(
                dut.o.valid, dut.o.payload, dut.framing_error, dut.overrun)
            if valid and ctx.get(dut.o.ready):
                got.append(payload)
            errors[0] += error
            overruns[0] += overrun

    sim.add_testbench(line)
    sim.add_testbench(monitor, background=True)
    sim.run()
    return got, errors[0], overruns[0]


def test_framing_error_drops_the_byte_and_waits_for_idle():
    # a frame with a 0 stop bit, the line held low for 3 more bits (a break), then two good bytes
    got, errors, _ = _receive([(b"\x3c", 0), 3 * DIV, -2 * DIV, (b"\x81\x7e", 1)])
    assert got == [0x81, 0x7E]
    assert errors == 1


@pytest.mark.parametrize("glitch", [1, 2, DIV // 2 - 2])
def test_false_start_is_rejected(glitch):
    got, errors, _ = _receive([-DIV, glitch, -2 * DIV, glitch, -3 * DIV, (b"\xa5", 1)])
    assert got == [0xA5]
    assert errors == 0


def test_overrun_keeps_the_first_byte():
    got, errors, overruns = _receive([(b"\x11\x22\x33", 1)], ready=False)
    assert overruns == 2 and errors == 0

    dut = UartRx(CLK, BAUD)
    sim = Simulator(dut)
    sim.add_clock(1e-6)

    async def tb(ctx):
        await drive_line(ctx, dut.pin, b"\x11\x22", DIV)
        await ctx.tick().repeat(DIV)
        assert ctx.get(dut.o.valid) and ctx.get(dut.o.payload) == 0x11

    sim.add_testbench(tb)
    sim.run()


def test_crc_network_matches_the_host():
    m = Module()
    crc_in, byte, crc_out = Signal(16), Signal(8), Signal(16)
    m.d.comb += crc_out.eq(ub.crc16_update(crc_in, byte))
    rng = random.Random(5)
    sim = Simulator(m)

    async def tb(ctx):
        for _ in range(300):
            c, b = rng.randrange(1 << 16), rng.randrange(256)
            ctx.set(crc_in, c)
            ctx.set(byte, b)
            await ctx.delay(1e-9)
            assert ctx.get(crc_out) == crc16(bytes([b]), c)

    sim.add_testbench(tb)
    sim.run()
    assert crc16(b"123456789") == 0x29B1


# --- the bridge ------------------------------------------------------------------------------------------

DEVICE_ID = 0xC0FFEE42
BRIDGE_CLK, BRIDGE_BAUD = 4e6, 1e6          # 4 cycles per bit
BRIDGE_TIMEOUT = 100e-6                      # 400 cycles
BURST = 8


class _Device(wiring.Component):
    """16 words of memory at 0..15, the ID at 0x100 and the number of bus writes so far at 0x101."""

    def __init__(self, addr_width: int):
        super().__init__({"bus": In(HostBusSignature(addr_width))})

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        m.submodules.mem = mem = memory.Memory(shape=unsigned(32), depth=16, init=[])
        wr, rd = mem.write_port(), mem.read_port(domain="comb")
        writes = Signal(32)
        in_mem = bus.addr < 16
        m.d.comb += [wr.addr.eq(bus.addr), wr.data.eq(bus.wdata), wr.en.eq(bus.we & in_mem), rd.addr.eq(bus.addr)]
        with m.If(bus.we):
            m.d.sync += writes.eq(writes + 1)
        with m.If(bus.re):
            m.d.sync += bus.rdata.eq(Mux(in_mem, rd.data, Mux(bus.addr == 0x100, DEVICE_ID,
                                                               Mux(bus.addr == 0x101, writes, 0xDEAD))))
        return m


def _board() -> UartBoard:
    """A UartBridge on a small device: the gateware of a minimal board."""
    return UartBoard(_Device(12), BRIDGE_CLK, BRIDGE_BAUD, timeout=BRIDGE_TIMEOUT, max_burst=BURST)


def _frames(data: bytes) -> list[bytes]:
    """Complete response frames at the start of ``data`` (the bridge only sends whole, well-formed frames)."""
    frames, i = [], 0
    while i + 4 <= len(data):
        assert data[i] == ub.SYNC_RESPONSE
        end = i + 6 + int.from_bytes(data[i + 2:i + 4], "little")
        if end > len(data):
            break
        frames.append(data[i:end])
        i = end
    return frames


def exchange(steps: list[tuple[bytes, int]], *, quiet: int = 200):
    """Send each step's bytes to a fresh board and wait for that many more answers (``quiet`` idle cycles
    after the last). Returns (decoded answers, bus writes as (cycle, addr, data), cycles from each step's
    last stop bit to the start bit of the next answer)."""
    dut = _board()
    div = dut.bridge.divisor
    line, writes, sent = LineDecoder(div), [], []
    bus = dut.device.bus
    sim = Simulator(dut)
    sim.add_clock(1 / BRIDGE_CLK)

    async def observe(ctx):
        async for _, _, tx, we, addr, data in ctx.tick().sample(dut.tx, bus.we, bus.addr, bus.wdata):
            line.step(tx)
            if we:
                writes.append((line.cycle, addr, data))

    async def host(ctx):
        expected = 0
        for data, answers in steps:
            await drive_line(ctx, dut.rx, data, div)
            sent.append(line.cycle)
            expected += answers
            limit = line.cycle + 2 * dut.bridge.timeout_cycles + 70_000 * div
            while len(_frames(bytes(line.data))) < expected:
                assert line.cycle < limit, f"no answer to {data.hex()}"
                await ctx.tick().repeat(div)
        await ctx.tick().repeat(quiet)

    sim.add_testbench(observe, background=True)
    sim.add_testbench(host)
    sim.run()
    latency = [min((s for s in line.starts if s >= t), default=-1) - t for t in sent]
    return [decode_response(f) for f in _frames(bytes(line.data))], writes, latency


def test_bridge_ping_write_burst_and_read_back():
    words = [0x11111111 * (i + 1) for i in range(BURST)]
    answers, writes, latency = exchange([
        (encode_request(ub.CMD_PING), 1),
        (write_request(3, words), 1),
        (read_request(2, 10), 1),
        (read_request(0x100, 2), 1),
        (write_request(15, []), 1),
        (read_request(0, 0), 1),
    ])
    assert answers[0] == (ub.CMD_PING, bytes([ub.PROTOCOL_VERSION, 12, BURST, 0]))
    assert answers[1] == (ub.CMD_WRITE, b"")
    assert answers[2][0] == ub.CMD_READ
    got = [int.from_bytes(answers[2][1][4 * i:4 * i + 4], "little") for i in range(10)]
    assert got[1:9] == words
    assert answers[3] == (ub.CMD_READ, DEVICE_ID.to_bytes(4, "little") + BURST.to_bytes(4, "little"))
    assert answers[4:] == [(ub.CMD_WRITE, b""), (ub.CMD_READ, b"")]
    # one burst: consecutive addresses in consecutive cycles
    assert [(a, d) for _, a, d in writes] == list(zip(range(3, 3 + BURST), words))
    assert [c for c, _, _ in writes] == list(range(writes[0][0], writes[0][0] + BURST))
    assert latency[:3] == [5, BURST + 6, 5]


def test_bridge_nak_codes_and_no_side_effects():
    good = write_request(0, [7])
    bad_crc = bytearray(write_request(0, [0xBAD]))
    bad_crc[-1] ^= 0x40
    answers, writes, _ = exchange([
        (bytes(bad_crc), 1),
        (encode_request(0x42, b"xy"), 1),                           # unknown command
        (encode_request(ub.CMD_PING, b"\x00"), 1),                  # PING takes no payload
        (encode_request(ub.CMD_WRITE, b"\x00\x00\x00\x01\x02"), 1),  # not whole words
        (write_request(0, [1] * (BURST + 1)), 1),                   # more than max_burst
        (encode_request(ub.CMD_READ, b"\x00\x00\x00\xff\xff"), 1),  # count above MAX_READ_WORDS
        (good, 1),
        (read_request(0x101, 1), 1),
    ])
    nak = ub.RESP_NAK
    assert answers[:6] == [(nak, bytes([ub.ERR_CRC, ub.CMD_WRITE])), (nak, bytes([ub.ERR_COMMAND, 0x42])),
                           (nak, bytes([ub.ERR_LENGTH, ub.CMD_PING])), (nak, bytes([ub.ERR_LENGTH, ub.CMD_WRITE])),
                           (nak, bytes([ub.ERR_LENGTH, ub.CMD_WRITE])), (nak, bytes([ub.ERR_LENGTH, ub.CMD_READ]))]
    assert answers[6] == (ub.CMD_WRITE, b"")
    assert answers[7] == (ub.CMD_READ, (1).to_bytes(4, "little"))      # only the good frame wrote
    assert [(a, d) for _, a, d in writes] == [(0, 7)]


def test_bridge_skips_garbage_before_sync():
    garbage = bytes([0x00, 0xFF, 0x5A, 0x13, 0x37])
    answers, _, _ = exchange([(garbage + encode_request(ub.CMD_PING) + garbage, 1), (read_request(0x100, 1), 1)])
    assert [a[0] for a in answers] == [ub.CMD_PING, ub.CMD_READ]
    assert answers[1][1] == DEVICE_ID.to_bytes(4, "little")


def test_bridge_abandons_a_truncated_frame_after_the_timeout():
    frame = write_request(0, [0x12345678, 0x9ABCDEF0])
    answers, writes, latency = exchange([(frame[:9], 1), (frame, 1), (read_request(0, 2), 1)])
    bridge = ub.UartBridge(BRIDGE_CLK, BRIDGE_BAUD, 12, timeout=BRIDGE_TIMEOUT, max_burst=BURST)   # its figures
    assert answers[0] == (ub.RESP_NAK, bytes([ub.ERR_TIMEOUT, ub.CMD_WRITE]))
    assert answers[1:] == [(ub.CMD_WRITE, b""),
                           (ub.CMD_READ, bytes.fromhex("78563412f0debc9a"))]
    assert [(a, d) for _, a, d in writes] == [(0, 0x12345678), (1, 0x9ABCDEF0)]
    # the NAK's start bit follows the timeout; a complete frame's answer follows at once
    timeout = bridge.timeout_cycles
    assert timeout - bridge.divisor <= latency[0] <= timeout + 10
    assert latency[1] == 2 + 6


def test_bridge_rejects_bad_parameters():
    with pytest.raises(ValueError, match="addr_width"):
        ub.UartBridge(50e6, 3e6, 25)
    with pytest.raises(ValueError, match="max_burst"):
        ub.UartBridge(50e6, 3e6, max_burst=0)
    with pytest.raises(ValueError, match="timeout"):
        ub.UartBridge(50e6, 115200, timeout=1e-5)
    assert ub.UartBridge(50e6, 3e6).timeout_cycles == 100_000


# ---------------------------------------------------------------- the bridge's frame parser, fuzzed

@settings(max_examples=40, deadline=None, derandomize=True)
@given(noise=st.binary(min_size=1, max_size=24) | st.builds(
    lambda pre, cut: pre + encode_request(ub.CMD_WRITE, bytes(3) + bytes(4 * 3))[:cut],
    st.binary(max_size=6), st.integers(1, 18)))
def test_bridge_survives_any_bytes_then_answers_the_next_request(noise):
    """Whatever bytes arrive (noise, SYNC bytes in it, frames cut short), every frame the bridge sends is
    well formed (SYNC, length, CRC), and once the line has been quiet for its inter-byte timeout it answers
    the next request correctly: the parser cannot be left stuck."""
    dut = _board()
    div = dut.bridge.divisor
    line = LineDecoder(div)
    sim = Simulator(dut)
    sim.add_clock(1 / BRIDGE_CLK)
    done = []

    async def observe(ctx):
        async for _, _, tx in ctx.tick().sample(dut.tx):
            line.step(tx)

    async def host(ctx):
        await drive_line(ctx, dut.rx, noise, div)
        await ctx.tick().repeat(2 * dut.bridge.timeout_cycles + 100 * div)   # NAKs for what it began
        before = len(_frames(bytes(line.data)))
        await drive_line(ctx, dut.rx, read_request(0x100, 1), div)
        limit = line.cycle + 2 * dut.bridge.timeout_cycles + 200 * div
        while len(_frames(bytes(line.data))) <= before:
            assert line.cycle < limit, f"no answer after {noise.hex()}"
            await ctx.tick().repeat(div)
        done.append(True)

    sim.add_testbench(observe, background=True)
    sim.add_testbench(host)
    sim.run()
    frames = _frames(bytes(line.data))
    answers = [decode_response(f) for f in frames]                # raises on a malformed frame
    assert done and answers[-1] == (ub.CMD_READ, DEVICE_ID.to_bytes(4, "little"))
    assert all(status in (ub.RESP_NAK, ub.CMD_WRITE, ub.CMD_READ, ub.CMD_PING) for status, _ in answers)
