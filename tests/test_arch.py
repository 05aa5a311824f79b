"""The architectures (``arch``: flat, metaformer, spikformer): configuration, checkpoints, and lowering to the
integer IR, whose golden model must compute what the float model computes, layer by layer."""

import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler import ir
from compiler.errors import UserError
from compiler.flows.lower import lower
from compiler.frontend import checkpoint
from compiler.frontend.config import ModelConfig
from compiler.frontend.data import load_dataset
from compiler.frontend.model import SEP_BITS, QSDTransformer
from compiler.frontend.quant import IntQuant, SpikeNeuron
from compiler.frontend.to_ir import to_ir
from compiler.frontend.train import predict, train
from compiler.ir import golden

# float module name (after the block prefix) -> golden tensor name
_SUFFIXES = {"attn.input_sn": "attn.in", "attn.q_sn": "attn.q.sn", "attn.k_sn": "attn.k.sn",
             "attn.v_sn": "attn.v.sn", "attn.attn_sn": ("attn.sn", "attn.kv"), "mlp.input_sn": "mlp.in",
             "mlp.hidden_sn": "mlp.fc1.sn", "sep.input_sn": "sep.in", "sep.pw1_sn": "sep.pw1.sn",
             "sep.dw_q": "sep.dw.rq", "channel.input_sn": "channel.in", "channel.hidden_sn": "channel.conv1.sn"}


def _ir_names(module: str) -> tuple[str, ...]:
    """The golden tensor(s) that hold a float neuron's levels (or a SepConv quantizer's integers)."""
    fixed = {"head_sn": "head.in", "sps.rpe_sn": "sps.rpe.in"}
    if module in fixed:
        return (fixed[module],)
    for pattern, repl in ((r"^stages\.(\d+)\.down_sn$", r"stage\1.down.in"), (r"^sps\.sns\.(\d+)$", r"sps.conv\1.sn")):
        if re.match(pattern, module):
            return (re.sub(pattern, repl, module),)
    m = re.match(r"^(?:stages\.(\d+)\.blocks\.(\d+)|blocks\.(\d+))\.(.*)$", module)
    assert m, module
    prefix = f"stage{m[1]}.block{m[2]}" if m[1] is not None else f"block{m[3]}"
    targets = _SUFFIXES[m[4]]
    return tuple(f"{prefix}.{t}" for t in ((targets,) if isinstance(targets, str) else targets))


def _float_levels(model, x):
    """Every SpikeNeuron's levels and every IntQuant's integers, ``[B, T, N, C]``, by module name."""
    out, hooks = {}, []
    for name, mod in model.named_modules():
        if isinstance(mod, SpikeNeuron):
            hooks.append(mod.register_forward_hook(
                lambda m, i, o, name=name: out.__setitem__(name, (o * m.levels).round().long().numpy())))
        elif isinstance(mod, IntQuant):
            hooks.append(mod.register_forward_hook(
                lambda m, i, o, name=name: out.__setitem__(name, (o / m.scale()).round().long().numpy())))
    with torch.no_grad():
        model(torch.from_numpy(x))
    for h in hooks:
        h.remove()
    return {k: np.moveaxis(v, 1, 0) for k, v in out.items()}


def _compare(cfg: ModelConfig, seed: int, count: int = 64):
    """(float/integer agreement, worst fraction of a layer's values that differ)."""
    data = load_dataset("synthetic", cfg, "train", count=count, seed=seed)
    model = train(cfg, data, epochs=0, seed=seed, progress=False)
    graph = lower(model)
    logits_i, env = golden.run(graph, data.x, trace=True)
    logits_f = predict(model, data.x)
    worst = 0.0
    for name, f in _float_levels(model, data.x).items():
        found = [t for t in _ir_names(name) if t in env]
        assert len(found) == 1, (name, found)
        g = env[found[0]]
        assert f.shape == g.shape, name
        worst = max(worst, float((f != g).mean()))
    return (logits_f.argmax(1) == logits_i.argmax(1)).mean(), worst


@st.composite
def arch_configs(draw):
    arch = draw(st.sampled_from(["metaformer", "spikformer"]))
    stages = draw(st.integers(1, 3))
    dims = tuple(draw(st.sampled_from([4, 6, 8])) for _ in range(stages))
    depths = tuple(draw(st.integers(0, 1)) for _ in range(stages if arch == "metaformer" else 1))
    return ModelConfig(
        arch=arch, dims=dims, depths=depths,
        input=draw(st.sampled_from(["image", "events"])), image_size=draw(st.integers(4, 11)),
        channels=draw(st.integers(1, 2)), classes=draw(st.integers(2, 5)), heads=draw(st.sampled_from([1, 2])),
        mlp_ratio=draw(st.sampled_from([1.0, 2.0])), bits=draw(st.sampled_from([2, 3, 4, 8])),
        levels=draw(st.sampled_from([1, 2, 4])), timesteps=draw(st.integers(1, 2)),
        attention=draw(st.sampled_from(["sdsa1", "linear"])), head=draw(st.sampled_from(["spikes", "membrane"])))


@settings(max_examples=16, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=arch_configs(), seed=st.integers(0, 3))
def test_random_architectures_agree_with_float_model(cfg, seed):
    """Random metaformer / spikformer configurations lower to a checked integer graph whose every neuron (and
    SepConv integer) matches the float model's but for rare rounding flips (tests/test_lower.py says which)."""
    agreement, worst_layer = _compare(cfg, seed)
    assert worst_layer <= (0.03 if cfg.timesteps == 1 else 0.05), worst_layer
    assert agreement >= 0.9


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=arch_configs().filter(lambda c: c.timesteps == 1), seed=st.integers(0, 3))
def test_folding_is_exact_for_the_same_accumulators(cfg, seed):
    """Fed the golden model's own accumulators, each folded neuron computes exactly what its float affine form
    computes, each requantization (the residual stream's, the SepConv's 4-bit integers) within one step."""
    data = load_dataset("synthetic", cfg, "train", count=32, seed=seed)
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


@pytest.mark.parametrize("kw", [
    dict(arch="metaformer", image_size=12, dims=(8, 12, 16), depths=(1, 1, 1), heads=2),
    dict(arch="metaformer", image_size=10, dims=(6, 8), depths=(2, 1), heads=2, timesteps=2, levels=1,
         attention="sdsa1", input="events", channels=2),
    dict(arch="spikformer", image_size=12, dims=(8, 16), depths=(2,), heads=4, bits=8),
    dict(arch="spikformer", image_size=9, dims=(4, 8, 8), depths=(1,), heads=2, timesteps=3, levels=2,
         head="membrane"),
])
def test_named_architectures_agree(kw):
    agreement, worst_layer = _compare(ModelConfig(**kw), seed=0, count=96)
    assert agreement >= 0.95 and worst_layer <= 0.02


def test_metaformer_graph_has_the_issue_13_shape():
    cfg = ModelConfig(arch="metaformer", image_size=28, dims=(4, 6, 8, 8), depths=(1, 1, 1, 1), heads=2)
    graph = to_ir(QSDTransformer(cfg).eval())
    types = ir.infer_types(graph)
    convs = {op.name: op for op in graph.ops if isinstance(op, ir.Conv)}
    stem = convs["stage0.down"]
    assert (stem.kernel, stem.stride, stem.padding, stem.height) == (7, 2, 3, 28)
    assert types["stage0.down.rq"].shape == (1, 14 * 14, 4)
    down = convs["stage1.down"]
    assert (down.kernel, down.stride, down.padding, down.height) == (3, 2, 1, 14)
    assert [types[f"stage{i}.down.rq"].shape[1] for i in range(4)] == [196, 49, 16, 4]
    dw = convs["stage0.block0.sep.dw"]
    assert dw.groups == 8 and dw.kernel == 7 and dw.weight.shape == (8, 1, 7, 7)
    assert graph.op("stage0.block0.sep.dw.rq").saturate == SEP_BITS
    assert isinstance(graph.op("stage0.block0.sep.pw2"), ir.Dense)          # the 4-bit integers feed it
    assert "stage2.block0.attn.qkv" in types and "stage1.block0.channel.conv2" in convs
    assert cfg.grids() == [(14, 14), (7, 7), (4, 4), (2, 2)] and cfg.tokens == 4


def test_spikformer_graph_pools_spikes():
    cfg = ModelConfig(arch="spikformer", image_size=28, dims=(8, 16, 32), depths=(1,), heads=4)
    graph = to_ir(QSDTransformer(cfg).eval())
    types = ir.infer_types(graph)
    pools = [op for op in graph.ops if isinstance(op, ir.MaxPool)]
    assert [(p.height, p.kernel, p.stride, p.padding) for p in pools] == [(28, 3, 2, 1), (14, 3, 2, 1)]
    assert isinstance(graph.op(pools[0].src), ir.AffineNeuron)
    assert types["sps.conv2.rq"].shape == (1, 49, 32) and cfg.tokens == 49
    assert isinstance(graph.op("sps.rpe"), ir.Conv) and isinstance(graph.op("sps.rpe.add"), ir.Add)


def test_membrane_head_pools_the_residual_stream():
    cfg = ModelConfig(arch="spikformer", image_size=8, dims=(4, 8), depths=(1,), heads=2, head="membrane")
    graph = to_ir(QSDTransformer(cfg).eval())
    pool = graph.op("head.pool")
    assert isinstance(graph.op(pool.src), ir.Add)
    assert all(op.name != "head.in" for op in graph.ops)


def test_mnist_models_of_each_arch_lower(tmp_path):
    """MNIST-sized models with the default stages (metaformer 16-128, spikformer 16-64) at --epochs 0."""
    for arch in ("metaformer", "spikformer"):
        cfg = ModelConfig(arch=arch, image_size=28)
        data = load_dataset("synthetic", cfg, "train", count=64)
        model = train(cfg, data, epochs=0, progress=False)
        graph = lower(model)
        agree = (predict(model, data.x[:32]).argmax(1) == golden.predict(graph, data.x[:32]).argmax(1)).mean()
        assert agree >= 0.9


def test_training_moves_every_parameter_kind():
    cfg = ModelConfig(arch="metaformer", image_size=8, dims=(4, 8), depths=(1, 1), heads=2)
    data = load_dataset("synthetic", cfg, "train", count=192)
    torch.manual_seed(0)
    before = {k: v.clone() for k, v in QSDTransformer(cfg).state_dict().items()}
    model = train(cfg, data, epochs=2, seed=0, batch_size=64, progress=False)     # six steps
    after = model.state_dict()
    for key in ("stages.0.blocks.0.sep.dw_q.step", "stages.0.blocks.0.sep.scale.weight",
                "stages.0.blocks.0.sep.dw.conv.weight", "stages.1.blocks.0.attn_layer_scale.weight"):
        assert not torch.equal(before[key], after[key]), key
    graph = lower(model)
    assert (predict(model, data.x).argmax(1) == golden.predict(graph, data.x).argmax(1)).mean() >= 0.9


@pytest.mark.parametrize("kw", [
    dict(arch="metaformer", image_size=8, dims=(4, 8), depths=(1, 1), heads=2),
    dict(arch="spikformer", image_size=8, dims=(4, 8), depths=(1,), heads=2, head="membrane", timesteps=2),
])
def test_checkpoint_round_trip(tmp_path, kw):
    cfg = ModelConfig(**kw)
    data = load_dataset("synthetic", cfg, "train", count=32)
    model = train(cfg, data, epochs=0, progress=False, dataset="synthetic")
    path = tmp_path / "m.pt"
    checkpoint.save(model, path)
    loaded = checkpoint.load(path)
    assert loaded.cfg == cfg
    assert np.array_equal(predict(loaded, data.x), predict(model, data.x))
    payload = torch.load(path, weights_only=True)
    assert payload["config"]["arch"] == kw["arch"] and payload["config"]["dims"] == list(kw["dims"])


def test_flat_config_and_checkpoint_are_unchanged(digits_model):
    """A flat model's configuration (and so its checkpoint) has exactly the keys it always had."""
    keys = {"input", "image_size", "channels", "classes", "patch", "dim", "depth", "heads", "mlp_ratio", "bits",
            "levels", "timesteps", "leak_shift", "attention", "attn_scale", "pos_embed"}
    assert set(ModelConfig().to_dict()) == keys
    assert set(digits_model.cfg.to_dict()) == keys and digits_model.cfg.arch == "flat"
    assert set(ModelConfig(head="membrane").to_dict()) == keys | {"head"}
    assert not any(op for op in lower(digits_model).ops if isinstance(op, (ir.Conv, ir.MaxPool, ir.Tokenize)))


def test_default_stages_and_lists():
    assert ModelConfig(arch="metaformer").dims == (16, 32, 64, 128)
    assert ModelConfig(arch="metaformer").depths == (1, 1, 2, 1)
    assert ModelConfig(arch="spikformer").depths == (1,)
    assert ModelConfig(arch="metaformer", dims=(8, 8, 16)).depths == (1, 1, 1)
    assert ModelConfig(arch="spikformer", dims=(8, 16)).depths == (1,)
    cfg = ModelConfig.from_dict({"arch": "metaformer", "dims": [8, 8], "depths": [1, 0]})
    assert cfg.dims == (8, 8) and cfg.conv_stages == 1 and ModelConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("kw,message", [
    (dict(arch="convnext"), "arch must be one of flat, metaformer, spikformer"),
    (dict(head="mean"), "head must be one of spikes, membrane"),
    (dict(dims=(8,)), "dims and depths are for the metaformer and spikformer"),
    (dict(arch="metaformer", dims=(8, 8), depths=(1,)), "one depth per stage: 2 dims, 1 depths"),
    (dict(arch="metaformer", depths=(1, 1)), "dims must have 1..6 entries, not 0"),
    (dict(arch="spikformer", dims=(8, 8), depths=(1, 1)), "spikformer takes one depth"),
    (dict(arch="metaformer", dims=(8, 0), depths=(1, 1)), "every entry of dims must be 1..1024"),
    (dict(arch="metaformer", dims=(8, 8), depths=(1, -1)), "every entry of depths must be 0..16"),
    (dict(arch="metaformer", dims=(8,) * 7, depths=(1,) * 7), "dims must have 1..6 entries"),
    (dict(arch="metaformer", dims=(8, 6), depths=(1, 1), heads=4), "heads 4 must divide every transformer"),
    (dict(arch="spikformer", dims=(8, "x"), depths=(1,)), "dims must be a list of integers"),
])
def test_bad_architectures_are_refused(kw, message):
    with pytest.raises(UserError, match=message):
        ModelConfig(**kw)


def test_a_conv_stage_needs_no_heads():
    """heads only constrain transformer stages: a 6-wide conv stage with 4 heads is fine."""
    ModelConfig(arch="metaformer", dims=(6, 8), depths=(1, 1), heads=4)


_values = st.recursive(st.none() | st.booleans() | st.integers(-3, 2000) | st.floats() | st.text(max_size=12)
                       | st.sampled_from(["flat", "metaformer", "spikformer", "spikes", "membrane"]),
                       lambda inner: st.lists(inner, max_size=7), max_leaves=10)


@settings(max_examples=50, deadline=None, derandomize=True)
@given(data=st.fixed_dictionaries({}, optional={"arch": _values, "dims": _values, "depths": _values, "head": _values,
                                                "heads": st.sampled_from([1, 2, 3, 4])}))
def test_any_stage_fields_are_a_config_or_a_user_error(data):
    """Whatever a checkpoint's config says about the stages, the answer is a valid config or a UserError."""
    try:
        cfg = ModelConfig.from_dict(data)
    except UserError as exc:
        assert "\n" not in str(exc)
        return
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    if cfg.arch != "flat":
        assert len(cfg.grids()) == (len(cfg.dims) if cfg.arch == "metaformer" else 1)


def test_parse_int_list_for_the_command_line():
    from compiler.frontend.config import parse_int_list
    assert parse_int_list("16,32, 64,128", "--dims") == (16, 32, 64, 128)
    assert parse_int_list("2", "--depths") == (2,)
    for bad in ("", "16,,32", "a,b", "1.5", "16;32"):
        with pytest.raises(UserError, match="--dims must be comma-separated integers"):
            parse_int_list(bad, "--dims")
