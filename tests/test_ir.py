"""The IR checker refuses graphs that break its rules, naming the op at fault."""

import copy

import numpy as np
import pytest

from compiler import ir


def _broken(graph, name, **changes):
    g = copy.deepcopy(graph)
    op = g.op(name)
    for k, v in changes.items():
        setattr(op, k, v(getattr(op, k)) if callable(v) else v)
    return g


@pytest.mark.parametrize("name,changes,message", [
    ("block0.attn.q", {"weight": lambda w: w + 100}, "outside the signed 4-bit range"),
    ("block0.attn.q", {"weight": lambda w: w.astype(np.float64)}, "int64"),
    ("block0.attn.q", {"weight": lambda w: w[:, :-1]}, "does not fit input"),
    ("block0.attn.q.sn", {"theta": lambda t: t[:, ::-1].copy()}, "non-decreasing"),
    ("block0.attn.q.sn", {"sign": lambda s: s * 2}, "sign must be"),
    ("block0.attn.q.sn", {"levels": 3}, "levels 3"),
    ("block0.attn.proj.rq", {"mult": lambda m: m * (1 << 20)}, "multiplier exceeds"),
    ("block0.attn.proj.add", {"width": 8}, "exceeds 8 bits"),
    ("block0.attn.k", {"src": "nowhere"}, "before it is defined"),
    ("block0.attn.qkv", {"heads": 5}, "heads do not divide"),
])
def test_checker_refuses(digits_graph, name, changes, message):
    with pytest.raises(ir.IRError, match=message) as info:
        ir.infer_types(_broken(digits_graph, name, **changes), integer=True)
    assert name in str(info.value)


def test_checker_refuses_a_duplicate_tensor(digits_graph):
    g = copy.deepcopy(digits_graph)
    g.ops.append(copy.deepcopy(g.ops[0]))
    with pytest.raises(ir.IRError, match="defined twice"):
        ir.infer_types(g)


def test_tensor_type_bits():
    assert ir.TensorType((1,), 0, 4).bits == 3
    assert ir.TensorType((1,), 0, 255).bits == 8
    assert ir.TensorType((1,), -128, 127).bits == 8
    assert ir.TensorType((1,), -129, 0).bits == 9
    assert ir.TensorType((1,), -1, 128).bits == 9
