# amaranth: UnusedElaboratable=no
"""hdl/sdram/fetch.py in the Amaranth simulator: every wide word written is the SDRAM words it packs, whatever
the controller's stalls and latency; with a controller that answers every cycle, the cycle count is exact."""

from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from hdl.sdram.fetch import Fetch, fetch_cycles
from sim.ext_memory import serve_reads


def sdram_word(addr: int) -> int:
    return (addr * 2654435761 >> 7) & 0xFFFF


def run_fetch(word_bits, depth, fetches, *, stall=0.0, latency=1, seed=0):
    """Run ``fetches`` (src, dst, count[, ratio]) one after another against a simulated controller that takes a read
    with probability 1 - ``stall`` and returns it ``latency`` cycles later (more with stalls, in order).
    Returns (memory {addr: word}, [cycles from start to done of each fetch])."""
    dut = Fetch(word_bits, depth)
    rng = random.Random(seed)
    memory, cycles = {}, []

    async def controller(ctx):
        await serve_reads(ctx, dut.cmd, dut.rdata, sdram_word, latency=latency, stall=stall, rng=rng)

    async def writes(ctx):
        while True:
            if ctx.get(dut.w_en):
                memory[ctx.get(dut.w_addr)] = ctx.get(dut.w_data)
            await ctx.tick()

    async def bench(ctx):
        for src, dst, count, *ratio in fetches:
            ctx.set(dut.ratio, ratio[0] if ratio else dut.max_ratio)
            ctx.set(dut.src, src)
            ctx.set(dut.dst, dst)
            ctx.set(dut.count, count)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            n = 1
            while not ctx.get(dut.done):
                await ctx.tick()
                n += 1
            cycles.append(n)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(controller, background=True)
    sim.add_testbench(writes, background=True)
    sim.add_testbench(bench)
    sim.run()
    return memory, cycles


def expected(word_bits, src, dst, count, ratio):
    out = {}
    for i in range(count):
        word = 0
        for j in range(ratio):
            word |= sdram_word(src + i * ratio + j) << (16 * j)
        out[dst + i] = word & ((1 << word_bits) - 1)
    return out


@pytest.mark.parametrize("word_bits", [16, 64, 72])
@pytest.mark.parametrize("latency", [1, 3])
def test_exact_cycles_without_stalls(word_bits, latency):
    dut_ratio = -(-word_bits // 16)
    fetches = [(100, 5, 7), (3, 0, 1), (0, 0, 0)]
    memory, cycles = run_fetch(word_bits, 32, fetches, latency=latency)
    assert cycles == [fetch_cycles(count, dut_ratio, latency) for _, _, count in fetches]
    want = {}
    for src, dst, count in fetches:
        want.update(expected(word_bits, src, dst, count, dut_ratio))
    assert memory == want


@settings(max_examples=20, deadline=None)
@given(word_bits=st.sampled_from([16, 32, 64]), count=st.integers(0, 12), src=st.integers(0, 1 << 20),
       dst=st.integers(0, 4), stall=st.sampled_from([0.0, 0.3, 0.7]), latency=st.integers(1, 4),
       seed=st.integers(0, 1000))
def test_random_stalls_copy_every_word(word_bits, count, src, dst, stall, latency, seed):
    ratio = -(-word_bits // 16)
    memory, cycles = run_fetch(word_bits, 16, [(src, dst, count)], stall=stall, latency=latency, seed=seed)
    assert memory == expected(word_bits, src, dst, count, ratio)
    assert cycles[0] >= fetch_cycles(count, ratio, latency)


@pytest.mark.parametrize("stall", [0.0, 0.5])
def test_ratio_is_set_per_fetch(stall):
    """Rows of 9, 2, 32 and 1 SDRAM words from one unit (the overlay's bias, weight, threshold and narrowest
    rows): each row is its own words, and without stalls each fetch takes fetch_cycles at its ratio."""
    fetches = [(40, 0, 3, 9), (7, 3, 5, 2), (1000, 8, 2, 32), (5, 10, 4, 1)]
    memory, cycles = run_fetch(512, 16, [f[:3] + (f[3],) for f in fetches], stall=stall, seed=3)
    for src, dst, count, ratio in fetches:
        for addr, word in expected(512, src, dst, count, ratio).items():
            assert memory[addr] & ((1 << 16 * ratio) - 1) == word
    if not stall:
        assert cycles == [fetch_cycles(count, ratio, 1) for _, _, count, ratio in fetches]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="word_bits"):
        Fetch(0, 16)
