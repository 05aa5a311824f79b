"""Amaranth-simulator helpers: drive and collect ``amaranth.lib.stream`` interfaces with random stalls.

A stall is a cycle in which the sender holds ``valid`` low (``send``) or the receiver holds ``ready`` low
(``recv``); tests use them to prove that results do not change and nothing is lost or duplicated.
"""

from __future__ import annotations

import random


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
