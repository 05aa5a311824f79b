"""The integer golden model's operations, each checked on hand-worked or independently computed values."""

import numpy as np
import pytest
import torch

from compiler.ir import golden

from compiler import ir


def _neuron(theta, sign=1, bias=0, frac=0, leak_shift=1):
    theta = np.atleast_2d(np.array(theta, dtype=np.int64))
    c = theta.shape[0]
    return ir.Neuron("n", "x", theta.shape[1], np.full(c, sign, np.int64), np.full(c, bias, np.int64),
                     frac, theta, leak_shift)


def test_neuron_levels_count_thresholds_reached():
    op = _neuron([[2, 4, 6, 8]])
    x = np.array([-5, 0, 1, 2, 3, 4, 7, 8, 100]).reshape(1, 1, -1, 1)
    levels, _ = golden.neuron(x, op)
    assert levels.ravel().tolist() == [0, 0, 0, 1, 1, 2, 3, 4, 4]


def test_neuron_leak_is_an_arithmetic_shift_and_reset_is_hard():
    # T = 4, one binary neuron with threshold 10, tau = 2: H = V - (V >> 1) + X
    op = _neuron([[10]])
    x = np.array([7, 7, -9, 9]).reshape(1, 4, 1, 1)
    levels, membrane = golden.neuron(x, op)
    # t0: H = 7 (V=7); t1: 7 - 3 + 7 = 11 -> spike, V = 0; t2: -9 (V=-9); t3: -9 - (-5) + 9 = 5
    assert membrane.ravel().tolist() == [7, 11, -9, 5]
    assert levels.ravel().tolist() == [0, 1, 0, 0]


def test_neuron_input_conversion_sign_frac_bias():
    op = _neuron([[0]], sign=-1, bias=3, frac=2)
    _, membrane = golden.neuron(np.array([2]).reshape(1, 1, 1, 1), op)
    assert membrane.item() == -(2 << 2) + 3


@pytest.mark.parametrize("value,expected", [(5, 3), (4, 2), (3, 2), (-3, -1), (-5, -2), (-6, -3)])
def test_requant_rounds_half_up(value, expected):
    # (x * 1 + 0 + 1) >> 1 is x / 2 rounded half up (towards +inf), also for negative x
    op = ir.Requant("r", "x", np.array([1]), np.array([0]), shift=1, frac=0, saturate=None)
    assert golden.requant(np.array([[value]]), op).item() == expected


def test_requant_saturates():
    op = ir.Requant("r", "x", np.array([3]), np.array([0]), shift=0, frac=0, saturate=4)
    assert golden.requant(np.array([[-10], [1], [10]]), op).ravel().tolist() == [-8, 3, 7]


def test_patch_conv_matches_torch_conv():
    rng = np.random.default_rng(1)
    w = rng.integers(-8, 8, size=(5, 3, 2, 2)).astype(np.int64)
    x = rng.integers(0, 256, size=(4, 3, 6, 6)).astype(np.int64)
    op = ir.PatchConv("stem", "x", w, 4, timesteps=2)
    got = golden.patch_conv(x, op)
    ref = torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(), stride=2)
    ref = ref.flatten(2).transpose(1, 2).numpy().astype(np.int64)       # [B, N, O], n = row-major patch
    assert got.shape == (4, 2, 9, 5)
    assert (got[:, 0] == ref).all() and (got[:, 1] == ref).all()


def test_linear_attention_matches_float_reference():
    rng = np.random.default_rng(2)
    q, k, v = (rng.integers(0, 5, size=(2, 3, 7, 6)) for _ in range(3))
    got = golden.linear_attention(q, k, v, heads=2)
    ref = np.zeros_like(got)
    for h in range(2):
        s = slice(3 * h, 3 * h + 3)
        kv = np.einsum("btni,btnj->btij", k[..., s], v[..., s])
        ref[..., s] = np.einsum("btni,btij->btnj", q[..., s], kv)
    assert (got == ref).all()


def test_run_traces_every_tensor_and_membranes(digits_graph, digits_test):
    logits, env = golden.run(digits_graph, digits_test.x[:3], trace=True)
    assert logits.shape == (3, 10) and logits.dtype == np.int64
    for op in digits_graph.ops:
        assert op.dst in env
        if isinstance(op, ir.Neuron):
            assert f"{op.name}.membrane" in env
    types = ir.check(digits_graph, integer=True)
    for name, t in types.items():     # every traced value lies in the range the checker derived
        if name in env and name != digits_graph.input_name:
            assert env[name].min() >= t.lo and env[name].max() <= t.hi, name
