"""Lowering float models to the integer IR: the golden model must predict what the float model predicts."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler import ir
from compiler.ir import golden
from compiler.frontend.config import ModelConfig
from compiler.frontend.data import load_dataset
from compiler.flows.lower import lower
from compiler.frontend.quant import SpikeNeuron
from compiler.frontend.to_ir import to_ir
from compiler.frontend.train import predict, train


def test_bundled_model_accuracy_and_agreement(digits_model, digits_graph, digits_test):
    """The promise of examples/digits.pt: >= 95% held-out accuracy, >= 99% float/integer agreement."""
    pf = predict(digits_model, digits_test.x).argmax(1)
    pi = golden.predict(digits_graph, digits_test.x).argmax(1)
    assert len(digits_test.y) == 450
    assert (pf == digits_test.y).mean() >= 0.95
    assert (pi == digits_test.y).mean() >= 0.95
    assert (pf == pi).mean() >= 0.99


def test_lowered_graph_is_integer_only(digits_graph):
    ir.check(digits_graph, integer=True)
    assert not any(isinstance(op, (ir.AffineNeuron, ir.AffineRequant)) for op in digits_graph.ops)
    for op in digits_graph.ops:
        if isinstance(op, ir.Requant):
            assert op.mult.dtype == np.int64 and np.abs(op.mult).max() < 2 ** (ir.MULT_BITS - 1)


def test_frontend_graph_is_refused_as_integer(digits_model):
    graph = to_ir(digits_model)
    ir.check(graph)                                   # a valid float-affine graph
    with pytest.raises(Exception, match="float op left"):
        ir.check(graph, integer=True)


def _spike_levels(model, x):
    """Every SpikeNeuron's output levels, as ``[B, T, N, C]`` integers, keyed by module name."""
    out, hooks = {}, []
    for name, mod in model.named_modules():
        if isinstance(mod, SpikeNeuron):
            hooks.append(mod.register_forward_hook(
                lambda m, i, o, name=name: out.__setitem__(name, (o * m.levels).round().long().numpy())))
    with torch.no_grad():
        model(torch.from_numpy(x))
    for h in hooks:
        h.remove()
    return {k: np.moveaxis(v, 1, 0) for k, v in out.items()}


# which golden tensor holds the spikes of which float neuron
_NEURONS = {"attn.input_sn": "attn.in", "attn.q_sn": "attn.q.sn", "attn.k_sn": "attn.k.sn",
            "attn.v_sn": "attn.v.sn", "mlp.input_sn": "mlp.in", "mlp.hidden_sn": "mlp.fc1.sn"}


def _compare(cfg: ModelConfig, seed: int):
    data = load_dataset("synthetic", cfg, "train", count=96, seed=seed)
    model = train(cfg, data, epochs=0, seed=seed, progress=False)
    graph = lower(model)
    logits_f = predict(model, data.x)
    logits_i, env = golden.run(graph, data.x, trace=True)
    spikes_f = _spike_levels(model, data.x)
    worst = 0.0
    for i in range(cfg.depth):
        for fname, gname in _NEURONS.items():
            f, g = spikes_f[f"blocks.{i}.{fname}"], env[f"block{i}.{gname}"]
            assert f.shape == g.shape
            worst = max(worst, float((f != g).mean()))
    return (logits_f.argmax(1) == logits_i.argmax(1)).mean(), worst


configs = st.fixed_dictionaries(dict(
    input=st.sampled_from(["image", "events"]),
    image_size=st.sampled_from([4, 6, 8]),
    channels=st.integers(1, 3),
    classes=st.integers(2, 7),
    patch=st.sampled_from([1, 2]),
    dim=st.sampled_from([6, 9, 12, 15, 16, 21]),
    depth=st.integers(1, 2),
    heads=st.sampled_from([1, 3]),
    mlp_ratio=st.sampled_from([1.0, 1.5, 2.0]),
    bits=st.sampled_from([2, 3, 4, 8]),
    levels=st.sampled_from([1, 2, 4]),
    timesteps=st.integers(1, 3),
    attention=st.sampled_from(["sdsa1", "linear"]),
    pos_embed=st.booleans(),
)).filter(lambda c: c["dim"] % c["heads"] == 0 and c["image_size"] % c["patch"] == 0).map(lambda c: ModelConfig(**c))


@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs.filter(lambda c: c.timesteps == 1), seed=st.integers(0, 3))
def test_folding_is_exact_for_the_same_accumulators(cfg, seed):
    """Each folded op, fed the golden model's own accumulators, computes what its float form computes:
    neurons exactly (``a * ACC + b >= thr`` in float64), residual requantizations within one step of 1/256
    (the 18-bit multiplier's rounding). This isolates every pass from the propagation of earlier flips."""
    data = load_dataset("synthetic", cfg, "train", count=64, seed=seed)
    model = train(cfg, data, epochs=0, seed=seed, progress=False)
    affine = to_ir(model)
    _, env = golden.run(lower(model), data.x, trace=True)
    for op in affine.ops:
        if isinstance(op, ir.AffineNeuron):
            u = env[op.src] * op.a + op.b
            expected = sum((u >= t).astype(np.int64) for t in ir.neuron_thresholds(op.levels))
            assert np.array_equal(expected, env[op.name]), op.name
        elif isinstance(op, ir.AffineRequant) and op.frac is not None:
            expected = np.floor((env[op.src] * op.a + op.b) * 2.0 ** op.frac + 0.5)
            if op.saturate is not None:
                expected = np.clip(expected, -(1 << (op.saturate - 1)), (1 << (op.saturate - 1)) - 1)
            assert np.abs(env[op.name] - expected).max() <= 1, op.name


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs, seed=st.integers(0, 3))
def test_random_configurations_agree_with_float_model(cfg, seed):
    """Random valid configurations lower to a checked integer graph whose spikes match the float model's.

    The neurons' folding is exact at T = 1, but a residual branch's 18-bit multiplier can move a value by one
    step of 1/256 where the float model rounds the other way, and with state the leak of a neuron fed by an
    accumulator rounds on a 2**-12 grid: a rare spike flips, and later layers inherit the flip. A lowering bug
    flips far more (one seen during development: 3.5% of a layer, 81% agreement); the exactness of each
    pass on its own is the test above. Measured: up to 1.1% of a layer at T = 1 (8-bit weights, 64 tokens)."""
    agreement, worst_layer = _compare(cfg, seed)
    assert worst_layer <= (0.03 if cfg.timesteps == 1 else 0.05), worst_layer
    assert agreement >= 0.9


@pytest.mark.parametrize("kw", [
    dict(dim=27, heads=3, bits=3, levels=2, timesteps=3, attention="sdsa1"),
    dict(dim=24, heads=3, bits=2, levels=1, timesteps=2, image_size=12, channels=3, patch=3, classes=5),
    dict(dim=16, heads=2, bits=8, levels=4, timesteps=3, input="events", depth=2),
])
def test_named_configurations_agree(kw):
    agreement, worst_layer = _compare(ModelConfig(**kw), seed=0)
    assert agreement >= 0.97 and worst_layer <= 0.01


def test_thresholds_are_clamped_into_the_reachable_range(digits_graph):
    types = ir.check(digits_graph, integer=True)
    for op in digits_graph.ops:
        if isinstance(op, ir.Neuron):
            lo, hi = ir.neuron_input_range(op, types[op.src])
            assert op.theta.min() >= min(lo, lo << op.leak_shift)
            assert op.theta.max() <= max(hi, hi << op.leak_shift) + 1
