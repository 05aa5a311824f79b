"""cocotb bench for SpikeAccumulator as Verilog (run by tests/test_hdl_accumulate.py through run_cocotb).

The pytest side writes a JSON spec (path in ``ACCUMULATE_SPEC``): field widths, the frames' events and
the expected accumulators per frame and lane group, computed with numpy from the golden model. The bench
streams the events with random valid gaps, takes the outputs with random ready drops, and compares.
Inputs are driven on the falling edge; handshakes are sampled once the values have settled (ReadOnly),
so they are decided by what the next rising edge sees.
"""

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge


def _signed(value: int, width: int) -> int:
    return value - (1 << width) if value >> (width - 1) & 1 else value


@cocotb.test()
async def accumulates_frames_with_stalls(dut):
    with open(os.environ["ACCUMULATE_SPEC"]) as f:
        spec = json.load(f)
    aw, lw, gw, aw_acc = spec["addr_width"], spec["level_width"], spec["group_width"], spec["acc_width"]
    lanes, groups = spec["lanes"], spec["groups"]
    events = [e for frame in spec["frames"] for e in frame]
    want = [(g, lanes_values) for frame in spec["expected"] for g, lanes_values in enumerate(frame)]
    rng = random.Random(5)

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.events__valid.value = 0
    dut.events__payload.value = 0
    dut.acc__ready.value = 0
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.rst.value = 0

    sent, got, cycles = 0, [], 0
    while len(got) < len(want):
        await FallingEdge(dut.clk)
        cycles += 1
        assert cycles < 20_000, f"timeout: {sent} of {len(events)} events sent, {len(got)} beats taken"
        offer = sent < len(events) and rng.random() >= 0.3
        if offer:
            e = events[sent]
            dut.events__payload.value = e["addr"] | e["level"] << aw | e["last"] << (aw + lw)
        dut.events__valid.value = int(offer)
        take = rng.random() >= 0.3
        dut.acc__ready.value = int(take)
        await ReadOnly()
        if offer and int(dut.events__ready.value):
            sent += 1
        if take and int(dut.acc__valid.value):
            word = dut.acc__payload.value.to_unsigned()
            group = word & ((1 << gw) - 1)
            values = [_signed(word >> (gw + lane * aw_acc) & ((1 << aw_acc) - 1), aw_acc) for lane in range(lanes)]
            last = word >> (gw + lanes * aw_acc) & 1
            got.append((group, values, last))

    for n, ((group, values, last), (g, expected)) in enumerate(zip(got, want)):
        assert group == g, f"beat {n}: group {group}, expected {g}"
        assert last == (g == groups - 1), f"beat {n}: last {last}"
        assert values == expected, f"beat {n} (frame {n // groups}, group {g}): {values} != {expected}"
    dut._log.info("%d events, %d beats checked in %d cycles", len(events), len(got), cycles)
