"""The overlay Verilated with its weights in SDRAM (``sim.npu_sdram``): LiteDRAM's controller on the device
model, driven through the host driver. The bundled model's run is ``tests/test_simulate_overlay.py``'s; here,
what the bench itself must do."""

import dataclasses

import pytest

from compiler.host.npu import NpuDriver, NpuError
from compiler.hw.program import compile_program, fit_config
from hdl.npu.isa import Config
from hdl.sdram.chip import MT48LC16M16A2
from sim import npu_sdram, verilator_host


def test_the_model_stores_the_rows_an_image_needs():
    # a row of 512 columns in each of 4 banks: 2,048 words; a power of two of rows, at least 2, at most the chip's
    assert npu_sdram.model_rows(1) == npu_sdram.model_rows(4096) == 2
    assert npu_sdram.model_rows(4097) == 4
    assert npu_sdram.model_rows(Config(lanes=16, weight_bits=4, ext_depth=65536).ext_depth * 4) == 128
    assert npu_sdram.model_rows(1 << 24) == npu_sdram.model_rows(1 << 30) == MT48LC16M16A2.rows


@pytest.fixture(scope="module")
def program(digits_graph):
    return compile_program(digits_graph, fit_config(digits_graph, 16, post_lanes=4, weight_store=256))


@pytest.mark.slow
def test_a_run_before_the_image_is_loaded_is_refused_and_a_slow_part_is_caught(program, digits_test, tmp_path):
    binary = npu_sdram.build(program.config, tmp_path)
    with verilator_host.Session(binary) as bus:
        driver = NpuDriver(bus)
        driver.load(program, external=False)
        with pytest.raises(NpuError, match="does not hold this program's weights"):
            driver.infer(digits_test.x[0])
    # a part with three times the chip's tRCD: the controller, generated for the real one, breaks it, and the
    # model stops the simulation at the first write, naming the rule
    slow = dataclasses.replace(MT48LC16M16A2, t_rcd=3 * MT48LC16M16A2.t_rcd)
    binary = npu_sdram.build(program.config, tmp_path, model_chip=slow)
    with pytest.raises(RuntimeError, match=r"sdram model: cycle \d+: T_RCD"), verilator_host.Session(binary) as bus:
        NpuDriver(bus).load(program)
