"""The overlay gateware (``hdl.npu.overlay``) in the Amaranth simulator: load memory images through its load
port, run, read the scratchpad banks and logits back through its peek port.

Small configurations only (the Python simulator runs a few thousand cycles per second): the per-descriptor
checks of ``tests/test_npu_overlay.py``.
"""

from __future__ import annotations

from amaranth.sim import Simulator

from hdl.npu.isa import Bank, Mem, unpack_lanes
from hdl.npu.overlay import EXT_LATENCY, PEEK_LATENCY, Overlay

from .ext_memory import serve_reads

__all__ = ["run_overlay"]


def run_overlay(config, images: dict, banks: dict, *, ext: list[int] | None = None, max_cycles: int = 1_000_000):
    """Load ``images`` (``{Mem: [word, ...]}``) and the bank contents ``banks`` (``{Bank: [word, ...]}``), run
    the program once; return ``(banks after, logits, cycles, status)`` with status ``"done"`` or ``"error"``.

    ``ext``: the external memory's words (``Program.ext_image``) for a configuration with one: it takes a read
    every cycle and answers :data:`~hdl.npu.overlay.EXT_LATENCY` cycles later."""
    dut = Overlay(config)
    out = {}

    async def external(ctx):
        await serve_reads(ctx, dut.ext_cmd, dut.ext_rdata, lambda a: ext[a] if a < len(ext) else 0,
                          latency=EXT_LATENCY)

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
                for _ in range(PEEK_LATENCY):
                    await ctx.tick()
                got.append(ctx.get(dut.peek_data))
            after[bank] = got
        ctx.set(dut.peek_mem, Mem.LOGITS)
        logits = []
        for k in range(config.classes):
            ctx.set(dut.peek_addr, k)
            for _ in range(PEEK_LATENCY):
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
