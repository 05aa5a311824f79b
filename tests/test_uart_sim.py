"""End to end: Link -> pty -> C++ harness (sim/uart_sim.py) -> Verilated UartBridge -> a toy device with a small
register map of its own (below): inferences through the link's reads and writes, noise on the line, throughput."""

import time

import numpy as np
import pytest
from amaranth.hdl import Cat, Module, Signal, signed, unsigned
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In

from compiler.host.link import Link, SerialPort, decode_response
from hdl.hostbus import HostBusSignature
from hdl.protocol import CMD_READ, ERR_TIMEOUT, PROTOCOL_VERSION, RESP_NAK
from sim.uart_sim import UartBoard, simulated_board

#: The toy device's address map: 24-bit word addresses, a region in bits 20..23.
ADDR_WIDTH, REGION_SHIFT = 24, 20
REGION_REGS, REGION_PIXELS, REGION_LOGITS, REGION_TRACE = 0, 1, 2, 3
REG_ID, REG_CTRL, REG_STATUS, REG_CYCLES_LO, REG_CYCLES_HI, REG_EVENTS, REG_SYNOPS_LO, REG_SYNOPS_HI = 0, 1, 1, 2, 3, 4, 5, 6
CTRL_START = 1


def address(region: int, offset: int = 0) -> int:
    return region << REGION_SHIFT | offset


MODEL_ID = 0x0DD5EED5
PIXELS = 32
CLASSES = 4
LATENCY = 50_000            # cycles an inference takes after it has read its pixels
CLK, BAUD = 100e6, 3e6


def expected(pixels: np.ndarray) -> tuple[list[int], dict[str, int]]:
    """What _Accelerator computes from its pixel memory (values are 8-bit)."""
    total = int(pixels.sum())
    logits = [-(total << 24), total, total << 20, total << 20]
    return logits, {"cycles": PIXELS + LATENCY, "events": int(np.count_nonzero(pixels)), "synops": total << 28}


class _Accelerator(wiring.Component):
    """The register map with a toy model: logits ``-(S << 24), S, S << 20, S << 20`` of the pixel sum S."""

    bus: In(HostBusSignature(ADDR_WIDTH))

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        m.submodules.pixels = pixels = memory.Memory(shape=unsigned(8), depth=PIXELS, init=[])
        wr, rd = pixels.write_port(), pixels.read_port(domain="comb")
        region = bus.addr[REGION_SHIFT:]
        offset = bus.addr[:REGION_SHIFT]
        m.d.comb += [wr.addr.eq(offset), wr.data.eq(bus.wdata),
                     wr.en.eq(bus.we & (region == REGION_PIXELS) & (offset < PIXELS))]

        busy, done = Signal(), Signal()
        index = Signal(range(PIXELS + LATENCY + 1))
        total = Signal(16)
        events = Signal(32)
        synops = Signal(64)
        logits = [Signal(signed(64), name=f"logit{k}") for k in range(CLASSES)]
        m.d.comb += rd.addr.eq(index)
        with m.If(bus.we & (region == REGION_REGS) & (offset == REG_CTRL)
                  & (bus.wdata == CTRL_START) & ~busy):
            m.d.sync += [busy.eq(1), done.eq(0), index.eq(0), total.eq(0), events.eq(0), synops.eq(0)]
        with m.If(busy):
            m.d.sync += index.eq(index + 1)
            with m.If(index < PIXELS):
                m.d.sync += [total.eq(total + rd.data), events.eq(events + (rd.data != 0)),
                             synops.eq(synops + (rd.data << 28))]
            with m.If(index == PIXELS + LATENCY - 1):
                m.d.sync += [busy.eq(0), done.eq(1), logits[0].eq(-(total << 24)), logits[1].eq(total),
                             logits[2].eq(total << 20), logits[3].eq(total << 20)]

        cycles = index
        with m.If(bus.re):
            with m.Switch(Cat(offset, region)):
                regs = {REG_ID: MODEL_ID, REG_STATUS: Cat(busy, done),
                        REG_CYCLES_LO: cycles, REG_CYCLES_HI: 0, REG_EVENTS: events,
                        REG_SYNOPS_LO: synops[:32], REG_SYNOPS_HI: synops[32:]}
                for reg, value in regs.items():
                    with m.Case(reg):
                        m.d.sync += bus.rdata.eq(value)
                for k, logit in enumerate(logits):
                    for half in range(2):
                        with m.Case(address(REGION_LOGITS, 2 * k + half)):
                            m.d.sync += bus.rdata.eq(logit[32 * half:32 * half + 32])
                with m.Default():
                    m.d.sync += bus.rdata.eq(0xBAD0BAD0)
        return m


def _board() -> UartBoard:
    """The gateware of a board: the UART bridge on the toy accelerator."""
    return UartBoard(_Accelerator(), CLK, BAUD)


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("uart-sim")


def _infer(link: Link, pixels: np.ndarray) -> tuple[list[int], dict[str, int]]:
    """One inference on the toy device through the link: pixels in, start, poll, logits and counters out."""
    link.write_words(address(REGION_PIXELS), pixels)
    link.write_words(REG_CTRL, [CTRL_START])
    deadline = time.monotonic() + 10
    while int(link.read_words(REG_STATUS, 1)[0]) != 2:          # done, not busy
        assert time.monotonic() < deadline
    words = link.read_words(address(REGION_LOGITS), 2 * CLASSES).astype(np.uint64).reshape(-1, 2)
    logits = (words[:, 0] | words[:, 1] << np.uint64(32)).view(np.int64).tolist()
    c = link.read_words(REG_CYCLES_LO, REG_SYNOPS_HI - REG_CYCLES_LO + 1).astype(np.int64)
    return logits, {"cycles": int(c[0] | c[1] << 32), "events": int(c[2]), "synops": int(c[3] | c[4] << 32)}


def test_inferences_through_the_link_on_the_simulated_board(build_dir):
    rng = np.random.default_rng(7)
    with simulated_board(_board(), build_dir) as board, SerialPort(board.path) as port:
        link = Link(port, timeout=2.0)
        info = link.ping()
        assert (info.version, info.addr_width, info.max_burst) == (PROTOCOL_VERSION, 24, 64)
        assert link.read_words(REG_ID, 1).tolist() == [MODEL_ID]
        for _ in range(3):
            pixels = rng.integers(0, 256, PIXELS) * (rng.random(PIXELS) < 0.7)
            logits, counters = _infer(link, pixels)
            want_logits, want_counters = expected(pixels)
            assert logits == want_logits and counters == want_counters
    assert board.stats["framing_errors"] == 0
    assert board.stats["cycles"] > 3 * LATENCY


def test_link_recovers_from_noise_on_the_line(build_dir):
    with simulated_board(_board(), build_dir) as board, SerialPort(board.path) as port:
        link = Link(port, timeout=2.0)
        link.write_words(address(REGION_PIXELS), [1, 2, 3])
        # noise before a request: skipped; noise with a SYNC byte in it: the request is taken for the rest of
        # that frame, the bridge answers NAK after its inter-byte timeout, and the Link sends it again
        port.write(b"\x00\x13\xff")
        assert link.read_words(REG_ID, 1).tolist() == [MODEL_ID]
        port.write(b"\x00\xa5\x02")
        assert link.read_words(REG_ID, 1).tolist() == [MODEL_ID]
        # a request cut short: the bridge gives up on it and answers the next one
        port.write(bytes.fromhex("a5030500"))
        assert decode_response(port.read(8)) == (RESP_NAK, bytes([ERR_TIMEOUT, CMD_READ]))
        assert link.read_words(REG_ID, 1).tolist() == [MODEL_ID]


def test_throughput(build_dir):
    """Bursts through the simulated UART at 3 Mbaud: the words come back intact; report the rates."""
    words = np.random.default_rng(1).integers(0, 1 << 32, 2048, dtype=np.uint64).astype(np.uint32)
    with simulated_board(_board(), build_dir) as board, SerialPort(board.path) as port:
        link = Link(port, timeout=2.0)
        link.ping()
        t0 = time.monotonic()
        link.write_words(address(REGION_TRACE), words)
        t1 = time.monotonic()
        back = link.read_words(address(REGION_LOGITS), 2 * CLASSES)
        t2 = time.monotonic()
        big = link.read_words(address(REGION_TRACE), 2048)
        t3 = time.monotonic()
    assert back.tolist() == [0] * 2 * CLASSES
    assert big.tolist() == [0xBAD0BAD0] * 2048
    stats = board.stats
    print(f"\nwrite 2048 words: {t1 - t0:.3f} s, read 8 words: {t2 - t1:.3f} s, read 2048 words: {t3 - t2:.3f} s; "
          f"simulated {stats['cycles']} cycles in {stats['seconds']:.2f} s "
          f"({stats['cycles'] / stats['seconds'] / 1e6:.1f} M cycles/s), "
          f"{(stats['bytes_in'] + stats['bytes_out']) / (t3 - t0) / 1e3:.1f} kB/s on the line")
