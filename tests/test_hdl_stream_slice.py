"""``hdl.lanes.StreamSlice``: every beat passes once and in order under random stalls on both sides, at
full rate without stalls, and neither ``o`` nor ``i.ready`` depends combinationally on the other side."""

import pytest
from amaranth.hdl import unsigned

from hdl.lanes import StreamSlice
from sim.streams import simulate


@pytest.mark.parametrize("stall", [0.0, 0.3, 0.7])
@pytest.mark.parametrize("seed", [0, 1])
def test_beats_pass_in_order(stall, seed):
    beats = list(range(1, 201))
    out, cycles = simulate(StreamSlice(unsigned(8)), {"i": beats}, len(beats), stall=stall, seed=seed)
    assert out == beats
    if stall == 0.0:
        assert cycles <= len(beats) + 3              # one beat per cycle, one cycle of latency


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
