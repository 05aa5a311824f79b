"""A simulated external memory behind the read streams of ``hdl.sdram.fetch.Fetch`` and of the overlay
(``ext_cmd`` / ``ext_rdata``): an Amaranth-simulator testbench that takes read commands and answers each, in
order, ``latency`` cycles after it was taken, stalling both streams at random if asked. Given a write data
stream too, it takes writes as ``hdl.sdram.litedram.SdramController`` does: a write command together with
its data."""

from __future__ import annotations

import random
from typing import Callable

__all__ = ["serve_reads"]


async def serve_reads(ctx, cmd, rdata, word_at: Callable[[int], int], *, latency: int, stall: float = 0.0,
                      rng: random.Random | None = None, wdata=None,
                      write: Callable[[int, int, int], None] | None = None) -> None:
    """Serve ``cmd`` (read commands: ``payload.addr``) with ``rdata`` forever (run it as a background
    testbench): a command is taken with probability ``1 - stall`` (always without stalls), and its word
    ``word_at(addr)`` is offered from ``latency`` cycles after, held while ``rdata.ready`` is low and, with
    stalls, also withheld at random. With ``wdata`` (and ``write``), a command with ``payload.we`` set is
    taken only with a valid word of ``wdata``, and ``write(addr, data, byte_enables)`` is called with it."""
    rng = rng or random.Random(0)
    pending, cycle = [], 0                       # (cycle due, address) of each read taken, oldest first
    while True:
        ready = not stall or rng.random() >= stall
        is_write = wdata is not None and ctx.get(cmd.payload.we)
        if is_write:
            ready = ready and ctx.get(wdata.valid)
            ctx.set(wdata.ready, int(ready and ctx.get(cmd.valid)))
        elif wdata is not None:
            ctx.set(wdata.ready, 0)
        ctx.set(cmd.ready, int(ready))
        due = bool(pending) and pending[0][0] <= cycle and (not stall or rng.random() >= stall)
        ctx.set(rdata.valid, int(due))
        ctx.set(rdata.payload, word_at(pending[0][1]) if due else 0)
        taken = ctx.get(cmd.valid) and ctx.get(cmd.ready)
        address = ctx.get(cmd.payload.addr)
        if taken and is_write:
            write(address, ctx.get(wdata.payload.data), ctx.get(wdata.payload.we))
            taken = False
        returned = due and ctx.get(rdata.ready)
        await ctx.tick()
        cycle += 1
        if returned:
            pending.pop(0)
        if taken:
            pending.append((cycle - 1 + latency, address))
