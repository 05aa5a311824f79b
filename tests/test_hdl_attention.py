"""The attention datapaths (``hdl/attention/``) against the integer golden model, bit for bit.

Amaranth simulator benches with random spike maps, random event order, no-op events and random
valid/ready stalls on every stream; several time steps run back to back in one simulation, so every step
also proves that the previous one left the memories clean. One bench runs through cocotb + Verilator
(and more through Icarus, ``tests/test_icarus_attention.py``).
The expectations come from ``golden.run`` on small IR graphs (``_linear_golden``, ``_cospike_golden``).
"""

from __future__ import annotations

import gc
import json
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import ClockDomain, Module, unsigned
from amaranth.sim import Simulator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.ir import golden

from compiler import ir
from hdl.attention import CoSpikeUnit, LinearAttentionUnit
from hdl.attention import ram as attention_ram
from hdl.ecp5 import use_ecp5
from sim.streams import recv, send

TESTS = Path(__file__).resolve().parent


# -- golden expectations ----------------------------------------------------------------------------------

def _selector(channels: int, part: int, parts: int) -> np.ndarray:
    """Dense weights picking channels ``part * C .. part * C + C - 1`` out of ``parts * C``."""
    w = np.zeros((channels, parts * channels), np.int64)
    w[np.arange(channels), part * channels + np.arange(channels)] = 1
    return w


def _graph(n: int, c: int, levels: int, names: str, tail: list, output: str) -> ir.Graph:
    """Input ``x = [Q | K | V]`` (one step), split by selector Dense ops, then ``tail``."""
    split = [ir.Dense(name, "x", _selector(c, i, len(names)), bits=2) for i, name in enumerate(names)]
    graph = ir.Graph("x", ir.TensorType((1, n, len(names) * c), 0, levels), "events", split + tail, output,
                     meta={"timesteps": 1})
    ir.check(graph, integer=True)
    return graph


def _linear_golden(q, k, v, heads: int, levels: int) -> np.ndarray:
    n, c = q.shape
    graph = _graph(n, c, levels, "qkv", [ir.LinearAttention("a", "q", "k", "v", heads)], "a")
    _, env = golden.run(graph, np.concatenate([q, k, v], 1)[None, None], trace=True)
    return env["a"][0, 0]


def _cospike_golden(k, v, levels: int) -> np.ndarray:
    """sdsa1's co-spike counts ``C`` (the accelerator's mask is then a neuron on them and a lane-wise AND in
    the projection's reader)."""
    n, c = k.shape
    graph = _graph(n, c, levels, "kv", [ir.CoSpike("c", "k", "v")], "c")
    _, env = golden.run(graph, np.concatenate([k, v], 1)[None, None], trace=True)
    return env["c"][0, 0, 0]


# -- stimuli ----------------------------------------------------------------------------------------------

def _spikes(rng, n, c, levels, density):
    return (rng.integers(1, levels + 1, (n, c)) * (rng.random((n, c)) < density)).astype(np.int64)


def _events(x, rng, *, order="shuffled", noops=0.0, close_with_noop=False):
    """One frame of events for the spike map ``x`` (``addr = n * C + c``), ``last`` on the final event;
    ``noops``: probability of a level-0 event before each spike; an empty map is one no-op event."""
    n, c = x.shape
    events = [{"addr": int(a), "level": int(x.flat[a]), "last": 0} for a in np.flatnonzero(x)]
    if order == "shuffled":
        rng.shuffle(events)
    out = []
    for e in events:
        while rng.random() < noops:
            out.append({"addr": int(rng.integers(0, n * c)), "level": 0, "last": 0})
        out.append(e)
    if close_with_noop or not out:
        out.append({"addr": int(rng.integers(0, n * c)), "level": 0, "last": 0})
    out[-1]["last"] = 1
    return out


def _simulate(dut, inputs: dict, collect, *, stall=0.0, seed=0):
    """Send each port's frames (``inputs[name]``: a list of event lists, one per step) and run ``collect``."""
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for i, (name, frames) in enumerate(inputs.items()):
        async def producer(ctx, port=getattr(dut, name), frames=frames, i=i):
            for frame in frames:
                await send(ctx, port, frame, stall=stall, rng=random.Random(seed * 31 + i))
        sim.add_testbench(producer, background=True)
    result = []

    async def consumer(ctx):
        result.extend(await collect(ctx))
    sim.add_testbench(consumer)
    sim.run()
    return result


# -- LinearAttentionUnit ----------------------------------------------------------------------------------

def _run_linear(dut: LinearAttentionUnit, steps, *, stall=0.0, seed=0, order="shuffled", noops=0.0,
                close_with_noop=False):
    """Run ``steps`` (a list of ``(q, k, v)``) back to back; return A per step, checking word order."""
    n, h, d = dut._tokens, dut._heads, dut._d
    rng = np.random.default_rng(seed)
    inputs = {name: [_events(step[i], rng, order=order, noops=noops, close_with_noop=close_with_noop)
                     for step in steps] for i, name in enumerate("qkv")}

    async def collect(ctx):
        return [await recv(ctx, dut.o, n * h, stall=stall, rng=random.Random(seed + s))
                for s in range(len(steps))]
    outputs = []
    for words in _simulate(dut, inputs, collect, stall=stall, seed=seed):
        a = np.zeros((n, h * d), np.int64)
        for i, word in enumerate(words):
            assert (word.token, word.head, word.last) == (i // h, i % h, int(i == n * h - 1))
            a[word.token, word.head * d:(word.head + 1) * d] = [word.values[j] for j in range(d)]
        outputs.append(a)
    return outputs


def _check_linear(dut, steps, **kw):
    for (q, k, v), got in zip(steps, _run_linear(dut, steps, **kw)):
        np.testing.assert_array_equal(got, _linear_golden(q, k, v, dut._heads, dut._levels))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tokens=st.integers(1, 5), heads=st.integers(1, 3), d=st.integers(1, 4), levels=st.sampled_from([1, 2, 4]),
       density=st.sampled_from([0.0, 0.25, 0.6, 1.0]), stall=st.sampled_from([0.0, 0.3]),
       order=st.sampled_from(["shuffled", "sorted"]), seed=st.integers(0, 2**16))
def test_linear_attention_matches_golden(tokens, heads, d, levels, density, stall, order, seed):
    rng = np.random.default_rng(seed)
    dut = LinearAttentionUnit(tokens, heads * d, heads, levels, ecp5=False)
    steps = [tuple(_spikes(rng, tokens, heads * d, levels, density) for _ in "qkv") for _ in range(2)]
    _check_linear(dut, steps, stall=stall, seed=seed, order=order, noops=0.1)


@pytest.mark.parametrize("tokens,channels,heads,levels", [
    (4, 8, 2, 4),        # powers of two everywhere: slices, no division stages
    (3, 6, 3, 2),        # a division by C = 6; 3 heads: padded word addresses
    (5, 12, 3, 1),       # binary spikes, a division by C = 12
    (1, 8, 4, 4),        # a single token
    (4, 6, 1, 4),        # heads = 1 (d = 6)
    (3, 5, 5, 4),        # heads = C (d = 1)
])
def test_linear_attention_edge_cases(tokens, channels, heads, levels):
    rng = np.random.default_rng(tokens * 100 + channels)
    zeros = np.zeros((tokens, channels), np.int64)
    full = np.full((tokens, channels), levels, np.int64)
    dut = LinearAttentionUnit(tokens, channels, heads, levels, ecp5=False)
    steps = [
        (zeros, zeros, zeros),                                      # no spikes at all
        (full, full, full),                                         # every spike at the top level
        tuple(_spikes(rng, tokens, channels, levels, 0.5) for _ in "qkv"),
        (full, zeros, full),                                        # K silent: KV = 0
        (zeros, full, full),                                        # Q silent: A = 0
    ]
    _check_linear(dut, steps, stall=0.25, seed=3, noops=0.2, close_with_noop=True)


def test_linear_attention_forwards_every_hazard_distance():
    # Updates of one word back to back and 1..5 cycles apart (no-op events are pipeline bubbles): every
    # forwarding path of the three accumulators, with results that differ if any one is wrong.
    tokens, channels, heads, levels = 4, 8, 2, 4
    rng = np.random.default_rng(5)
    dut = LinearAttentionUnit(tokens, channels, heads, levels, ecp5=False)
    q, k, v = (_spikes(rng, tokens, channels, levels, 0.9) for _ in "qkv")

    def frame(x, key):
        spikes = sorted(np.flatnonzero(x), key=key)
        out = []
        for i, a in enumerate(spikes):
            out += [{"addr": 0, "level": 0, "last": 0}] * (i % 6)
            out.append({"addr": int(a), "level": int(x.flat[a]), "last": 0})
        out[-1]["last"] = 1
        return out
    word = lambda a: (a // channels, (a % channels) // (channels // heads))      # noqa: E731
    inputs = {"v": [frame(v, word)] * 2, "k": [frame(k, lambda a: a % channels)] * 2, "q": [frame(q, word)] * 2}

    async def collect(ctx):
        return [await recv(ctx, dut.o, tokens * heads) for _ in range(2)]
    expected = _linear_golden(q, k, v, heads, levels)
    d = channels // heads
    for words in _simulate(dut, inputs, collect):
        got = np.array([[w.values[j] for j in range(d)] for w in words]).reshape(tokens, channels)
        np.testing.assert_array_equal(got, expected)


def test_linear_attention_results_do_not_depend_on_stalls():
    rng = np.random.default_rng(7)
    dut = LinearAttentionUnit(3, 8, 2, 2, ecp5=False)
    steps = [tuple(_spikes(rng, 3, 8, 2, 0.5) for _ in "qkv") for _ in range(3)]
    calm = _run_linear(dut, steps, seed=1)
    for stall in (0.2, 0.6):
        for a, b in zip(calm, _run_linear(dut, steps, stall=stall, seed=2)):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("ecp5", [False, True])
def test_widths_match_the_ir_and_large_units_elaborate(ecp5):
    graph = _graph(64, 64, 4, "qkv", [ir.LinearAttention("a", "q", "k", "v", 4), ir.CoSpike("c", "k", "v")], "a")
    types = ir.infer_types(graph)
    linear = LinearAttentionUnit(64, 64, 4, 4, ecp5=ecp5)
    cospike = CoSpikeUnit(64, 64, 4, ecp5=ecp5)
    assert linear.acc_width == types["a"].bits and cospike.count_width == types["c"].bits
    assert linear.kv_width == (64 * 4 * 4).bit_length()
    for unit in (linear, cospike):
        rtlil.convert(unit)                             # the block RAM instances are well formed


def test_ram_auto_follows_the_platform():
    assert use_ecp5(None, SimpleNamespace(family="ecp5")) is True
    assert use_ecp5(None, None) is False
    assert use_ecp5(False, SimpleNamespace(family="ecp5")) is False


# -- cycle counts: event-driven cost ----------------------------------------------------------------------

def _step_periods(dut, inputs: dict, steps: int = 2) -> list[int]:
    """Cycles between the ends of consecutive steps (last output word taken), no stalls."""
    ends = []

    async def collect(ctx):
        ctx.set(dut.o.ready, 1)
        t = 0
        while len(ends) < steps:
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            t += 1
            if valid and payload.last:
                ends.append(t)
        return []
    _simulate(dut, {name: [frame] * steps for name, frame in inputs.items()}, collect)
    return [b - a for a, b in zip(ends, ends[1:])]


def _spike_frame(count: int, stride: int = 1, level: int = 1):
    """``count`` spikes (the last one carries ``last``)."""
    return [{"addr": i * stride, "level": level, "last": int(i == count - 1)} for i in range(count)]


def test_linear_attention_cycles_grow_with_spikes_not_with_size():
    tokens, channels, heads = 8, 32, 2                 # N * C * d = 4096 multiply-adds if dense
    dut = LinearAttentionUnit(tokens, channels, heads, 4, ecp5=False)
    periods = {}
    for e in [(1, 1, 1), (9, 1, 1), (1, 9, 1), (1, 1, 9), (40, 25, 60)]:
        frames = {"v": _spike_frame(e[0], 3), "k": _spike_frame(e[1], 5), "q": _spike_frame(e[2], 2)}
        [periods[e]] = _step_periods(dut, frames)
        assert periods[e] == dut.step_cycles(*e)
    base = periods[(1, 1, 1)]
    assert all(periods[e] - base == sum(e) - 3 for e in periods)      # one cycle per event, per frame
    assert base < 100 < tokens * channels * (channels // heads)


def test_cospike_cycles_grow_with_spikes():
    dut = CoSpikeUnit(8, 16, 4, ecp5=False)
    for e in [(1, 1), (12, 1), (1, 30), (20, 20)]:
        assert _step_periods(dut, {"v": _spike_frame(e[0], 3), "k": _spike_frame(e[1], 4)}) == \
            [dut.step_cycles(*e)]


# -- CoSpikeUnit (sdsa1) ----------------------------------------------------------------------------------

def _run_cospike(dut: CoSpikeUnit, steps, *, stall=0.0, seed=0, noops=0.0):
    """Run ``steps`` (a list of ``(k, v)``); return the counts per step, checking word order."""
    words_per_step, lanes = dut._words, dut._lanes
    rng = np.random.default_rng(seed)
    inputs = {"k": [_events(k, rng, noops=noops) for k, _ in steps],
              "v": [_events(v, rng, noops=noops) for _, v in steps]}

    async def collect(ctx):
        return [await recv(ctx, dut.o, words_per_step, stall=stall, rng=random.Random(seed + s))
                for s in range(len(steps))]
    out = []
    for words in _simulate(dut, inputs, collect, stall=stall, seed=seed):
        counts = []
        for i, word in enumerate(words):
            assert (word.group, word.last) == (i, int(i == words_per_step - 1))
            counts += [word.values[j] for j in range(lanes)]
        assert not any(counts[dut._channels:])
        out.append(np.array(counts[:dut._channels]))
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tokens=st.integers(1, 6), channels=st.integers(1, 10), levels=st.sampled_from([1, 2, 4]),
       lanes=st.integers(1, 4), density=st.sampled_from([0.0, 0.3, 0.7, 1.0]), stall=st.sampled_from([0.0, 0.3]),
       seed=st.integers(0, 2**16))
def test_cospike_matches_golden(tokens, channels, levels, lanes, density, stall, seed):
    lanes = min(lanes, channels)
    rng = np.random.default_rng(seed)
    steps = [tuple(_spikes(rng, tokens, channels, levels, density) for _ in "kv") for _ in range(3)]
    counts = _run_cospike(CoSpikeUnit(tokens, channels, levels, lanes=lanes, ecp5=False), steps,
                          stall=stall, seed=seed, noops=0.1)
    for (k, v), got in zip(steps, counts):
        np.testing.assert_array_equal(got, _cospike_golden(k, v, levels))


@pytest.mark.parametrize("tokens,channels,lanes", [(4, 8, 1), (3, 6, 4), (1, 5, 2), (6, 3, 3)])
def test_cospike_edge_cases(tokens, channels, lanes):
    levels = 4
    zeros = np.zeros((tokens, channels), np.int64)
    full = np.full((tokens, channels), levels, np.int64)
    rng = np.random.default_rng(tokens + channels)
    steps = [(zeros, zeros), (full, full), (zeros, full), (full, zeros),
             tuple(_spikes(rng, tokens, channels, levels, 0.5) for _ in "kv")]
    counts = _run_cospike(CoSpikeUnit(tokens, channels, levels, lanes=lanes, ecp5=False), steps,
                          stall=0.3, seed=1, noops=0.2)
    for (k, v), got in zip(steps, counts):
        np.testing.assert_array_equal(got, _cospike_golden(k, v, levels))


def test_cospike_stale_map_never_reads_back():
    # V's map is never swept: a step's entries must read as 0 in every later step, across a full cycle of
    # the step tag (2**tag_width steps) and beyond, while the scrubber catches up with them.
    tokens, channels, levels = 4, 8, 4
    dut = CoSpikeUnit(tokens, channels, levels, ecp5=False)
    full = np.full((tokens, channels), levels, np.int64)
    zeros = np.zeros_like(full)
    steps = [(zeros, full)] + [(full, zeros)] * (2 ** dut.tag_width + 3) + [(full, full)]
    counts = _run_cospike(dut, steps)
    assert all(not c.any() for c in counts[:-1])
    np.testing.assert_array_equal(counts[-1], np.full(channels, tokens * levels * levels))


# -- constructor arguments --------------------------------------------------------------------------------

@pytest.mark.parametrize("make,error,text", [
    (lambda: LinearAttentionUnit(4, 10, 3, 4), ValueError, "heads must divide channels (10), not 3"),
    (lambda: LinearAttentionUnit(0, 8, 2, 4), ValueError, "tokens must be at least 1, not 0"),
    (lambda: LinearAttentionUnit(4, 8, 2, "4"), TypeError, "levels must be an integer, not '4'"),
    (lambda: LinearAttentionUnit(4, 8, 2, 4, level_width=2), ValueError, "level_width must be at least 3, not 2"),
    (lambda: LinearAttentionUnit(4, 8, 2, 4, addr_width=4), ValueError, "addr_width must be at least 5, not 4"),
    (lambda: LinearAttentionUnit(4, 8, 2, 4, ecp5="bram"), ValueError,
     "ecp5 must be None, False, True or 'model', not 'bram'"),
    (lambda: CoSpikeUnit(4, 8, 2, lanes=9), ValueError, "lanes must be at most 8, not 9"),
    (lambda: CoSpikeUnit(4, 8.0, 2), TypeError, "channels must be an integer, not 8.0"),
    (lambda: CoSpikeUnit(4, 8, True), TypeError, "levels must be an integer, not True"),
])
@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_constructor_arguments_are_checked(make, error, text):
    with pytest.raises(error) as info:
        make()
    assert str(info.value) == text
    del info                          # the half-built component dies here, inside the warning filter
    gc.collect()


def test_wider_event_fields_are_accepted():
    rng = np.random.default_rng(11)
    dut = LinearAttentionUnit(3, 4, 2, 2, level_width=4, addr_width=10, ecp5=False)
    steps = [tuple(_spikes(rng, 3, 4, 2, 0.6) for _ in "qkv")]
    _check_linear(dut, steps)


# -- the ECP5 RAM mapping, with behavioural models of the block RAM primitives (ecp5="model") ------------

@pytest.mark.parametrize("width,depth", [(40, 1500), (9, 1000), (3, 3000), (1, 20000), (300, 40)])
def test_ram_block_tiles_read_back_what_was_written(monkeypatch, width, depth):
    monkeypatch.setattr(attention_ram, "LUT4_PER_BRAM", 0)           # every memory in block RAM
    ram = attention_ram.Ram(unsigned(width), depth, "model")
    rng = random.Random(width * depth)
    writes = {rng.randrange(depth): rng.getrandbits(width) for _ in range(60)}
    reads = [rng.choice(list(writes)) for _ in range(80)]
    got = []

    async def bench(ctx):
        for addr, value in writes.items():
            ctx.set(ram.wr_addr, addr)
            ctx.set(ram.wr_data, value)
            ctx.set(ram.wr_en, 1)
            await ctx.tick()
        ctx.set(ram.wr_en, 0)
        pipe = []                      # addresses in the three read stages
        for addr in reads + [None] * 2:
            while rng.random() < 0.3:  # a stalled reader: every stage holds
                ctx.set(ram.rd_en, 0)
                await ctx.tick()
            ctx.set(ram.rd_en, 1)
            ctx.set(ram.rd_addr, addr or 0)
            await ctx.tick()
            pipe.append(addr)
            if len(pipe) >= 3 and pipe[-3] is not None:          # issued three enabled edges ago
                got.append((pipe[-3], ctx.get(ram.rd_data)))
    sim = Simulator(ram)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert len(got) == len(reads)
    assert all(writes[a] == v for a, v in got)


@pytest.mark.parametrize("bram_cost", [0, 10**9])                     # all block RAM / all distributed
def test_linear_attention_on_ecp5_rams(monkeypatch, bram_cost):
    monkeypatch.setattr(attention_ram, "LUT4_PER_BRAM", bram_cost)
    rng = np.random.default_rng(bram_cost % 97)
    dut = LinearAttentionUnit(3, 6, 3, 4, ecp5="model")
    steps = [tuple(_spikes(rng, 3, 6, 4, 0.6) for _ in "qkv") for _ in range(2)]
    _check_linear(dut, steps, stall=0.2, seed=4)


@pytest.mark.parametrize("bram_cost", [0, 10**9])
def test_cospike_on_ecp5_rams(monkeypatch, bram_cost):
    monkeypatch.setattr(attention_ram, "LUT4_PER_BRAM", bram_cost)
    rng = np.random.default_rng(3)
    dut = CoSpikeUnit(5, 6, 2, lanes=2, ecp5="model")
    steps = [tuple(_spikes(rng, 5, 6, 2, 0.6) for _ in "kv") for _ in range(3)]
    for (k, v), got in zip(steps, _run_cospike(dut, steps, stall=0.2)):
        np.testing.assert_array_equal(got, (k * v).sum(0))


# -- cocotb (Verilator here; Icarus in tests/test_icarus_attention.py) ------------------------------------

def _packed_frames(dut, steps, names: str, rng, noops: float) -> dict:
    """Each port's frames as the cocotb benches' packed payloads (``tests/cocotb_attention.py``)."""
    aw, lw = dut.addr_width, dut.level_width
    pack = lambda e: e["addr"] | e["level"] << aw | e["last"] << (aw + lw)      # noqa: E731
    return {name: [[pack(e) for e in _events(step[i], rng, noops=noops)] for step in steps]
            for i, name in enumerate(names)}


def _linear_cocotb_case(dut: LinearAttentionUnit, steps, rng, *, noops=0.1, stall=0.3, seed=5) -> dict:
    """The case of ``linear_attention_matches_golden`` for ``steps`` (a list of ``(q, k, v)``)."""
    return {
        "frames": _packed_frames(dut, steps, "qkv", rng, noops),
        "expected": [_linear_golden(q, k, v, dut._heads, dut._levels).tolist() for q, k, v in steps],
        "tokens": dut._tokens, "heads": dut._heads, "d": dut._d, "acc_width": dut.acc_width,
        "fields": {name: (field.offset, field.width) for name, field in dut.out_layout},
        "stall": stall, "seed": seed,
    }


def _cospike_cocotb_case(dut: CoSpikeUnit, steps, rng, *, noops=0.1, stall=0.3, seed=5) -> dict:
    """The case of ``cospike_matches_golden`` for ``steps`` (a list of ``(k, v)``)."""
    return {
        "frames": _packed_frames(dut, steps, "kv", rng, noops),
        "expected": [(k * v).sum(0).tolist() for k, v in steps],
        "channels": dut._channels, "words": dut._words, "lanes": dut._lanes, "count_width": dut.count_width,
        "fields": {name: (field.offset, field.width) for name, field in dut.out_layout},
        "stall": stall, "seed": seed,
    }


def _run_attention_cocotb(dut, case: dict, bench: str, work: Path, simulator: str) -> None:
    """Run the cocotb ``bench`` of ``tests/cocotb_attention.py`` on ``dut`` as Verilog, in ``simulator``."""
    from sim.cocotb_run import run_cocotb
    path = work / "case.json"
    path.write_text(json.dumps(case))
    run_cocotb(dut, toplevel=bench.removesuffix("_matches_golden"), test_module="cocotb_attention",
               test_dir=TESTS, build_dir=work / "build", simulator=simulator,
               extra_env={"ATTN_CASE": str(path), "COCOTB_TEST_FILTER": bench})


def test_linear_attention_cocotb_verilator(tmp_path, monkeypatch):
    from sim.cocotb_run import simulator_available
    if not simulator_available("verilator"):
        pytest.skip("verilator is not installed")
    monkeypatch.setenv("MAKEFLAGS", "-j2")              # Verilator's C++ build, on both cores
    tokens, channels, heads, levels = 4, 8, 2, 4
    dut = LinearAttentionUnit(tokens, channels, heads, levels, ecp5=False)
    rng = np.random.default_rng(21)
    steps = [tuple(_spikes(rng, tokens, channels, levels, density) for _ in "qkv") for density in (0.4, 1.0, 0.0)]
    _run_attention_cocotb(dut, _linear_cocotb_case(dut, steps, rng), "linear_attention_matches_golden", tmp_path,
                          "verilator")


def test_reset_in_the_middle_of_a_step_leaves_no_trace():
    # A reset after V's and K's frames (and half of Q's) leaves partial sums in every memory (memories are
    # not reset): the units zero them after the reset, and the next step is exact.
    rng = np.random.default_rng(8)
    tokens, channels, heads, levels = 3, 6, 2, 4
    q, k, v = (_spikes(rng, tokens, channels, levels, 0.7) for _ in "qkv")
    maps = {"q": q, "k": k, "v": v}
    for dut, ports in ((LinearAttentionUnit(tokens, channels, heads, levels, ecp5=False), "vkq"),
                       (CoSpikeUnit(tokens, channels, levels, lanes=2, ecp5=False), "vk")):
        top = Module()
        top.domains.sync = domain = ClockDomain()
        top.submodules.dut = dut
        frames = {name: _events(maps[name], rng) for name in ports}
        full = _events(np.full((tokens, channels), levels), rng)     # the step cut short: every spike
        sim = Simulator(top)
        sim.add_clock(1e-8)
        words = []

        async def bench(ctx, dut=dut, ports=ports, frames=frames, domain=domain, full=full):
            for name in ports[:-1]:
                await send(ctx, getattr(dut, name), full)
            await send(ctx, getattr(dut, ports[-1]), [dict(e, last=0) for e in full[:len(full) // 2]])
            await ctx.tick().repeat(20)
            ctx.set(domain.rst, 1)
            await ctx.tick()
            ctx.set(domain.rst, 0)
            for name in ports:
                await send(ctx, getattr(dut, name), frames[name])

        async def collect(ctx, dut=dut):
            count = tokens * heads if isinstance(dut, LinearAttentionUnit) else dut._words
            words.extend(await recv(ctx, dut.o, count))
        sim.add_testbench(bench, background=True)
        sim.add_testbench(collect)
        sim.run()
        if isinstance(dut, LinearAttentionUnit):
            got = np.array([[w.values[j] for j in range(channels // heads)] for w in words])
            np.testing.assert_array_equal(got.reshape(tokens, channels), _linear_golden(q, k, v, heads, levels))
        else:
            np.testing.assert_array_equal([w.values[j] for w in words for j in range(2)], (k * v).sum(0))
