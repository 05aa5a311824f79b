"""The overlay behind the host bus (``hdl.npu.bus``, ``hdl.npu.regmap``) driven by the host driver
(``compiler.host.npu``) in the Amaranth simulator: memories written and read back through the address map,
descriptors of the bundled model run through the bus bit-exact against the interpreter (``sim.npu_model``)."""

from dataclasses import fields, replace
from pathlib import Path
import random

import numpy as np
import pytest

from compiler.host.npu import ConfigMismatch, NpuDriver, NpuError
from compiler.hw.program import compile_program, fit_config
from hdl.npu import regmap
from hdl.npu.bus import OverlayBus
from hdl.npu.isa import Bank, Config, Descriptor, Kind, Mem, pack_lanes
from hdl.npu.overlay import descriptor_cycles
from hdl.npu.regmap import AddressMap, config_hash
from sim import npu_model
from sim.amaranth_bus import AmaranthBus

SMALL = Config(lanes=5, spike_depth=24, wide_depth=24, weight_depth=40, param_depth=8, out_groups=4,
               program_depth=4, classes=6)


@pytest.mark.parametrize("config", [Config(), SMALL, Config(lanes=32)], ids=["default", "small", "lanes32"])
def test_every_chunk_of_every_memory_has_its_own_address(config):
    amap = AddressMap(config)
    seen = {}
    for mem in Mem:
        assert amap.chunks[mem] * 32 >= amap.word_bits[mem] > 32 * (amap.chunks[mem] - 1)
        for word in (0, 1, (1 << amap.index_bits) - 1):
            for chunk in range(amap.chunks[mem]):
                addr = amap.address(mem, word, chunk)
                assert addr < 1 << amap.addr_width and addr >> amap.region_shift == amap.region(mem) != 0
                assert seen.setdefault(addr, (mem, word, chunk)) == (mem, word, chunk)
    assert max(regmap.REG_MAGIC, regmap.REG_CONFIG, regmap.REG_CTRL, regmap.REG_STATUS, regmap.REG_PC,
               regmap.REG_CYCLES) < min(seen)
    rnd = random.Random(0)
    for mem in Mem:
        value = rnd.getrandbits(amap.word_bits[mem])
        assert amap.join(amap.split(mem, value)) == value
    assert amap.join(amap.split(Mem.LOGITS, -5)) == (1 << amap.word_bits[Mem.LOGITS]) - 5


def test_a_map_beyond_the_links_addresses_is_refused():
    with pytest.raises(ValueError, match="24"):
        AddressMap(Config(lanes=256))


def test_the_configuration_hash_covers_every_field():
    base = Config()
    assert config_hash(base) == config_hash(Config())
    hashes = {config_hash(replace(base, **{f.name: getattr(base, f.name) + 1})) for f in fields(Config)}
    assert len(hashes) == len(fields(Config)) and config_hash(base) not in hashes


@pytest.fixture(scope="module")
def small():
    """The overlay of SMALL on the bus, in the Amaranth simulator, and a driver for it."""
    bus = AmaranthBus(OverlayBus(SMALL))
    return bus, NpuDriver(bus, SMALL)


def test_registers_and_memories_read_back(small):
    bus, driver = small
    amap = driver.map
    assert [int(v) for v in bus.read_words(regmap.REG_MAGIC, 2)] == [regmap.MAGIC, config_hash(SMALL)]
    assert driver.status() == 0 and driver.cycles() == 0
    assert int(bus.read_words(regmap.REGISTERS, 1)[0]) == 0
    rnd = random.Random(1)
    for mem in (Mem.SPIKES, Mem.WIDE):
        words = [rnd.getrandbits(amap.word_bits[mem]) for _ in range(7)]
        driver.write_memory(mem, 3, words)
        assert driver.read_memory(mem, 3, 7) == words, mem.name
        # chunks below the last only stage: the word changes when its last chunk is written
        if amap.chunks[mem] > 1:
            bus.write_words(amap.address(mem, 3), [0xFFFFFFFF] * (amap.chunks[mem] - 1))
            assert driver.read_memory(mem, 3, 1) == words[:1]
        # a retried burst writes the same words
        for addr, chunks in amap.runs(mem, 10, words[:2]) * 2:
            bus.write_words(addr, chunks)
        assert driver.read_memory(mem, 10, 2) == words[:2]
    assert driver.read_memory(Mem.LOGITS, 0, SMALL.classes) == [0] * SMALL.classes


class _Fake:
    """A bus whose word 0 is ``first``, and that records the writes."""

    def __init__(self, first):
        self.first, self.writes = first, []

    def read_words(self, addr, count):
        return np.array([self.first, 0][:count], dtype=np.uint32)

    def write_words(self, addr, words):
        self.writes.append(addr)


def test_a_program_for_another_configuration_is_refused(digits_graph, small):
    program = compile_program(digits_graph, fit_config(digits_graph, lanes=16))
    _, driver = small
    with pytest.raises(ConfigMismatch, match="configuration"):
        NpuDriver(driver.bus).load(program)
    fake = _Fake(0x1234)
    with pytest.raises(NpuError, match="not an overlay"):
        NpuDriver(fake).load(program)
    assert fake.writes == []


@pytest.fixture(scope="module")
def digits(digits_graph, digits_test):
    """The bundled model's program loaded through the bus into its overlay (Amaranth simulator), the
    driver, and the interpreter's machine with the first test sample written."""
    program = compile_program(digits_graph, fit_config(digits_graph, lanes=16))
    bus = AmaranthBus(OverlayBus(program.config))
    driver = NpuDriver(bus)
    written = []
    driver.load(program, progress=written.append)
    assert sum(written) == driver.image_words() > 3000
    return program, bus, driver


def _machine(program, x):
    m = npu_model.Machine(program.config, program.weights, program.mult, program.bias, program.theta)
    elements = program.input_elements(x)
    for f in range(program.input.frames):
        m.write(program.operands[program.input_name], f, elements[f])
    return m


def _set_banks(driver, program, machine):
    for bank in (Bank.SPIKES, Bank.WIDE):
        bits = driver.map.word_bits[Mem[bank.name]] // program.config.lanes
        rows = machine.banks[bank][:program.bank_words[bank]]
        driver.write_memory(Mem[bank.name], 0, [pack_lanes(row, bits) for row in rows])


def _same_banks(driver, program, machine):
    for bank in (Bank.SPIKES, Bank.WIDE):
        words = program.bank_words[bank]
        got = driver.read_bank(bank, 0, words)
        assert np.array_equal(got, machine.banks[bank][:words]), bank.name


def _run_one(driver, program, d):
    driver.write_memory(Mem.PROGRAM, 0, d.encode() + Descriptor(Kind.END).encode())
    driver.start()
    driver.wait()


def test_the_stem_runs_through_the_bus(digits, digits_test):
    """The input written as the interpreter writes it, then the first MATMUL: both banks and the cycles."""
    program, bus, driver = digits
    x = digits_test.x[0]
    fresh = npu_model.Machine(program.config, program.weights, program.mult, program.bias, program.theta)
    _set_banks(driver, program, fresh)
    driver.write_input(x)
    m = _machine(program, x)
    _same_banks(driver, program, m)
    stem = program.descriptors[0]
    assert stem.kind == Kind.MATMUL
    _run_one(driver, program, stem)
    m.execute(stem)
    _same_banks(driver, program, m)
    end = descriptor_cycles(Descriptor(Kind.END), program.config)
    assert driver.cycles() == descriptor_cycles(stem, program.config, m.events[stem.name]) + end
    assert driver.status() == regmap.STATUS_DONE and driver.pc() == 1


def test_the_head_writes_the_logits(digits, digits_test):
    program, bus, driver = digits
    x = digits_test.x[1]
    m = _machine(program, x)
    head = next(d for d in program.descriptors if d.post.name == "LOGITS")
    for d in program.descriptors[:program.descriptors.index(head)]:
        m.execute(d)
    _set_banks(driver, program, m)
    _run_one(driver, program, head)
    m.execute(head)
    assert list(driver.logits()) == list(m.logits[:program.classes])
    assert len(set(driver.logits())) > 1
    _same_banks(driver, program, m)


# -- the Verilated overlay, through the same driver (sim.verilator_host.Session) ---------------------------

BUILD = Path(__file__).resolve().parent.parent / "build" / "test-sim"


@pytest.fixture(scope="module")
def verilated(digits_graph):
    """The bundled model's program and a Verilator binary of its overlay on the bus (cached by its Verilog)."""
    from sim import verilator_host
    program = compile_program(digits_graph, fit_config(digits_graph, lanes=16))
    return program, verilator_host.build(OverlayBus(program.config), BUILD)


@pytest.mark.slow
def test_verilated_descriptor_by_descriptor(verilated, digits_test):
    """Each descriptor the gateware runs, alone on the interpreter's banks before it: both banks, the logits
    and the exact cycles, on the Verilated overlay through the driver."""
    from sim.verilator_host import Session
    program, binary = verilated
    x = digits_test.x[3]
    m = _machine(program, x)
    lanes, checked = program.config.lanes, 0
    end = descriptor_cycles(Descriptor(Kind.END), program.config)
    with Session(binary) as bus:
        driver = NpuDriver(bus)
        driver.load(program)
        for d in program.descriptors[:-1]:
            _set_banks(driver, program, m)
            _run_one(driver, program, d)
            m.execute(d)
            _same_banks(driver, program, m)
            assert driver.cycles() == descriptor_cycles(d, program.config, m.events.get(d.name, 0)) + end, d.name
            if d.post.name == "LOGITS":
                assert list(driver.logits()) == list(m.logits[:program.classes])
            checked += 1
    assert checked == len(program.descriptors) - 1 and bus.stats["cycles"] > 0


@pytest.mark.slow
def test_verilated_whole_program(verilated, digits_test):
    """The loaded program on test samples, through the driver: the interpreter's logits and the exact cycles."""
    from sim.verilator_host import Session
    program, binary = verilated
    lanes = program.config.lanes
    with Session(binary) as bus:
        driver = NpuDriver(bus)
        driver.load(program)
        for x in digits_test.x[:8]:
            logits, cycles = driver.infer(x)
            m = _machine(program, x)
            for d in program.descriptors[:-1]:             # all but END
                m.execute(d)
            assert list(logits) == list(m.logits[:program.classes]) == list(npu_model.run(program, x)[0])
            assert cycles == sum(descriptor_cycles(d, program.config, m.events.get(d.name, 0)) for d in program.descriptors)


def test_a_session_answers_each_read_at_once():
    """``sim.verilator_host.Session``: writes queued, each read answered, waits polled in the harness, a
    failed wait an error (the tiny bus device of tests/test_sim_verilator_host.py)."""
    from test_sim_verilator_host import _SumDevice
    from sim.verilator_host import Session, build
    binary = build(_SumDevice(), BUILD)
    words = list(range(100, 116))
    with Session(binary) as bus:
        bus.write_words(0, words)
        assert bus.read_words(3, 2).tolist() == words[3:5]
        bus.write_words(0x100, [1])
        bus.wait(0x101, 1, 1, max_cycles=1000)
        assert bus.read_words(0x102, 1).tolist() == [sum(words)]
        assert bus.cycles > 16
    assert bus.stats["cycles"] > 16 and bus.stats["seconds"] >= 0
    with Session(binary) as bus, pytest.raises(RuntimeError, match="timeout"):
        bus.wait(0x101, 1, 1, max_cycles=50)           # never started: never done


@pytest.mark.slow
def test_the_driver_runs_the_overlay_over_the_simulated_uart(digits_graph, digits_test):
    """The board's path end to end: NpuDriver -> Link -> pty -> Verilated UART bridge -> OverlayBus."""
    from compiler.host.link import Link, SerialPort
    from sim.uart_sim import UartBoard, simulated_board
    program = compile_program(digits_graph, fit_config(digits_graph, lanes=16))
    x = digits_test.x[4]
    with simulated_board(UartBoard(OverlayBus(program.config), 100e6, 3e6), BUILD) as board, \
            SerialPort(board.path) as port:
        link = Link(port, timeout=2.0)
        assert link.ping().addr_width == AddressMap(program.config).addr_width
        driver = NpuDriver(link)
        written = []
        driver.load(program, progress=written.append)
        assert sum(written) == driver.image_words()
        logits, cycles = driver.infer(x)
        assert list(logits) == list(npu_model.run(program, x)[0]) and cycles > 0
    assert board.stats["framing_errors"] == 0
