"""The host's path into the overlay's external memory (``hdl.npu.bus``'s data window, ``hdl.npu.regmap``'s
``REG_EXT_*``, ``compiler.host.npu.NpuDriver.load_external``) in the Amaranth simulator, on a memory that takes
a write or a read a cycle (``sim.ext_memory``) or stalls at random."""

import binascii
import random

import numpy as np
import pytest

from compiler.host.npu import NpuDriver, NpuError
from compiler.hw.program import compile_program, fit_config
from hdl.npu import regmap
from hdl.npu.bus import OverlayBus
from hdl.npu.isa import Config
from sim.amaranth_bus import AmaranthBus
from sim.ext_memory import serve_reads

SMALL = Config(lanes=5, spike_depth=24, wide_depth=24, weight_depth=40, param_depth=8, out_groups=4,
               program_depth=4, classes=6, ext_depth=256)


class Memory:
    """The external memory of an ``OverlayBus`` in the simulator: its words, written and read through
    ``serve_reads``; ``ready`` is raised after ``ready_after`` cycles (the SDRAM's initialisation; None:
    never)."""

    def __init__(self, device, *, stall=0.0, ready_after=0):
        self.words: dict[int, int] = {}
        self.writes = 0
        self.device, self.stall, self.ready_after = device, stall, ready_after

    def write(self, addr, data, enables):
        assert enables == 0b11
        self.words[addr] = data
        self.writes += 1

    async def serve(self, ctx):
        await serve_reads(ctx, self.device.ext_cmd, self.device.ext_rdata, lambda a: self.words.get(a, 0),
                          latency=2, stall=self.stall, rng=random.Random(1), wdata=self.device.ext_wdata,
                          write=self.write)

    async def flags(self, ctx):
        ctx.set(self.device.ext_idle, 1)
        if self.ready_after is None:
            return
        if self.ready_after:
            await ctx.tick().repeat(self.ready_after)
        ctx.set(self.device.ext_ready, 1)


def _device(config, **memory):
    device = OverlayBus(config)
    mem = Memory(device, **memory)
    return AmaranthBus(device, background=(mem.serve, mem.flags)), mem


@pytest.fixture(scope="module")
def digits_program(digits_graph):
    cfg = fit_config(digits_graph, lanes=16, post_lanes=4).with_(weight_depth=256, ext_depth=4096, program_depth=64)
    program = compile_program(digits_graph, cfg)
    assert program.ext is not None
    return program


def test_a_program_image_lands_whole_and_its_id_is_written_after_the_crc(digits_program):
    bus, mem = _device(digits_program.config, stall=0.3, ready_after=200)
    driver = NpuDriver(bus)
    driver.load(digits_program, external=False)
    with pytest.raises(NpuError, match="does not hold this program's weights"):
        driver.start()                                        # nothing loaded yet: id 0
    image = digits_program.ext_image()
    written = []
    assert driver.load_external(digits_program, written.append)
    assert sum(written) == -(-len(image) // 2) and max(written) <= regmap.EXT_FIFO_DEPTH
    assert [mem.words.get(a) for a in range(len(image))] == image
    assert driver.external_id() == digits_program.ext_id() != 0
    assert not driver.load_external(digits_program)           # already there: nothing written
    writes = mem.writes
    assert driver.load_external(digits_program, force=True) and mem.writes == 2 * writes


def test_registers_crc_address_and_lost_words():
    bus, mem = _device(SMALL)
    amap = regmap.AddressMap(SMALL)
    bus.tick(4)
    assert bus.read_words(regmap.REG_EXT_STATUS, 1)[0] == regmap.EXT_READY | regmap.EXT_IDLE
    rnd = np.random.default_rng(3)
    words = rnd.integers(0, 1 << 32, 40, dtype=np.uint64).astype(np.uint32)
    bus.write_words(regmap.REG_EXT_ID, [1234])
    bus.write_words(regmap.REG_EXT_ADDR, [101])               # odd: the lowest bit is dropped
    assert bus.read_words(regmap.REG_EXT_ID, 1)[0] == 0
    bus.write_words(amap.ext_window + 7, words[:25])          # any offset of the window
    bus.write_words(amap.ext_window, words[25:])
    bus.tick(2 * len(words) + 8)
    status, crc = bus.read_words(regmap.REG_EXT_STATUS, 2)
    assert status == regmap.EXT_READY | regmap.EXT_IDLE
    assert crc == binascii.crc32(words.astype("<u4").tobytes())
    assert bus.read_words(regmap.REG_EXT_ADDR, 1)[0] == 100 + 2 * len(words)
    assert [mem.words[100 + k] for k in range(2 * len(words))] == [int(w) >> s & 0xFFFF for w in words
                                                                  for s in (0, 16)]
    # the FIFO full (the memory not ready): the words past its depth are lost, and the host is told
    bus2, mem2 = _device(SMALL, ready_after=None)
    bus2.write_words(regmap.REG_EXT_ADDR, [0])
    for k in range(0, regmap.EXT_FIFO_DEPTH + 3, amap.ext_window):
        bus2.write_words(amap.ext_window, list(range(k, min(k + amap.ext_window, regmap.EXT_FIFO_DEPTH + 3))))
    status = bus2.read_words(regmap.REG_EXT_STATUS, 1)[0]
    assert status == regmap.EXT_LOST and not mem2.words
    bus2.write_words(regmap.REG_EXT_ADDR, [0])                # a new load starts afresh
    assert bus2.read_words(regmap.REG_EXT_STATUS, 1)[0] & regmap.EXT_LOST == 0


def test_a_configuration_without_external_memory_has_no_ext_registers():
    device = OverlayBus(SMALL.with_(ext_depth=0))
    assert "ext_cmd" not in device.signature.members
    bus = AmaranthBus(device)
    bus.write_words(regmap.REG_EXT_ID, [77])
    assert list(bus.read_words(regmap.REG_EXT_ADDR, 4)) == [0, 0, 0, 0]
