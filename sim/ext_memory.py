"""A simulated external memory behind the read streams of ``hdl.sdram.fetch.Fetch`` and of the overlay
(``ext_cmd`` / ``ext_rdata``): an Amaranth-simulator testbench that takes read commands and answers each, in
order, ``latency`` cycles after it was taken, stalling both streams at random if asked."""

from __future__ import annotations

import random
from typing import Callable

__all__ = ["serve_reads"]


async def serve_reads(ctx, cmd, rdata, word_at: Callable[[int], int], *, latency: int, stall: float = 0.0,
                      rng: random.Random | None = None) -> None:
    """Serve ``cmd`` (read commands: ``payload.addr``) with ``rdata`` forever (run it as a background
    testbench): a command is taken with probability ``1 - stall`` (always without stalls), and its word
    ``word_at(addr)`` is offered from ``latency`` cycles after, held while ``rdata.ready`` is low and, with
    stalls, also withheld at random."""
    rng = rng or random.Random(0)
    pending, cycle = [], 0                       # (cycle due, address) of each read taken, oldest first
    while True:
        ctx.set(cmd.ready, int(not stall or rng.random() >= stall))
        due = bool(pending) and pending[0][0] <= cycle and (not stall or rng.random() >= stall)
        ctx.set(rdata.valid, int(due))
        ctx.set(rdata.payload, word_at(pending[0][1]) if due else 0)
        taken = ctx.get(cmd.valid) and ctx.get(cmd.ready)
        address = ctx.get(cmd.payload.addr)
        returned = due and ctx.get(rdata.ready)
        await ctx.tick()
        cycle += 1
        if returned:
            pending.pop(0)
        if taken:
            pending.append((cycle - 1 + latency, address))
