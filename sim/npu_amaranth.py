"""The overlay gateware (``hdl.npu.overlay``) in the Amaranth simulator: load memory images through its load
port, run, read the scratchpad banks and logits back through its peek port.

Small configurations only (the Python simulator runs a few thousand cycles per second): the per-descriptor
checks of ``tests/test_npu_overlay.py``.
"""

from __future__ import annotations

from amaranth.sim import Simulator

from hdl.npu.isa import Bank, Mem, unpack_lanes
from hdl.npu.overlay import EXT_LATENCY, Overlay

__all__ = ["run_overlay"]


def run_overlay(config, images: dict, banks: dict, *, ext: list[int] | None = None, max_cycles: int = 1_000_000):
    """Load ``images`` (``{Mem: [word, ...]}``) and the bank contents ``banks`` (``{Bank: [word, ...]}``), run
    the program once; return ``(banks after, logits, cycles, status)`` with status ``"done"`` or ``"error"``.

    ``ext``: the external memory's words (``Program.ext_image``) for a configuration with one: it takes a read
    every cycle and answers :data:`~hdl.npu.overlay.EXT_LATENCY` cycles later."""
    dut = Overlay(config)
    out = {}

    async def external(ctx):
        pending, cycle = [], 0                    # (cycle due, address) of each read taken
        while True:
            ctx.set(dut.ext_cmd.ready, 1)
            due = bool(pending) and pending[0][0] <= cycle
            ctx.set(dut.ext_rdata.valid, due)
            ctx.set(dut.ext_rdata.payload, ext[pending[0][1]] if due and pending[0][1] < len(ext) else 0)
            taken = ctx.get(dut.ext_cmd.valid)
            address = ctx.get(dut.ext_cmd.payload.addr)
            returned = due and ctx.get(dut.ext_rdata.ready)
            await ctx.tick()
            cycle += 1
            if returned:
                pending.pop(0)
            if taken:
                pending.append((cycle - 1 + EXT_LATENCY, address))

    async def bench(ctx):
        async def load(mem, words):
            for addr, word in enumerate(words):
                if word:
                    ctx.set(dut.load_en, 1)
                    ctx.set(dut.load_mem, mem)
                    ctx.set(dut.load_addr, addr)
                    ctx.set(dut.load_data, word)
                    await ctx.tick()
            ctx.set(dut.load_en, 0)

        for mem, words in images.items():
            await load(mem, words)
        for bank, words in banks.items():
            await load(Mem.SPIKES if bank == Bank.SPIKES else Mem.WIDE, words)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for _ in range(max_cycles):
            if not ctx.get(dut.busy):
                break
            await ctx.tick()
        else:
            raise TimeoutError(f"the overlay is still busy after {max_cycles} cycles (pc {ctx.get(dut.pc)})")
        out["status"] = "error" if ctx.get(dut.error) else "done" if ctx.get(dut.done) else "idle"
        out["cycles"] = ctx.get(dut.cycles)
        after = {}
        for bank, words in banks.items():
            ctx.set(dut.peek_mem, Mem.SPIKES if bank == Bank.SPIKES else Mem.WIDE)
            got = []
            for addr in range(len(words)):
                ctx.set(dut.peek_addr, addr)
                await ctx.tick()
                got.append(ctx.get(dut.peek_data))
            after[bank] = got
        ctx.set(dut.peek_mem, Mem.LOGITS)
        logits = []
        for k in range(config.classes):
            ctx.set(dut.peek_addr, k)
            await ctx.tick()
            await ctx.tick()
            logits.append(unpack_lanes(ctx.get(dut.peek_data), 1, config.logit_bits, True)[0])
        out["banks"], out["logits"] = after, logits

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    if config.ext_depth:
        ext = list(ext or [])
        sim.add_testbench(external, background=True)
    sim.run()
    return out["banks"], out["logits"], out["cycles"], out["status"]
