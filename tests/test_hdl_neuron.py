# amaranth: UnusedElaboratable=no
"""NeuronUnit (hdl/neuron.py) against golden.neuron, bit for bit, in the Amaranth simulator."""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.hdl import Fragment
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.ir import golden

from compiler import ir
from hdl.neuron import NeuronUnit
from sim.streams import simulate

FAST = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_op(sign, bias, frac, theta, leak):
    return ir.Neuron("n", "x", theta.shape[1], np.asarray(sign, np.int64), np.asarray(bias, np.int64), frac,
                     np.asarray(theta, np.int64), leak)


def run_case(op, x, *, lanes, in_width, stall=0.0, seed=0, shuffle=True, stateful=None, ecp5=False):
    """Stream ``x [T, N, O]`` through a NeuronUnit built from ``op``; compare every beat with the golden model."""
    T, N, O = x.shape
    stateful = T > 1 if stateful is None else stateful
    unit = NeuronUnit.from_op(op, lanes=lanes, in_width=in_width, tokens=N, timesteps=T if stateful else 1,
                              ecp5=ecp5)
    expect = golden.neuron(x[None], op)[0][0]
    if not stateful:                                       # every step is a first step
        expect = np.stack([golden.neuron(x[None, t:t + 1], op)[0][0, 0] for t in range(T)])
    G = unit.groups
    rng = random.Random(seed)
    order = []
    for t in range(T):
        pairs = [(n, g) for n in range(N) for g in range(G)]
        if shuffle:
            rng.shuffle(pairs)
        order += [(t, n, g) for n, g in pairs]
    lo, hi = -(1 << (in_width - 1)), (1 << (in_width - 1)) - 1
    beats = []
    for k, (t, n, g) in enumerate(order):
        values = [int(x[t, n, g * lanes + j]) if g * lanes + j < O else rng.randint(lo, hi) for j in range(lanes)]
        beats.append({"group": g, "token": n, "first": int(t == 0 or not stateful), "values": values,
                      "last": int(k % (N * G) == N * G - 1)})
    out, cycles = simulate(unit, {"i": beats}, len(beats), stall=stall, seed=seed)
    for beat, got, (t, n, g) in zip(beats, out, order):
        want = [int(expect[t, n, g * lanes + j]) if g * lanes + j < O else 0 for j in range(lanes)]
        assert (got.group, got.token, got.last) == (g, n, beat["last"])
        assert [int(v) for v in got.levels] == want, f"t={t} n={n} g={g}"
    return unit, cycles, len(beats)


def ceil_div(a, b):
    return -(-a // b)


def random_params(rng, O, D, in_width, frac, *, signs=(-1, 0, 1)):
    sign = rng.choice(signs, O)
    span = (1 << (in_width - 1)) << frac
    bias = rng.integers(-span, span + 1, O)
    theta = np.sort(rng.integers(-span, 2 * span + 1, (O, D)), axis=1)
    return sign, bias, theta


@FAST
@given(seed=st.integers(0, 2**32 - 1), O=st.integers(1, 11), P=st.integers(1, 5), N=st.integers(1, 3),
       T=st.integers(1, 4), D=st.sampled_from([1, 2, 4]), in_width=st.integers(2, 12),
       frac=st.sampled_from([0, 0, 3, 8, 12]), leak=st.integers(0, 3), stall=st.sampled_from([0.0, 0.3, 0.6]))
def test_random(seed, O, P, N, T, D, in_width, frac, leak, stall):
    rng = np.random.default_rng(seed)
    sign, bias, theta = random_params(rng, O, D, in_width, frac)
    lo, hi = -(1 << (in_width - 1)), (1 << (in_width - 1)) - 1
    x = rng.integers(lo, hi + 1, (T, N, O))
    x[rng.random(x.shape) < 0.1] = lo
    x[rng.random(x.shape) < 0.1] = hi
    run_case(make_op(sign, bias, frac, theta, leak), x, lanes=P, in_width=in_width, stall=stall, seed=seed)


def test_leak_and_reset_over_time():
    """T = 6, several tokens: membranes accumulate, leak (negative ones too) and reset."""
    rng = np.random.default_rng(7)
    O, N, T, D, iw, frac = 7, 4, 6, 4, 8, 2
    sign = np.array([1, -1, 1, -1, 0, 1, -1])
    bias = np.array([-40, 40, 0, 0, 100, -300, 17])
    theta = np.sort(rng.integers(-200, 1200, (O, D)), axis=1)
    x = rng.integers(-128, 128, (T, N, O))
    op = make_op(sign, bias, frac, theta, 2)
    levels, membrane = golden.neuron(x[None], op)
    assert membrane.min() < 0 and (levels[0, 1:] > 0).any() and (levels[0, 1:] == 0).any()
    run_case(op, x, lanes=3, in_width=iw, stall=0.3, seed=3)


def test_same_address_back_to_back():
    """N * G = 1: each step's beat needs the membrane the previous beat is still computing."""
    rng = np.random.default_rng(1)
    sign, bias, theta = random_params(rng, 3, 2, 6, 1)
    x = rng.integers(-32, 32, (9, 1, 3))
    unit, cycles, beats = run_case(make_op(sign, bias, 1, theta, 1), x, lanes=4, in_width=6)
    assert cycles >= beats * NeuronUnit.LATENCY          # it waited for every write
    sign, bias, theta = random_params(rng, 5, 4, 6, 0)
    run_case(make_op(sign, bias, 0, theta, 3), rng.integers(-32, 32, (5, 2, 5)), lanes=3, in_width=6, stall=0.2)


def test_out_of_order_aliases():
    """Beats in a different random order each step, many tokens: the hazard check compares only the
    token's low bits, so aliases stall; a true conflict (back to back across a step) must still wait."""
    rng = np.random.default_rng(9)
    sign, bias, theta = random_params(rng, 2, 2, 8, 1)
    x = rng.integers(-128, 128, (4, 24, 2))
    run_case(make_op(sign, bias, 1, theta, 1), x, lanes=2, in_width=8, seed=4)
    run_case(make_op(sign, bias, 1, theta, 1), x, lanes=2, in_width=8, seed=5, stall=0.3)


def test_residual_neuron_constants():
    """The residual-stream flavour (sign 1, bias 0, one theta row for all channels): constants, no memory."""
    rng = np.random.default_rng(2)
    O, D = 10, 4
    theta = np.tile([ceil_div((2 * k - 1) * 256, 2 * D) for k in range(1, D + 1)], (O, 1))
    x = rng.integers(-32768, 32768, (3, 3, O))
    x[0, 0, :4] = [-32768, 32767, 0, 31]
    op = make_op(np.ones(O), np.zeros(O), 0, theta, 1)
    unit, _, _ = run_case(op, x, lanes=4, in_width=16, stall=0.2)
    names = {name for _, name, _ in Fragment.get(unit, None).subfragments}
    assert "membrane" in names and not names & {"sign", "bias", "theta0"}


def test_extreme_thresholds_and_signs():
    """Thresholds far outside the membrane range (always / never reached), repeated thresholds, sign 0."""
    rng = np.random.default_rng(4)
    O = 6
    sign = np.array([1, -1, 0, 0, 1, -1])
    bias = np.array([0, 5, -3, 3, 1 << 20, -(1 << 20)])
    theta = np.array([[-(1 << 40)] * 4, [1 << 40] * 4, [-3, -3, 0, 1 << 40], [-(1 << 40), 3, 3, 4],
                      [0, 1, 1, 1 << 21], [-(1 << 21), -(1 << 20), 0, 0]])
    x = rng.integers(-64, 64, (4, 2, O))
    x[:, 0, :] = -64
    x[:, 1, :] = 63
    for stateful in (True, False):
        run_case(make_op(sign, bias, 4, theta, 1), x, lanes=4, in_width=7, stall=0.3, stateful=stateful)


def test_throughput():
    """Without stalls one beat per cycle (plus the pipeline's latency) when N * G covers the pipeline."""
    rng = np.random.default_rng(5)
    sign, bias, theta = random_params(rng, 8, 2, 8, 0)
    x = rng.integers(-128, 128, (3, 8, 8))
    _, cycles, beats = run_case(make_op(sign, bias, 0, theta, 1), x, lanes=4, in_width=8, shuffle=False)
    assert cycles <= beats + NeuronUnit.LATENCY + 4


def test_ecp5_structure():
    """The ECP5 build (membrane and parameters in DP16KD block RAMs) simulated with behavioural models:
    36 membrane words in one bank; 896 words of 9 bits (one 1024 x 18 block, ``hdl.ecp5.bram_tiling``) with
    40 groups of parameters."""
    rng = np.random.default_rng(8)
    sign, bias, theta = random_params(rng, 10, 4, 8, 3)
    x = rng.integers(-128, 128, (3, 9, 10))
    run_case(make_op(sign, bias, 3, theta, 1), x, lanes=3, in_width=8, stall=0.3, ecp5="model")
    sign, bias, theta = random_params(rng, 40, 2, 6, 0)
    x = rng.integers(-32, 32, (2, 14, 40))
    unit, _, _ = run_case(make_op(sign, bias, 0, theta, 2), x, lanes=1, in_width=6, ecp5="model")
    assert unit.groups == 40
    names = {name for _, name, _ in Fragment.get(unit, None).subfragments}
    assert {"membrane_b0c0", "theta0_b0c0", "sign_b0c0"} <= names


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), in_width=st.integers(1, 24), frac=st.integers(0, 24), leak=st.integers(0, 8),
       T=st.integers(1, 4), D=st.sampled_from([1, 2, 4]))
def test_widths_within_ir_bounds(seed, in_width, frac, leak, T, D):
    """The datapath's membrane range lies within the IR's ``membrane_range`` and holds every golden membrane."""
    rng = np.random.default_rng(seed)
    O = 6
    sign, bias, theta = random_params(rng, O, D, in_width, frac)
    op = make_op(sign, bias, frac, theta, leak)
    lo, hi = -(1 << (in_width - 1)), (1 << (in_width - 1)) - 1
    unit = NeuronUnit.from_op(op, lanes=4, in_width=in_width, tokens=2, timesteps=T)
    hlo, hhi = unit.membrane_range
    ilo, ihi = ir.membrane_range(op, ir.TensorType((T, 2, O), lo, hi), T)
    assert ilo <= hlo and hhi <= ihi
    x = rng.integers(lo, hi + 1, (T, 2, O))
    x[:, 0] = np.where(sign > 0, hi, lo)
    x[:, 1] = np.where(sign > 0, lo, hi)
    membrane = golden.neuron(x[None], op)[1]
    assert hlo <= membrane.min() and membrane.max() <= hhi


@pytest.mark.parametrize("kwargs, message", [
    ({"lanes": 0}, "lanes must be at least 1, not 0"),
    ({"levels": 2.0}, "levels must be an integer, not 2.0"),
    ({"sign": [1, 2, 0]}, "sign must hold -1, 0 or 1, not [0, 1, 2]"),
    ({"theta": [[2, 1], [0, 0], [0, 0]]}, "theta must be non-decreasing"),
    ({"bias": [0, 0]}, "do not match 3 channels"),
    ({"stateful": 1}, "stateful must be a bool, not 1"),
    ({"in_range": (-200, 0)}, "in_range must lie within signed 8 bits, not (-200, 0)"),
])
def test_validation(kwargs, message):
    args = dict(lanes=2, in_width=8, levels=2, sign=[1, -1, 0], bias=[0, 1, 2], frac=0,
                theta=[[0, 1], [2, 3], [4, 5]], leak_shift=1, tokens=2, stateful=True)
    args.update(kwargs)
    with pytest.raises((TypeError, ValueError)) as info:
        NeuronUnit(**args)
    assert message in str(info.value)
