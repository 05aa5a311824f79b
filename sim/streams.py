"""Amaranth-simulator helpers: drive and collect ``amaranth.lib.stream`` interfaces with random stalls.

A stall is a cycle in which the sender holds ``valid`` low (``send``) or the receiver holds ``ready`` low
(``recv``); tests use them to prove that results do not change and nothing is lost or duplicated.
"""

from __future__ import annotations

import random

from amaranth.sim import Simulator


async def send(ctx, stream, payloads, *, stall: float = 0.0, rng: random.Random | None = None) -> None:
    """Send every payload (a value or a dict for struct payloads) on ``stream``, honouring ``ready``."""
    rng = rng or random.Random(0)
    for payload in payloads:
        while stall and rng.random() < stall:
            ctx.set(stream.valid, 0)
            await ctx.tick()
        ctx.set(stream.payload, payload)
        ctx.set(stream.valid, 1)
        await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def recv(ctx, stream, count: int, *, stall: float = 0.0, rng: random.Random | None = None,
               timeout: int = 1_000_000) -> list:
    """Collect ``count`` payloads from ``stream``; ``ready`` is dropped at random with probability ``stall``."""
    rng = rng or random.Random(1)
    out = []
    cycles = 0
    while len(out) < count:
        ready = not (stall and rng.random() < stall)
        ctx.set(stream.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(stream.valid, stream.payload)
        if ready and valid:
            out.append(payload)
        cycles += 1
        if cycles > timeout:
            raise TimeoutError(f"stream produced {len(out)} of {count} payloads in {timeout} cycles")
    ctx.set(stream.ready, 0)
    return out


def simulate(unit, inputs: dict, count: int, *, output: str = "o", stall: float = 0.0, seed: int = 0,
             timeout: int = 50_000) -> tuple[list, int]:
    """Run ``unit`` in the Amaranth simulator: send each input port (by name) its payloads and collect
    ``count`` payloads from ``output``, all with random stalls. Returns (payloads, cycles simulated)."""
    sim = Simulator(unit)
    sim.add_clock(1e-6)
    out, cycles = [], [0]
    for k, (port, payloads) in enumerate(inputs.items()):
        async def feeder(ctx, port=port, payloads=payloads, k=k):
            await send(ctx, getattr(unit, port), payloads, stall=stall, rng=random.Random(seed * 11 + k))
        sim.add_testbench(feeder)

    async def collector(ctx):
        out.extend(await recv(ctx, getattr(unit, output), count, stall=stall,
                              rng=random.Random(seed * 11 + 7), timeout=timeout))

    async def clock(ctx):
        while True:
            await ctx.tick()
            cycles[0] += 1

    sim.add_testbench(collector)
    sim.add_process(clock)
    sim.run()
    return out, cycles[0]
