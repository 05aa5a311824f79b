"""The hardware plan: engines, buffers, lanes, identity, and the buffer word layout."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.errors import UserError
from compiler.hw.plan import Buffer, build_plan, model_id


def test_bundled_model_plan(digits_graph):
    plan = build_plan(digits_graph)
    assert plan.lanes == 16 and plan.tokens == 16 and plan.timesteps == 1 and plan.classes == 10
    kinds = [s.kind for s in plan.stages]
    assert kinds == ["stem", "residual_neuron", "dense_neuron", "dense_neuron", "dense_neuron", "linear_attention",
                     "dense_residual", "residual_neuron", "dense_neuron", "dense_residual", "residual_neuron", "head"]
    # every IR op is executed by exactly one stage
    covered = [name for s in plan.stages for name in s.ops]
    assert sorted(covered) == sorted(op.name for op in digits_graph.ops)
    # the attention output is written d = C / heads lanes at a time, everything else P lanes
    assert plan.buffers["block0.attn.sn"].lanes == 8
    assert plan.buffers["block0.mlp.fc1.sn"].lanes == 16 and plan.buffers["block0.mlp.fc1.sn"].groups == 8
    assert plan.buffers["stem.rq"].kind == "residual" and plan.buffers["stem.rq"].signed
    assert plan.stages[0].once          # an image's stem runs at the first step only
    json.dumps(plan.to_dict())
    text = str(plan)
    assert all(s.name in text for s in plan.stages)


def test_lanes_must_divide_the_width(digits_graph):
    assert build_plan(digits_graph, lanes=4).lanes == 4
    with pytest.raises(UserError, match="must divide the model width 32"):
        build_plan(digits_graph, lanes=12)


def test_model_id_names_the_parameters(digits_graph):
    a = model_id(digits_graph)
    assert a == build_plan(digits_graph).model_id
    op = digits_graph.op("head")
    saved = op.weight.copy()
    try:
        op.weight[0, 0] ^= 1
        assert model_id(digits_graph) != a
    finally:
        op.weight[...] = saved


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.integers(1, 20), st.integers(1, 8), st.integers(1, 17), st.booleans(), st.data())
def test_buffer_pack_unpack(tokens, channels, lanes, width, signed, data):
    buf = Buffer("x", "spikes", tokens, channels, lanes, width, signed)
    lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
    values = np.array(data.draw(st.lists(st.integers(lo, hi), min_size=tokens * channels,
                                         max_size=tokens * channels))).reshape(tokens, channels)
    words = buf.pack(values)
    assert len(words) == buf.depth and all(0 <= int(w) < 1 << buf.word_width for w in words)
    assert np.array_equal(buf.unpack(words), values)
