# amaranth: UnusedElaboratable=no
"""``hdl.lanes.StreamSlice``: every beat passes once and in order under random stalls on both sides, at
full rate without stalls, and neither ``o`` nor ``i.ready`` depends combinationally on the other side
(``latency=0``: ``i.ready`` does not, and the beats leave in the cycle they arrive)."""

import pytest
from amaranth.hdl import unsigned

from hdl.lanes import StreamSlice
from sim.streams import simulate


@pytest.mark.parametrize("latency", [0, 1])
@pytest.mark.parametrize("stall", [0.0, 0.3, 0.7])
@pytest.mark.parametrize("seed", [0, 1])
def test_beats_pass_in_order(latency, stall, seed):
    beats = list(range(1, 201))
    out, cycles = simulate(StreamSlice(unsigned(8), latency=latency), {"i": beats}, len(beats), stall=stall,
                           seed=seed)
    assert out == beats
    if stall == 0.0:
        assert cycles <= len(beats) + 2 + latency    # one beat per cycle


def test_latency_zero_passes_a_beat_in_its_cycle_and_registers_ready():
    from amaranth.sim import Simulator

    top = StreamSlice(unsigned(8), latency=0)
    sim = Simulator(top)
    sim.add_clock(1e-6)

    async def bench(ctx):
        ctx.set(top.i.valid, 1)
        ctx.set(top.i.payload, 7)
        ctx.set(top.o.ready, 0)
        assert (ctx.get(top.o.valid), ctx.get(top.o.payload)) == (1, 7)        # no register on the way
        ctx.set(top.o.ready, 1)
        assert ctx.get(top.i.ready) == 1
        ctx.set(top.o.ready, 0)
        assert ctx.get(top.i.ready) == 1                                        # ready: a register
        await ctx.tick()                                                        # 7 is held
        ctx.set(top.i.payload, 8)
        assert (ctx.get(top.o.valid), ctx.get(top.o.payload), ctx.get(top.i.ready)) == (1, 7, 0)
        ctx.set(top.o.ready, 1)
        assert ctx.get(top.i.ready) == 0
        await ctx.tick()                                                        # 7 left; 8 passes now
        assert (ctx.get(top.o.valid), ctx.get(top.o.payload), ctx.get(top.i.ready)) == (1, 8, 1)

    sim.add_testbench(bench)
    sim.run()


def test_latency_is_checked():
    with pytest.raises(ValueError, match="latency must be 0 or 1"):
        StreamSlice(unsigned(8), latency=2)


def test_ready_and_output_are_registers():
    """Within a cycle, toggling the inputs of one side never moves the outputs of the other."""
    from amaranth.sim import Simulator

    top = StreamSlice(unsigned(8))
    sim = Simulator(top)
    sim.add_clock(1e-6)
    seen = []

    async def bench(ctx):
        for cycle in range(40):
            before = (ctx.get(top.i.ready), ctx.get(top.o.valid), ctx.get(top.o.payload))
            for valid, ready in ((0, 0), (1, 0), (0, 1), (1, 1), (cycle % 2, cycle % 3 == 0)):
                ctx.set(top.i.valid, valid)
                ctx.set(top.i.payload, cycle)
                ctx.set(top.o.ready, ready)
                assert (ctx.get(top.i.ready), ctx.get(top.o.valid), ctx.get(top.o.payload)) == before
            seen.append(before)
            await ctx.tick()

    sim.add_testbench(bench)
    sim.run()
    assert any(v for _, v, _ in seen) and not all(r for r, _, _ in seen)   # it filled and it pushed back
