# amaranth: UnusedElaboratable=no
"""PatchConvUnit (hdl/pixel_conv.py) against golden.patch_conv, bit for bit, in the Amaranth simulator."""

from __future__ import annotations


import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.ir import golden

from compiler import ir
from hdl.pixel_conv import PatchConvUnit
from sim.streams import simulate

FAST = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def patch_order(frame: np.ndarray, p: int) -> list[int]:
    """The pixels of a ``[C, H, W]`` frame token by token, each token's in ``(c, dy, dx)`` order."""
    c, h, w = frame.shape
    patches = frame.reshape(c, h // p, p, w // p, p).transpose(1, 3, 0, 2, 4).reshape(-1, c * p * p)
    return patches.reshape(-1).tolist()


def run_case(weight, bits, frames, *, lanes, pixel_bits=8, multiplier="auto", stall=0.0, seed=0, ecp5=False):
    """Stream ``frames [F, C, H, W]`` through a PatchConvUnit; compare each frame's groups with the golden ACC."""
    O, C, p, _ = weight.shape
    F, _, H, W = frames.shape
    N = (H // p) * (W // p)
    unit = PatchConvUnit.from_op(ir.PatchConv("stem", "x", weight, bits, F), lanes=lanes, tokens=N,
                                 pixel_bits=pixel_bits, multiplier=multiplier, ecp5=ecp5)
    expect = golden.patch_conv(frames[None], ir.PatchConv("stem", "x", weight, bits, F))[0]     # [F, N, O]
    I = C * p * p
    beats = [{"pixel": v, "last": int(k % I == I - 1)}
             for f in range(F) for k, v in enumerate(patch_order(frames[f], p))]
    G = unit.groups
    order = [(f, n, g) for f in range(F) for n in range(N) for g in range(G)]
    out, cycles = simulate(unit, {"i": beats}, len(order), stall=stall, seed=seed)
    for got, (f, n, g) in zip(out, order):
        want = [int(expect[f, n, g * lanes + j]) if g * lanes + j < O else 0 for j in range(lanes)]
        assert (got.group, got.token, got.last) == (g, n, int(n == N - 1 and g == G - 1))
        assert [int(v) for v in got.values] == want, f"frame {f} token {n} group {g}"
    return unit, cycles, len(beats)


def random_case(rng, O, C, p, grid, bits, frames, pixel_bits=8):
    weight = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), (O, C, p, p))
    weight[rng.random(weight.shape) < 0.1] = -(1 << (bits - 1))
    top = (1 << pixel_bits) - 1
    x = rng.integers(0, top + 1, (frames, C, grid * p, grid * p))
    x[rng.random(x.shape) < 0.1] = top
    x[rng.random(x.shape) < 0.1] = 0
    return weight, x


@FAST
@given(seed=st.integers(0, 2**32 - 1), O=st.integers(1, 9), C=st.integers(1, 3), p=st.integers(1, 3),
       grid=st.integers(1, 3), bits=st.sampled_from([2, 3, 4, 8]), P=st.integers(1, 5),
       multiplier=st.sampled_from(["dsp", "lut"]), stall=st.sampled_from([0.0, 0.3, 0.6]))
def test_random_images(seed, O, C, p, grid, bits, P, multiplier, stall):
    rng = np.random.default_rng(seed)
    weight, x = random_case(rng, O, C, p, grid, bits, 2)         # two images back to back
    run_case(weight, bits, x, lanes=P, multiplier=multiplier, stall=stall, seed=seed)


@pytest.mark.parametrize("multiplier", ["dsp", "lut"])
def test_extreme_pixels_and_weights(multiplier):
    """All pixels 255 against the most negative and most positive weights: the accumulator's full range."""
    O, C, p, bits = 4, 2, 2, 4
    weight = np.empty((O, C, p, p), np.int64)
    weight[0], weight[1], weight[2], weight[3] = -8, 7, 0, 1
    weight[2, 0] = -8
    x = np.full((1, C, 4, 4), 255)
    x[0, :, :2, :2] = 0
    unit, _, _ = run_case(weight, bits, x, lanes=3, multiplier=multiplier, stall=0.3)
    assert unit.acc_width == 15      # 8 * -8 * 255 = -16320 and 8 * 7 * 255 = 14280


@pytest.mark.parametrize("bits", [2, 4])
def test_event_frames(bits):
    """Binary event frames (pixel_bits 1), one frame per time step, through the same datapath."""
    rng = np.random.default_rng(bits)
    weight, x = random_case(rng, 6, 2, 2, 3, bits, 3, pixel_bits=1)
    unit, _, _ = run_case(weight, bits, x, lanes=4, pixel_bits=1, stall=0.4, seed=1)
    assert unit.multiplier == "lut"


def test_throughput():
    """Without stalls a token takes G * I cycles (pixel input is not the bottleneck)."""
    rng = np.random.default_rng(5)
    weight, x = random_case(rng, 8, 1, 2, 4, 4, 1)             # I = 4, G = 2, N = 16
    unit, cycles, _ = run_case(weight, 4, x, lanes=4)
    work = unit.groups * unit.fan_in * 16
    assert cycles <= work + 4 * unit.fan_in + 12
    # its own formula (I + N * G * I), and the pipeline's latency to the output
    assert unit.frame_cycles() <= cycles <= unit.frame_cycles() + unit.LATENCY + 3
    weight, x = random_case(rng, 3, 1, 1, 4, 8, 1)             # I = 1, G = 1: one group per cycle
    unit, cycles, beats = run_case(weight, 8, x, lanes=3, multiplier="dsp")
    assert cycles <= beats + 14
    assert unit.frame_cycles() <= cycles <= unit.frame_cycles() + unit.LATENCY + 3


def test_ecp5_structure():
    """The ECP5 build (registered MULT18X18D, DP16KD block RAMs) simulated with behavioural models."""
    rng = np.random.default_rng(6)
    weight, x = random_case(rng, 7, 3, 3, 2, 8, 2)             # I = 27: weights 54 words, pixels 64 words
    run_case(weight, 8, x, lanes=4, multiplier="dsp", stall=0.3, ecp5="model")


@pytest.mark.parametrize("kwargs, message", [
    ({"weight": np.zeros((2, 1, 2, 3), np.int64)}, "weight must have shape [O, C, p, p]"),
    ({"bits": 1}, "bits must be at least 2, not 1"),
    ({"weight": np.full((2, 1, 2, 2), 9)}, "weights outside the signed 4-bit range [-8, 7]"),
    ({"multiplier": "booth"}, "multiplier must be one of ('auto', 'dsp', 'lut'), not 'booth'"),
    ({"ecp5": "yes"}, "ecp5 must be None, False, True or 'model', not 'yes'"),
])
def test_validation(kwargs, message):
    args = dict(weight=np.zeros((2, 1, 2, 2), np.int64), bits=4, lanes=2, tokens=4)
    args.update(kwargs)
    with pytest.raises((TypeError, ValueError)) as info:
        PatchConvUnit(**args)
    assert message in str(info.value)
