# amaranth: UnusedElaboratable=no
"""RequantUnit and ResidualAdd (hdl/requant.py) against the golden model, bit for bit, in the Amaranth simulator."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.ir import golden

from compiler import ir
from hdl.requant import RequantUnit, ResidualAdd
from sim.streams import simulate

FAST = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def signed_range(width):
    return -(1 << (width - 1)), (1 << (width - 1)) - 1


def run_requant(op, x, *, lanes, in_width, stall=0.0, seed=0, frames=1, ecp5=False):
    """Stream ``x [N, O]`` (``frames`` times) through a RequantUnit built from ``op``; compare with golden."""
    N, O = x.shape
    unit = RequantUnit.from_op(op, lanes=lanes, in_width=in_width, tokens=N, ecp5=ecp5)
    expect = golden.requant(x, op)
    G = unit.groups
    order = [(n, g) for _ in range(frames) for n in range(N) for g in range(G)]
    rng = random.Random(seed)
    lo, hi = signed_range(in_width)
    beats = [{"group": g, "token": n,
              "values": [int(x[n, g * lanes + j]) if g * lanes + j < O else rng.randint(lo, hi) for j in range(lanes)],
              "last": int(n == N - 1 and g == G - 1)} for n, g in order]
    out, cycles = simulate(unit, {"i": beats}, len(beats), stall=stall, seed=seed)
    for beat, got, (n, g) in zip(beats, out, order):
        want = [int(expect[n, g * lanes + j]) if g * lanes + j < O else 0 for j in range(lanes)]
        assert (got.group, got.token, got.last) == (g, n, beat["last"])
        assert [int(v) for v in got.values] == want, f"n={n} g={g}"
    return unit, cycles, len(beats)


def extremes(rng, shape, width):
    lo, hi = signed_range(width)
    x = rng.integers(lo, hi + 1, shape)
    x[rng.random(shape) < 0.15] = lo
    x[rng.random(shape) < 0.15] = hi
    return x


@FAST
@given(seed=st.integers(0, 2**32 - 1), O=st.integers(1, 9), P=st.integers(1, 4), N=st.integers(1, 3),
       in_width=st.integers(2, 18), mult_width=st.integers(2, 18), shift=st.integers(0, 32),
       saturate=st.sampled_from([None, 4, 8, 16, 24]), per_token=st.booleans(),
       stall=st.sampled_from([0.0, 0.3, 0.6]))
def test_requant_random(seed, O, P, N, in_width, mult_width, shift, saturate, per_token, stall):
    rng = np.random.default_rng(seed)
    mult = extremes(rng, O, mult_width)
    span = 1 << (in_width + mult_width - 1)
    bias = rng.integers(-span, span + 1, (N, O) if per_token else O)
    op = ir.Requant("r", "x", mult, bias, shift, 0, saturate)
    run_requant(op, extremes(rng, (N, O), in_width), lanes=P, in_width=in_width, stall=stall, seed=seed)


def test_saturation_both_ends_and_rounding():
    """Clamps at both ends, exact halves rounding up (negative ones too), shift 0 and no clamp."""
    mult = np.array([1, -1, 3, 131071, -131072, 7])
    bias = np.array([[0, 0, 5, 0, 0, -3], [100, -100, 0, 1, -1, 0]])
    x = np.array([[-8192, 8191, -3, 8191, 8191, 1], [8191, -8192, 3, -8192, -8192, -1]])
    for shift, saturate in [(1, 8), (4, 16), (0, None), (0, 12), (17, 8)]:
        op = ir.Requant("r", "x", mult, bias, shift, 0, saturate)
        y = golden.requant(x, op)
        if saturate:
            lo, hi = signed_range(saturate)
            assert shift == 17 or (y.min() == lo and y.max() == hi)
        run_requant(op, x, lanes=4, in_width=14, stall=0.3, seed=shift)


def test_wide_multiplier_lanes():
    """A 35-bit multiplier (a near-zero BN variance): two multipliers in its lane only."""
    rng = np.random.default_rng(3)
    O, P, N, iw = 7, 3, 2, 14
    mult = rng.integers(-(1 << 17), 1 << 17, O)
    mult[4] = (1 << 34) - 1                   # lane 1, group 1
    mult[0] = -(1 << 34)                      # lane 0
    bias = rng.integers(-(1 << 40), 1 << 40, (N, O))
    op = ir.Requant("r", "x", mult, bias, 1, 0, 16)
    unit, _, _ = run_requant(op, extremes(rng, (N, O), iw), lanes=P, in_width=iw, stall=0.3, frames=2)
    assert unit.multipliers == 2 + 2 + 1
    op = ir.Requant("r", "x", mult, bias, 20, 0, None)
    run_requant(op, extremes(rng, (N, O), iw), lanes=P, in_width=iw)


def test_wide_input():
    """Inputs wider than 18 bits: two limbs of the input, four products with a wide multiplier.

    (The golden model's int64 bounds the product to 62 bits, as the IR checker does.)"""
    rng = np.random.default_rng(4)
    for iw, mw in [(19, 18), (30, 30), (35, 24), (24, 35)]:
        mult = extremes(rng, 5, mw)
        bias = rng.integers(-(1 << 50), 1 << 50, 5)
        op = ir.Requant("r", "x", mult, bias, 9, 0, 40 if iw > 30 else None)
        unit, _, _ = run_requant(op, extremes(rng, (3, 5), iw), lanes=2, in_width=iw, stall=0.2)
        assert unit.multipliers == 2 * (2 if mw <= 18 else 4)


def test_requant_throughput():
    rng = np.random.default_rng(5)
    op = ir.Requant("r", "x", extremes(rng, 8, 18), rng.integers(-99, 99, 8), 6, 0, 16)
    unit, cycles, beats = run_requant(op, extremes(rng, (20, 8), 12), lanes=2, in_width=12)
    assert cycles <= beats + unit.latency + 4


def test_ecp5_structure():
    """The ECP5 build (registered MULT18X18D, DP16KD block RAMs) simulated with behavioural models: a wide
    multiplier and a wide input (four limb products), and a per-token bias of 2 x 300 words (two banks)."""
    rng = np.random.default_rng(6)
    mult = extremes(rng, 5, 18)
    mult[2] = (1 << 30) + 12345
    op = ir.Requant("r", "x", mult, rng.integers(-(1 << 40), 1 << 40, 5), 13, 0, 24)
    unit, _, _ = run_requant(op, extremes(rng, (4, 5), 22), lanes=3, in_width=22, stall=0.3, ecp5="model")
    assert unit.multipliers == 2 + 4 + 2
    N, O = 300, 4
    op = ir.Requant("r", "x", extremes(rng, O, 16), rng.integers(-(1 << 20), 1 << 20, (N, O)), 6, 0, 16)
    run_requant(op, extremes(rng, (N, O), 12), lanes=3, in_width=12, ecp5="model")


@pytest.mark.parametrize("kwargs, message", [
    ({"mult": [1 << 40, 0, 0]}, "multiplier width 42 needs more than two 18-bit multiplier limbs"),
    ({"in_width": 40}, "in_width 40 needs more than two 18-bit multiplier limbs"),
    ({"bias": [[0, 0, 0]] * 3}, "bias shape (3, 3) does not match 3 channels"),
    ({"shift": -1}, "shift must be at least 0, not -1"),
    ({"out_width": 4}, "out_width 4 cannot hold the output range"),
    ({"saturate": "16"}, "saturate must be an integer, not '16'"),
])
def test_requant_validation(kwargs, message):
    args = dict(lanes=2, in_width=8, mult=[3, -5, 7], bias=[0, 1, 2], shift=1, saturate=None, tokens=2)
    args.update(kwargs)
    with pytest.raises((TypeError, ValueError)) as info:
        RequantUnit(**args)
    assert message in str(info.value)


def run_add(a, b, *, lanes, in_width, width, stall=0.0, seed=0):
    """``a, b [N, O]`` through a ResidualAdd; compare with the golden ``_sat(a + b, width)``."""
    N, O = a.shape
    unit = ResidualAdd.from_op(ir.Add("y", "a", "b", width), lanes=lanes, channels=O, tokens=N, in_width=in_width)
    expect = golden._sat(a + b, width)
    G = unit.groups
    order = [(n, g) for n in range(N) for g in range(G)]

    def beats(x):
        return [{"group": g, "token": n,
                 "values": [int(x[n, g * lanes + j]) if g * lanes + j < O else 0 for j in range(lanes)],
                 "last": int(n == N - 1 and g == G - 1)} for n, g in order]
    out, cycles = simulate(unit, {"a": beats(a), "b": beats(b)}, len(order), stall=stall, seed=seed)
    for got, (n, g) in zip(out, order):
        want = [int(expect[n, g * lanes + j]) if g * lanes + j < O else 0 for j in range(lanes)]
        assert (got.group, got.token, got.last) == (g, n, int(n == N - 1 and g == G - 1))
        assert [int(v) for v in got.values] == want
    return cycles, len(order)


@FAST
@given(seed=st.integers(0, 2**32 - 1), O=st.integers(1, 9), P=st.integers(1, 4), N=st.integers(1, 4),
       in_width=st.integers(2, 18), delta=st.integers(-1, 2), stall=st.sampled_from([0.0, 0.3, 0.6]))
def test_add_random(seed, O, P, N, in_width, delta, stall):
    rng = np.random.default_rng(seed)
    a = extremes(rng, (N, O), in_width)
    b = extremes(rng, (N, O), in_width)
    run_add(a, b, lanes=P, in_width=in_width, width=max(1, in_width + delta), stall=stall, seed=seed)


def test_add_saturates_both_ends():
    a = np.array([[32767, -32768, 20000, -20000, 5, 0]])
    b = np.array([[32767, -32768, 20000, -20000, -7, 0]])
    assert golden._sat(a + b, 16).tolist() == [[32767, -32768, 32767, -32768, -2, 0]]
    run_add(a, b, lanes=4, in_width=16, width=16, stall=0.5)
    cycles, beats = run_add(np.tile(a, (10, 1)), np.tile(b, (10, 1)), lanes=3, in_width=16, width=16)
    assert cycles <= beats + ResidualAdd.LATENCY + 6
