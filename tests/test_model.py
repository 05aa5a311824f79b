"""The float model's quantizers and neurons compute what the integer semantics say they compute."""

import numpy as np
import pytest
import torch

from compiler.frontend import checkpoint
from compiler.frontend.config import ModelConfig
from compiler.frontend.quant import LSQ, FixedPoint, SpikeNeuron, weight_range
from compiler.ir import neuron_thresholds
from compiler.frontend.train import predict


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_lsq_forward_is_integer_times_scale(bits):
    w = torch.randn(6, 5)
    q = LSQ(bits, w)
    w_int, alpha = q.integer(w)
    lo, hi = weight_range(bits)
    assert w_int.min() >= lo and w_int.max() <= hi
    assert torch.allclose(q(w).double(), w_int.double() * alpha[:, None], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("levels", [1, 2, 4])
def test_multispike_levels_are_thresholds_reached(levels):
    u = torch.linspace(-1, 2, 301)
    out = SpikeNeuron(levels, 1)(u[None])[0] * levels
    ref = sum((u >= t).float() for t in neuron_thresholds(levels))
    assert torch.equal(out.round(), ref)


def test_grid_leak_keeps_membranes_on_the_grid():
    grid = 2.0 ** -8
    sn = SpikeNeuron(2, 1, grid)
    x = torch.tensor([[0.2], [-0.3], [0.21]]).div(grid).round().mul(grid)
    v = x[0]                                        # below the first threshold (0.25): kept
    h = sn._leak(v) + x[1]
    assert float(h / grid) == round(float(h / grid))
    assert float(sn._leak(torch.tensor(-3 * grid)) / grid) == -3 - np.floor(-3 / 2)


def test_fixed_point_rounds_half_up_and_saturates():
    fp = FixedPoint(frac=1, width=4)                # step 0.5, range [-4, 3.5]
    x = torch.tensor([0.25, -0.25, 0.74, 100.0, -100.0])
    assert fp(x).tolist() == [0.5, 0.0, 0.5, 3.5, -4.0]


def test_checkpoint_round_trip(tmp_path, digits_model, digits_test):
    path = tmp_path / "copy.pt"
    checkpoint.save(digits_model, path)
    loaded = checkpoint.load(path)
    assert loaded.cfg == digits_model.cfg and loaded.dataset == "digits"
    x = digits_test.x[:32]
    assert np.array_equal(predict(loaded, x), predict(digits_model, x))
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "qsd-transformer" and payload["version"] == 1
    assert ModelConfig.from_dict(payload["config"]) == digits_model.cfg
