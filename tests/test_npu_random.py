"""Randomized model configurations on ONE overlay: a Verilated overlay of a fixed configuration (5 lanes, a lane
count that divides no width) runs the compiled program of every model that fits it, through the host driver,
bit-exact against the golden model in every stored tensor, in exactly the cycles of the descriptors' formula.
What the overlay is for: a new model is a new program, not new hardware."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from compiler.errors import UserError
from compiler.frontend.config import ModelConfig
from compiler.host.npu import NpuDriver
from compiler.hw.program import compile_program
from compiler.ir import golden
from hdl.npu.isa import Config
from test_npu_program import CONFIGS, _model, configs

BUILD = Path(__file__).resolve().parent.parent / "build" / "test-sim"

#: Room for every configuration of tests/test_npu_program.py (each field at least the largest that
#: ``fit_config(graph, 5, keep=True)`` gives for them) and for most that the strategy draws. Its post unit
#: computes one lane a cycle: each group's post in 5 steps (the standard configurations' post units step too).
ROOMY = Config(lanes=5, spike_bits=3, wide_bits=24, event_bits=16, spike_depth=4096, wide_depth=1024, weight_bits=8,
               weight_depth=4096, acc_bits=32, mult_bits=24, bias_bits=40, post_bits=48, levels=4, theta_bits=40,
               param_depth=256, out_groups=32, kv_bits=24, kv_depth=1024, program_depth=48, classes=10,
               logit_bits=48, post_lanes=1)


@pytest.fixture(scope="module")
def overlay():
    from hdl.npu.bus import OverlayBus
    from sim import verilator_host
    binary = verilator_host.build(OverlayBus(ROOMY), BUILD)
    with verilator_host.Session(binary) as bus:
        yield NpuDriver(bus, ROOMY)


def _same(driver, graph, x, dense=False):
    program = compile_program(graph, ROOMY, keep=True, dense=dense)
    driver.load(program)
    want, env = golden.run(graph, x, trace=True)
    for b, sample in enumerate(x):
        logits, cycles = driver.infer(sample)
        assert list(logits) == list(want[b]), b
        for layer in program.layers:
            if layer.dst:
                got = driver.read_tensor(layer.dst)
                assert np.array_equal(got, env[layer.dst][b][:got.shape[0]].reshape(got.shape)), (b, layer.dst)
        assert cycles == sum(program.cycles(program.events(x[b:b + 1]))), b
    return program


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_the_accelerator_test_configurations(overlay, name):
    graph, x = _model(ModelConfig(**CONFIGS[name]), count=2)
    _same(overlay, graph, x)


@pytest.mark.slow
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(cfg=configs, seed=st.integers(0, 3))
def test_random_configurations(overlay, cfg, seed):
    graph, x = _model(cfg, seed, count=2)
    try:
        compile_program(graph, ROOMY, keep=True)
    except UserError:
        assume(False)                   # a model larger than the overlay: refused, with the field named
    _same(overlay, graph, x)


@pytest.mark.slow
@pytest.mark.parametrize("dim", [6, 12])
def test_a_later_time_steps_short_copy_waits_for_the_membranes(overlay, dim):
    """ELEMENTWISE neurons over 2 (or 3) lane groups at T=3: a frame of a later step is shorter than the post
    pipeline, so it waits for the previous step's membranes (``descriptor_cycles`` counts the wait)."""
    from hdl.npu.isa import Kind
    from hdl.npu.overlay import DRAIN, POST_STAGES
    graph, x = _model(ModelConfig(timesteps=3, levels=2, bits=4, dim=dim, heads=2, classes=4), count=2)
    program = _same(overlay, graph, x)
    g_in = {-(-d.in_ch // ROOMY.lanes) for d in program.descriptors if d.kind == Kind.ELEMENTWISE}
    assert g_in and (dim > 6 or min(g_in) < POST_STAGES - 2 - DRAIN)      # dim 6: the wait happens


#: Conv stems on the same overlay: the spikformer architecture (3x3 convs, spike max-pooling, the conv position
#: embedding with its residual add) and the metaformer one (a 7x7 stride-2 stem, downsampling, SepConv with its
#: signed small-integer events and 7x7 depthwise conv, channel convs), at sizes no other test names.
WINDOWED = {
    "spikformer-12px-T2": dict(arch="spikformer", dims=(8, 12, 16), depths=(1,), image_size=12, channels=2,
                               heads=2, timesteps=2, classes=4),
    "spikformer-10px-b3": dict(arch="spikformer", dims=(6, 10), depths=(1,), image_size=10, heads=2, bits=3,
                               levels=2, classes=5),
    "metaformer-12px-T2": dict(arch="metaformer", dims=(4, 6, 10), depths=(1, 1, 1), image_size=12, heads=2,
                               timesteps=2, classes=4),
    "metaformer-membrane-head": dict(arch="metaformer", dims=(5, 8), depths=(1, 1), image_size=8, heads=2,
                                     head="membrane", channels=3),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", WINDOWED)
def test_conv_stems_run_on_the_same_overlay(overlay, name):
    from hdl.npu.isa import Kind
    graph, x = _model(ModelConfig(**WINDOWED[name]), count=2)
    program = _same(overlay, graph, x)
    kinds = {d.kind for d in program.descriptors if d.conv_k}
    assert kinds == ({Kind.MATMUL, Kind.MAXPOOL} if name.startswith("spikformer") else {Kind.MATMUL})
    signed = [layer for d, layer in zip(program.descriptors, program.layers)
              if d.kind == Kind.MATMUL and program.tensors[layer.srcs[0]].lo < 0]      # signed events
    assert bool(signed) == name.startswith("metaformer")


@pytest.mark.slow
@pytest.mark.parametrize("name", [*CONFIGS, *WINDOWED])
def test_dense_programs_compute_the_same_in_more_cycles(overlay, name):
    """``--dense``'s baseline: every lane the engine reads is an event, zeros too (in the window's grid, the mask
    applied): the same tensors bit for bit, in exactly the formula's cycles on those events, never fewer than
    the event-driven program's, more where a spike is zero."""
    graph, x = _model(ModelConfig(**{**CONFIGS, **WINDOWED}[name]), count=2)
    sparse = _same(overlay, graph, x)
    dense = _same(overlay, graph, x, dense=True)
    assert all(d.dense for d in dense.descriptors if d.kind.name in ("MATMUL", "LINEAR_ATTENTION"))
    fewer, more = (sum(p.cycles(p.events(x[:1]))) for p in (sparse, dense))
    assert more > fewer
