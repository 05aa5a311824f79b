"""``Overlay(config, images)``: the program, weights and parameters as the memories' initial contents (the
``--standalone`` bitstream boots into its model), in the Amaranth simulator: a stem descriptor runs from the
initial contents, with nothing loaded but the input."""

import numpy as np

from compiler.host.npu import NpuDriver
from compiler.hw.program import compile_program, fit_config
from hdl.npu.bus import OverlayBus
from hdl.npu.isa import Bank, Descriptor, Kind, Mem, pack_lanes
from hdl.npu.overlay import descriptor_cycles
from sim import npu_model
from sim.amaranth_bus import AmaranthBus


def test_a_program_in_the_initial_contents_runs_without_a_load(digits_graph, digits_test):
    program = compile_program(digits_graph, fit_config(digits_graph, lanes=16))
    stem = program.descriptors[0]
    assert stem.kind == Kind.MATMUL
    images = program.images()
    images[Mem.PROGRAM] = stem.encode() + Descriptor(Kind.END).encode()
    bus = AmaranthBus(OverlayBus(program.config, images))
    driver = NpuDriver(bus, program.config)
    driver.program = program                       # what load() would set, without writing anything
    x = digits_test.x[0]
    machine = npu_model.Machine(program.config, program.weights, program.mult, program.bias, program.theta)
    for bank in (Bank.SPIKES, Bank.WIDE):           # the banks as the interpreter starts them (zeros)
        bits = driver.map.word_bits[Mem[bank.name]] // program.config.lanes
        driver.write_memory(Mem[bank.name], 0, [pack_lanes(r, bits) for r in
                                                 machine.banks[bank][:program.bank_words[bank]]])
    driver.write_input(x)
    elements = program.input_elements(x)
    for f in range(program.input.frames):
        machine.write(program.operands[program.input_name], f, elements[f])
    driver.start()
    driver.wait()
    machine.execute(stem)
    for bank in (Bank.SPIKES, Bank.WIDE):
        words = program.bank_words[bank]
        assert np.array_equal(driver.read_bank(bank, 0, words), machine.banks[bank][:words]), bank.name
    end = descriptor_cycles(Descriptor(Kind.END), program.config)
    assert driver.cycles() == descriptor_cycles(stem, program.config, machine.events[stem.name]) + end


def test_images_larger_than_a_memory_are_refused(digits_graph):
    import pytest
    from amaranth.hdl import Fragment

    program = compile_program(digits_graph, fit_config(digits_graph, lanes=16))
    too_many = {Mem.WEIGHTS: [0] * (program.config.weight_depth + 1)}
    with pytest.raises(ValueError, match="initial words do not fit"):
        Fragment.get(OverlayBus(program.config, too_many).overlay, None)
