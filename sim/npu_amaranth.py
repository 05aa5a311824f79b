"""The overlay gateware (``hdl.npu.overlay``) in the Amaranth simulator: load memory images through its load
port, run, read the scratchpad banks and logits back through its peek port.

Small configurations only (the Python simulator runs a few thousand cycles per second): the per-descriptor
checks of ``tests/test_npu_overlay.py``.
"""

from __future__ import annotations

from amaranth.sim import Simulator

from hdl.npu.isa import Bank, Mem, unpack_lanes
from hdl.npu.overlay import Overlay

__all__ = ["run_overlay"]


def run_overlay(config, images: dict, banks: dict, *, max_cycles: int = 1_000_000):
    """Load ``images`` (``{Mem: [word, ...]}``) and the bank contents ``banks`` (``{Bank: [word, ...]}``), run
    the program once; return ``(banks after, logits, cycles, status)`` with status ``"done"`` or ``"error"``."""
    dut = Overlay(config)
    out = {}

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
    sim.run()
    return out["banks"], out["logits"], out["cycles"], out["status"]
