"""The overlay's gateware (``hdl.npu.overlay``) in the Amaranth simulator, descriptor by descriptor against the
program interpreter (``sim.npu_model``): each descriptor of a real program runs alone on the memories the
interpreter had before it, and must leave both scratchpad banks (every word, not only its output's) and
the logits as the interpreter does."""

from dataclasses import replace

import pytest

from compiler.hw.program import compile_program, fit_config
from hdl.npu.isa import FETCH_TARGETS, Bank, Descriptor, Kind, Mem, pack_lanes
from hdl.npu.overlay import program_cycles, splits
from sim import npu_model
from sim.npu_amaranth import run_overlay


def _bank_words(machine, bank, count):
    bits = machine.config.spike_bits if bank == Bank.SPIKES else machine.config.wide_bits
    return [pack_lanes(row, bits) for row in machine.banks[bank][:count]]


def _descriptor_by_descriptor(program, x, kinds=tuple(Kind)):
    cfg = program.config
    images = program.images()
    m = npu_model.Machine(cfg, program.weights, program.mult, program.bias, program.theta, ext=program.ext)
    inp = program.input
    elements = program.input_elements(x)
    for f in range(inp.frames):
        m.write(program.operands[inp.name], f, elements[f])
    sizes = {b: max(program.bank_words[b], 1) for b in (Bank.SPIKES, Bank.WIDE)}
    checked, fetches = 0, []
    for d in program.descriptors[:-1]:
        before = {b: _bank_words(m, b, sizes[b]) for b in sizes}
        m.execute(d)
        if d.kind == Kind.FETCH:              # runs with the descriptor after it, whose weights it brings
            fetches.append(d)
            continue
        run, fetches = fetches + [d], []
        if d.kind not in kinds:
            continue
        if program.ext is not None:           # streamed: what earlier FETCHes left in the memories
            images = replace(program, weights=m.weights, mult=m.mult, bias=m.bias, theta=m.theta).images()
        one = {**images, Mem.PROGRAM: [w for e in run + [Descriptor(Kind.END)] for w in e.encode()]}
        banks, logits, cycles, status = run_overlay(cfg, one, before, ext=program.ext_image())
        assert status == "done", d.name
        events = m.events.get(d.name, 0)
        whole = run + [Descriptor(Kind.END)]
        assert cycles == sum(program_cycles(whole, cfg, [0] * (len(run) - 1) + [events, 0])), d.name
        for b in sizes:
            assert banks[b] == _bank_words(m, b, sizes[b]), (d.name, b.name)
        if d.post.name == "LOGITS":
            assert logits[:program.classes] == list(m.logits[:program.classes]), d.name
        checked += 1
    return checked


@pytest.mark.parametrize("post_lanes, out_groups, dense", [(0, None, False), (4, None, False), (4, 8, False),
                                                            (4, None, True)])
def test_every_descriptor_of_the_bundled_model(digits_graph, digits_test, post_lanes, out_groups, dense):
    """Its matmuls, copies and the linear attention (4 heads of 8 channels: two heads per 16-lane group); with
    a post unit of all 16 lanes, and of 4 (each group's post in 4 steps); each post beside the next frame, and
    (accumulators for fc1's 8 groups, not twice that) fc1's posts waited for; and the dense program (every
    lane an event, zeros too)."""
    cfg = fit_config(digits_graph, lanes=16, post_lanes=post_lanes)
    cfg = cfg.with_(out_groups=out_groups or cfg.out_groups)
    program = compile_program(digits_graph, cfg, dense=dense)
    split = {d.name: splits(d, cfg) for d in program.descriptors if d.kind == Kind.MATMUL}
    assert split["block0.mlp.fc1"] == (out_groups is None) and split["block0.mlp.fc2"]
    assert _descriptor_by_descriptor(program, digits_test.x[0]) == 12


def test_the_logits_of_fewer_classes_than_a_groups_post_words():
    """4 classes at 16 lanes and a 4-lane post unit: the head's post writes four words of 4 logits (three of
    padding) into registers that hold one: they must not wrap onto the first (they did, which zeroed every
    logit)."""
    from compiler.frontend.config import ModelConfig
    from hdl.npu.overlay import logit_words
    from test_npu_program import _model
    graph, x = _model(ModelConfig(dim=16, heads=2, classes=4), count=1)
    cfg = fit_config(graph, lanes=16, post_lanes=4)
    assert cfg.classes == 4 and logit_words(cfg) == 4
    program = compile_program(graph, cfg)
    assert _descriptor_by_descriptor(program, x[0], kinds=(Kind.MATMUL,)) >= 1


def test_a_kind_it_does_not_know_stops_with_error(digits_graph):
    program = compile_program(digits_graph, fit_config(digits_graph, lanes=16))
    words = Descriptor(Kind.END).encode()
    words[0] |= (1 << 3) - 1                   # kind 7: no such kind
    one = {**program.images(), Mem.PROGRAM: words}
    _, _, _, status = run_overlay(program.config, one, {Bank.SPIKES: [0], Bank.WIDE: [0]})
    assert status == "error"


def test_every_window_descriptor_of_a_conv_stem():
    """A spikformer stem at 5 lanes: 3x3 convs with zero padding (MATMUL over the window), stride-2 spike
    max-pooling (MAXPOOL), each against the interpreter in every bank word and in exact cycles."""
    from compiler.frontend.config import ModelConfig
    from test_npu_program import _model
    graph, x = _model(ModelConfig(arch="spikformer", dims=(4, 6), depths=(1,), image_size=6, heads=2,
                                  timesteps=2, classes=4), count=1)
    program = compile_program(graph, fit_config(graph, lanes=5))
    windows = [d.kind for d in program.descriptors if d.conv_k]
    assert windows.count(Kind.MAXPOOL) >= 1 and windows.count(Kind.MATMUL) >= 2
    assert _descriptor_by_descriptor(program, x[0], kinds=(Kind.MAXPOOL,)) == windows.count(Kind.MAXPOOL)
    assert _descriptor_by_descriptor(program, x[0], kinds=(Kind.MATMUL,)) >= windows.count(Kind.MATMUL)


def test_tiles_of_a_wide_layer(digits_graph, digits_test):
    """With accumulators for 3 lane groups, fc1's 128 channels run as 3 tiles (48, 48 and 32 channels), each
    writing its channels of dst: every MATMUL against the interpreter in every bank word and in exact cycles."""
    cfg = fit_config(digits_graph, lanes=16, post_lanes=4).with_(out_groups=3, program_depth=32)
    program = compile_program(digits_graph, cfg)
    tiles = [d.name for d in program.descriptors if d.name.startswith("block0.mlp.fc1[")]
    assert len(tiles) == 3
    assert _descriptor_by_descriptor(program, digits_test.x[0], kinds=(Kind.MATMUL,)) == 10


def test_fetched_weights(digits_graph, digits_test):
    """A weight store of 256 words, parameter memories of 40 lane groups and an external memory: each MATMUL runs after the FETCHes before it (its
    tile's weights into alternate halves of the store, and the parameters of the layers from it on; a MATMUL
    with ``overlap`` while the next tile's weights arrive), each run against the interpreter in every bank word
    and in exact cycles."""
    cfg = fit_config(digits_graph, lanes=16, post_lanes=4).with_(weight_depth=256, param_depth=40, ext_depth=4096,
                                                                       program_depth=128)
    program = compile_program(digits_graph, cfg)
    targets = {FETCH_TARGETS[d.fetch_to] for d in program.descriptors if d.kind == Kind.FETCH}
    assert targets == set(FETCH_TARGETS)                            # weights, multipliers, biases, thresholds
    matmuls = sum(d.kind == Kind.MATMUL for d in program.descriptors)
    assert matmuls > 8 and sum(d.overlap for d in program.descriptors) > 8
    assert _descriptor_by_descriptor(program, digits_test.x[0], kinds=(Kind.MATMUL,)) == matmuls
