"""cocotb bench: LiteDRAM's controller on the SDRAM device model (``sim.sdram_bench``), under Icarus.

Run from ``tests/test_sdram_litedram.py`` through ``sim.cocotb_run.run_cocotb``. Environment: ``SDRAM_OPS``
(commands to send), ``SDRAM_WORDS`` (the address range, in words: within the rows the model stores),
``SDRAM_SEED``, ``SDRAM_EXPECT`` (the model's expected ``violation``, by name: NONE for a legal run) and
``SDRAM_RESULT`` (a JSON file the bench writes its counts into).

After the controller's power-up sequence (``ready``), random reads and writes (random byte enables) go to
256 random addresses with random stalls on all three streams, and every read must return what the last write to
its address left there (the bench's own copy of the memory). With ``SDRAM_EXPECT=NONE`` the model must see
no violation and at least one refresh beyond the power-up's two; otherwise it must flag that rule.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from sim.sdram_model import Violation


async def _send(dut, name, items, stall, rng):
    """Offer each item on stream ``name`` (after random idle cycles) until the edge that takes it."""
    valid, ready, payload = (getattr(dut, f"{name}__{s}") for s in ("valid", "ready", "payload"))
    for item in items:
        while rng.random() < stall:
            valid.value = 0
            await RisingEdge(dut.clk)
        payload.value = item
        valid.value = 1
        while True:
            await ReadOnly()
            taken = int(ready.value)
            await RisingEdge(dut.clk)
            if taken:
                break
    valid.value = 0


async def _power_up(dut, rdata_ready: int) -> None:
    """Start the clock, hold every stream idle (the reader ``rdata_ready``) through a reset, and wait until the
    controller has initialised the chip."""
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    for name in ("cmd", "wdata"):
        getattr(dut, f"{name}__valid").value = 0
    dut.rdata__ready.value = rdata_ready
    if hasattr(dut, "start"):                          # FetchHost's fetch
        dut.start.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await RisingEdge(dut.ready)


@cocotb.test()
async def random_traffic(dut):
    ops, words = int(os.environ["SDRAM_OPS"]), int(os.environ["SDRAM_WORDS"])
    rng = random.Random(int(os.environ["SDRAM_SEED"]))
    expect = Violation[os.environ["SDRAM_EXPECT"]]
    await _power_up(dut, rdata_ready=0)
    start = int(dut.refreshes.value)

    memory, cmds, writes, reads = {}, [], [], []
    pool = rng.sample(range(words), 256)             # addresses across every bank and row, each met again
    for _ in range(ops):
        addr = rng.choice(pool)
        if addr not in memory or rng.random() < 0.5:
            word = rng.randrange(1 << 16)
            mask = rng.choice([0b01, 0b10, 0b11]) if addr in memory else 0b11    # first write: whole
            keep = (0 if mask & 1 else 0x00FF) | (0 if mask & 2 else 0xFF00)
            memory[addr] = (memory.get(addr, 0) & keep) | (word & ~keep & 0xFFFF)
            cmds.append(1 | addr << 1)
            writes.append(word | mask << 16)
        else:
            cmds.append(addr << 1)
            reads.append(memory[addr])
    assert words <= 1 << (len(dut.cmd__payload) - 1)

    got = []

    async def receive():
        while len(got) < len(reads):
            dut.rdata__ready.value = int(rng.random() < 0.7)
            await ReadOnly()
            if int(dut.rdata__ready.value) and int(dut.rdata__valid.value):
                got.append(int(dut.rdata__payload.value))
            await RisingEdge(dut.clk)

    sender_w = cocotb.start_soon(_send(dut, "wdata", writes, 0.3, random.Random(rng.random())))
    receiver = cocotb.start_soon(receive())
    await _send(dut, "cmd", cmds, 0.3, random.Random(rng.random()))
    await sender_w
    if expect == Violation.NONE:
        await receiver
    else:
        await ClockCycles(dut.clk, 200)
        receiver.cancel()
    await ClockCycles(dut.clk, 20)
    violation = Violation(int(dut.violation.value))
    result = {"violation": violation.name, "violation_cycle": int(dut.violation_cycle.value),
              "refreshes": int(dut.refreshes.value) - start, "reads": int(dut.reads.value),
              "writes": int(dut.writes.value), "checked": len(got)}
    with open(os.environ["SDRAM_RESULT"], "w") as f:
        json.dump(result, f)
    assert violation == expect, result
    if expect == Violation.NONE:
        assert got == reads, next(f"read {i}: got {g:#06x}, wrote {w:#06x}" for i, (g, w) in
                                  enumerate(zip(got, reads)) if g != w)
        assert result["refreshes"] > 0, result


async def _stream_all(dut, name, items):
    """Offer ``items`` back to back on stream ``name``; returns the cycle count until the last is taken."""
    valid, ready, payload = (getattr(dut, f"{name}__{s}") for s in ("valid", "ready", "payload"))
    cycles, i = 0, 0
    valid.value = 1
    payload.value = items[0]
    while i < len(items):
        await ReadOnly()
        taken = int(ready.value)
        await RisingEdge(dut.clk)
        cycles += 1
        if taken:
            i += 1
            if i < len(items):
                payload.value = items[i]
    valid.value = 0
    return cycles


@cocotb.test()
async def sequential_bandwidth(dut):
    """Write, then read, ``SDRAM_OPS`` consecutive words with no stall on any stream: the cycles each takes
    (into ``SDRAM_RESULT``), and every word read back."""
    ops = int(os.environ["SDRAM_OPS"])
    rng = random.Random(int(os.environ["SDRAM_SEED"]))
    await _power_up(dut, rdata_ready=1)
    words = [rng.randrange(1 << 16) for _ in range(ops)]
    data = cocotb.start_soon(_stream_all(dut, "wdata", [w | 0b11 << 16 for w in words]))
    write_cycles = await _stream_all(dut, "cmd", [1 | a << 1 for a in range(ops)])
    await data
    await ClockCycles(dut.clk, 20)
    got = []

    async def receive():
        cycles = 0
        while len(got) < ops:
            await ReadOnly()
            if int(dut.rdata__valid.value):
                got.append(int(dut.rdata__payload.value))
            await RisingEdge(dut.clk)
            cycles += 1
        return cycles

    receiver = cocotb.start_soon(receive())
    await _stream_all(dut, "cmd", [a << 1 for a in range(ops)])
    read_cycles = await receiver
    result = {"words": ops, "write_cycles": write_cycles, "read_cycles": read_cycles,
              "violation": Violation(int(dut.violation.value)).name}
    with open(os.environ["SDRAM_RESULT"], "w") as f:
        json.dump(result, f)
    assert got == words and result["violation"] == "NONE", result


@cocotb.test()
async def fetch_into_memory(dut):
    """(``FetchHost``) Write ``SDRAM_OPS`` wide words' worth of SDRAM words, fetch them into the on-chip memory
    (from SDRAM word 0 to memory word 0) and read every memory word back: each is its four SDRAM words, the
    first in the low bits. The fetch's cycles go into ``SDRAM_RESULT``."""
    count = int(os.environ["SDRAM_OPS"])
    rng = random.Random(int(os.environ["SDRAM_SEED"]))
    await _power_up(dut, rdata_ready=1)
    ratio = len(dut.mem_data) // 16
    words = [rng.randrange(1 << 16) for _ in range(count * ratio)]
    data = cocotb.start_soon(_stream_all(dut, "wdata", [w | 0b11 << 16 for w in words]))
    await _stream_all(dut, "cmd", [1 | a << 1 for a in range(len(words))])
    await data
    await ClockCycles(dut.clk, 30)                       # the writes reach the chip
    dut.src.value, dut.dst.value, dut.count.value = 0, 0, count
    dut.start.value = 1
    await RisingEdge(dut.clk)
    dut.start.value = 0
    cycles = 1
    while True:
        await ReadOnly()
        if int(dut.done.value):
            break
        await RisingEdge(dut.clk)
        cycles += 1
    await RisingEdge(dut.clk)
    got = []
    for addr in range(count):
        dut.mem_addr.value = addr
        await RisingEdge(dut.clk)
        await ReadOnly()
        got.append(int(dut.mem_data.value))
        await RisingEdge(dut.clk)
    want = [sum(words[i * ratio + j] << (16 * j) for j in range(ratio)) for i in range(count)]
    result = {"words": count, "sdram_words": len(words), "fetch_cycles": cycles,
              "violation": Violation(int(dut.violation.value)).name}
    with open(os.environ["SDRAM_RESULT"], "w") as f:
        json.dump(result, f)
    assert got == want and result["violation"] == "NONE", result
