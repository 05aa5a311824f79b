"""The grid ops (Tokenize, Conv, MaxPool): the golden model against torch's float64 conv2d / max_pool2d (exact
on small integers), the checker's type rules and refusals, and their metrics."""

import copy

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from compiler import ir
from compiler.errors import UserError
from compiler.ir import golden, metrics


def _graph(ops, shape, lo, hi, timesteps, kind="events"):
    return ir.Graph("x", ir.TensorType(shape, lo, hi), kind, ops, ops[-1].dst,
                    {"timesteps": timesteps, "levels": 4})


def _on_tokens(op, t, h, w, c, lo, hi):
    """A graph computing ``op`` on tokens ``tok`` [T, H*W, C]: frames [T, C, H, W] in, a Tokenize, then ``op``."""
    return _graph([ir.Tokenize("tok", "x", t), op], (t, c, h, w), lo, hi, t)


def _to_nchw(x, h, w):
    """[B, T, H*W, C] -> float64 [B*T, C, H, W] (token n = y * W + x)."""
    b, t, _, c = x.shape
    return torch.from_numpy(x.reshape(b * t, h, w, c)).permute(0, 3, 1, 2).double()


def _from_nchw(y, b, t):
    """float64 [B*T, C, Ho, Wo] -> int64 [B, T, Ho*Wo, C]."""
    bt, c, ho, wo = y.shape
    out = y.permute(0, 2, 3, 1).reshape(b, t, ho * wo, c).numpy()
    assert np.array_equal(out, np.round(out))
    return out.astype(np.int64)


_RANGES = {"spikes": (0, 4), "binary": (0, 1), "signed": (-8, 7), "pixels": (0, 255)}


@st.composite
def conv_cases(draw):
    k = draw(st.integers(1, 4))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    stride = draw(st.integers(1, 3))
    padding = draw(st.integers(0, k - 1))
    assume(ir.conv_out(h, k, stride, padding) >= 1 and ir.conv_out(w, k, stride, padding) >= 1)
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cg, og = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    if draw(st.booleans()):                                 # depthwise: groups = channels = outputs
        groups, cg, og = draw(st.integers(1, 5)), 1, 1
    bits = draw(st.sampled_from([2, 3, 4, 8]))
    lo, hi = _RANGES[draw(st.sampled_from(sorted(_RANGES)))]
    b, t = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    weight = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=(groups * og, cg, k, k)).astype(np.int64)
    x = rng.integers(lo, hi + 1, size=(b, t, h * w, groups * cg)).astype(np.int64)
    op = ir.Conv("conv", "tok", weight, bits, h, w, stride, padding, groups)
    return op, x, lo, hi


@settings(max_examples=50, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.filter_too_much])
@given(case=conv_cases())
def test_conv_matches_torch_conv2d(case):
    op, x, lo, hi = case
    b, t, _, c = x.shape
    got = golden.conv(x, op)
    ref = F.conv2d(_to_nchw(x, op.height, op.width), torch.from_numpy(op.weight).double(), stride=op.stride,
                   padding=op.padding, groups=op.groups)
    assert np.array_equal(got, _from_nchw(ref, b, t))
    assert got.shape == (b, t, op.out_height * op.out_width, op.weight.shape[0]) and got.dtype == np.int64
    # the checker's type: the output grid and a range that holds every value
    types = ir.infer_types(_on_tokens(op, t, op.height, op.width, c, lo, hi), integer=True)
    out = types["conv"]
    assert out.shape == got.shape[1:]
    assert out.lo <= got.min() and got.max() <= out.hi


@st.composite
def pool_cases(draw):
    k = draw(st.integers(1, 4))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    stride = draw(st.integers(1, 3))
    padding = draw(st.integers(0, k // 2))
    assume(ir.conv_out(h, k, stride, padding) >= 1 and ir.conv_out(w, k, stride, padding) >= 1)
    lo, hi = draw(st.sampled_from([(0, 1), (0, 4), (2, 4)]))
    b, t, c = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.integers(lo, hi + 1, size=(b, t, h * w, c)).astype(np.int64)
    return ir.MaxPool("pool", "tok", h, w, k, stride, padding), x, lo, hi


@settings(max_examples=50, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.filter_too_much])
@given(case=pool_cases())
def test_max_pool_matches_torch_max_pool2d(case):
    op, x, lo, hi = case
    b, t, _, c = x.shape
    got = golden.max_pool(x, op)
    # torch pads with -inf; zero padding is the same on non-negative inputs (every window holds an input)
    ref = F.max_pool2d(_to_nchw(x, op.height, op.width), op.kernel, op.stride, op.padding)
    assert np.array_equal(got, _from_nchw(ref, b, t))
    types = ir.infer_types(_on_tokens(op, t, op.height, op.width, c, lo, hi), integer=True)
    assert types["pool"].shape == got.shape[1:]
    assert types["pool"].lo <= got.min() and got.max() <= types["pool"].hi


def test_tokenize_is_row_major_and_repeats_images():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(2, 3, 4, 5)).astype(np.uint8)          # [B, C, H, W]
    got = golden.tokenize(img.astype(np.int64), ir.Tokenize("tok", "x", 3))
    assert got.shape == (2, 3, 20, 3)
    for y in range(4):
        for x in range(5):
            assert (got[:, :, y * 5 + x, :] == img[:, None, :, y, x]).all()
    ev = rng.integers(0, 2, size=(2, 3, 2, 4, 5))                           # [B, T, C, H, W]
    got = golden.tokenize(ev, ir.Tokenize("tok", "x", 3))
    assert (got[:, :, 2 * 5 + 1, :] == ev[:, :, :, 2, 1]).all()
    g = _graph([ir.Tokenize("tok", "x", 3)], (2, 4, 5), 0, 255, 3, kind="image")
    assert ir.infer_types(g)["tok"] == ir.TensorType((3, 20, 2), 0, 255)


def test_conv_range_counts_the_zero_padding():
    """Inputs in [2, 3] with padding: a border output also sums zeros, so 0 lies within the range."""
    op = ir.Conv("conv", "tok", np.ones((1, 1, 3, 3), np.int64), 2, 3, 3, 1, 1)
    t = ir.infer_types(_on_tokens(op, 1, 3, 3, 1, 2, 3))["conv"]
    assert (t.lo, t.hi) == (0, 27)
    got = golden.conv(np.full((1, 1, 9, 1), 2), op)
    assert got[0, 0, 0, 0] == 8 and got[0, 0, 4, 0] == 18        # a corner sees 4 inputs, the centre 9
    op.padding = 0                                               # no padding: every window is 9 inputs
    t = ir.infer_types(_on_tokens(op, 1, 3, 3, 1, 2, 3))["conv"]
    assert (t.lo, t.hi) == (18, 27)


def _stem(**conv):
    """A valid graph: an 8 x 6 image, tokenized, then a conv (keyword arguments replace its defaults)."""
    args = dict(name="conv", src="tok", weight=np.ones((4, 2, 3, 3), np.int64), bits=4, height=8, width=6,
                stride=2, padding=1, groups=1)
    args.update(conv)
    return _graph([ir.Tokenize("tok", "x", 2), ir.Conv(**args)], (2, 8, 6), 0, 255, 2, kind="image")


def test_stem_graph_types():
    types = ir.infer_types(_stem(), integer=True)
    assert types["conv"].shape == (2, 4 * 3, 4)
    assert (types["conv"].lo, types["conv"].hi) == (0, 18 * 255)


@pytest.mark.parametrize("changes,message", [
    (dict(height=7), "48 tokens do not form a 7 x 6 grid"),
    (dict(weight=np.ones((4, 2, 3, 2), np.int64)), "not square"),
    (dict(weight=np.ones((4, 3, 3, 3), np.int64)), "does not fit input"),
    (dict(weight=np.ones((3, 1, 3, 3), np.int64), groups=2), "does not fit input"),
    (dict(weight=np.ones((4, 1, 3, 3), np.int64), groups=3), "does not fit input"),
    (dict(weight=np.ones((4, 2, 3, 3), np.int64), groups=0), "does not fit input"),
    (dict(weight=np.ones((4, 2, 3), np.int64)), r"int64 array \[O, C/G, k, k\]"),
    (dict(weight=np.ones((4, 2, 3, 3))), "int64"),
    (dict(weight=np.full((4, 2, 3, 3), 8, np.int64)), "outside the signed 4-bit range"),
    (dict(padding=3), "padding 3 must be 0..2"),
    (dict(padding=-1), "padding -1 must be 0..2"),
    (dict(stride=0), "stride must be a positive integer"),
    (dict(weight=np.ones((4, 2, 9, 9), np.int64), padding=0), "larger than the 8 x 6 grid"),
    (dict(src="x"), "reads the graph.s input directly"),
])
def test_conv_checker_refuses(changes, message):
    with pytest.raises(ir.IRError, match=message) as info:
        ir.infer_types(_stem(**changes))
    assert "conv (Conv)" in str(info.value)
    with pytest.raises(UserError, match="cannot be lowered"):
        ir.check(_stem(**changes))


def _pool_graph(lo=0, **pool):
    args = dict(name="pool", src="tok", height=4, width=4, kernel=3, stride=2, padding=1)
    args.update(pool)
    return _on_tokens(ir.MaxPool(**args), 1, 4, 4, 3, lo, 4)


@pytest.mark.parametrize("changes,message", [
    (dict(lo=-1), "not non-negative"),
    (dict(padding=2), "padding 2 must be 0..1"),
    (dict(kernel=0), "kernel 0 must be at least 1"),
    (dict(kernel=6, padding=0), "larger than the 4 x 4 grid"),
    (dict(width=5), "16 tokens do not form a 4 x 5 grid"),
    (dict(src="x"), "reads the graph.s input directly"),
    (dict(stride=-2), "stride must be a positive integer"),
])
def test_max_pool_checker_refuses(changes, message):
    ir.infer_types(_pool_graph())
    with pytest.raises(ir.IRError, match=message):
        ir.infer_types(_pool_graph(**changes))


def test_tokenize_checker_refuses():
    g = _stem()
    g.ops[0].timesteps = 3
    with pytest.raises(ir.IRError, match="timesteps 3 differ"):
        ir.infer_types(g)
    g = _stem()
    g.ops.append(ir.Tokenize("tok2", "conv", 2))
    with pytest.raises(ir.IRError, match="only the graph's input is tokenized"):
        ir.infer_types(g)
    g = _graph([ir.Tokenize("tok", "x", 2)], (3, 1, 8, 6), 0, 1, 2)        # 3 frames for T = 2
    with pytest.raises(ir.IRError, match="neither an image"):
        ir.infer_types(g)


def test_conv_reach_counts_every_window():
    for size, k, s, p in [(7, 3, 2, 1), (5, 1, 1, 0), (6, 4, 3, 3), (4, 3, 1, 2), (9, 7, 2, 3)]:
        out = ir.conv_out(size, k, s, p)
        brute = np.zeros(size, np.int64)
        for o in range(out):
            for d in range(k):
                if 0 <= o * s + d - p < size:
                    brute[o * s + d - p] += 1
        assert np.array_equal(metrics.conv_reach(size, k, s, p), brute)


def test_conv_metrics_count_synapses_of_events():
    g = _stem()
    g.ops.append(ir.MaxPool("pool", "conv", 4, 3, 2, 2, 1))
    g.output = "pool"
    # all-ones input: every real synapse is effective, the image is convolved once
    x = np.ones((3, 2, 8, 6), np.uint8)
    rows, _ = metrics.layer_stats(g, x)
    conv = next(r for r in rows if r.name == "conv")
    assert conv.kind == "MAC" and conv.effective_ops == conv.dense_ops
    ref = F.conv2d(torch.ones(1, 2, 8, 6, dtype=torch.float64), torch.ones(4, 2, 3, 3, dtype=torch.float64),
                   stride=2, padding=1)
    assert conv.dense_ops == float(ref.sum())        # the ones-conv counts the (input, output) pairs
    x[:, 0] = 0
    rows, _ = metrics.layer_stats(g, x)
    assert next(r for r in rows if r.name == "conv").effective_ops == conv.dense_ops / 2


def test_golden_run_executes_the_grid_ops():
    g = copy.deepcopy(_stem(padding=0, stride=1, weight=np.ones((2, 1, 2, 2), np.int64), groups=2))
    g.ops.append(ir.MaxPool("pool", "conv", 7, 5, 3, 2, 1))
    g.output = "pool"
    x = np.random.default_rng(3).integers(0, 2, size=(2, 2, 8, 6)).astype(np.uint8)
    out, env = golden.run(g, x, trace=True)
    types = ir.check(g, integer=True)
    for name in ("tok", "conv", "pool"):
        assert env[name].shape[1:] == types[name].shape
    ref = F.max_pool2d(F.conv2d(torch.from_numpy(x).double(), torch.ones(2, 1, 2, 2, dtype=torch.float64),
                                groups=2), 3, 2, 1)
    assert np.array_equal(out[:, 0], _from_nchw(ref, 2, 1)[:, 0]) and np.array_equal(out[:, 0], out[:, 1])
