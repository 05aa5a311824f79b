"""cocotb benches for ``LinearAttentionUnit`` and ``CoSpikeUnit`` (Verilog from Amaranth; Verilator or Icarus).

Run from pytest (``tests/test_hdl_attention.py``, ``tests/test_icarus_attention.py``) through
``sim.cocotb_run.run_cocotb``, one bench per run: ``COCOTB_TEST_FILTER`` names it
(``linear_attention_matches_golden`` or ``cospike_matches_golden``). The case file named by ``ATTN_CASE``
(JSON) holds each port's frames as packed payloads (``addr | level << aw | last << (aw + lw)``), the golden
model's output for every step, the output payload's field offsets and the stall probability. Every stream
stalls at random (valid and ready); the bench checks every word, its order and ``last``. A payload with X or
Z bits fails the bench (Icarus is four-state).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge


def _field(word: int, offset_width) -> int:
    offset, width = offset_width
    return (word >> offset) & ((1 << width) - 1)


async def _drive(dut, name: str, frames: list[list[int]], stall: float, rng: random.Random) -> None:
    """Send every payload of every frame on stream ``name``, holding it until ``ready``."""
    valid, ready, payload = (getattr(dut, f"{name}__{s}") for s in ("valid", "ready", "payload"))
    for word in (w for frame in frames for w in frame):
        while True:
            await RisingEdge(dut.clk)
            if rng.random() < stall:
                valid.value = 0
                continue
            payload.value = word
            valid.value = 1
            await ReadOnly()
            if ready.value == 1:               # taken at the coming edge
                break
    await RisingEdge(dut.clk)
    valid.value = 0


async def _collect(dut, count: int, stall: float, rng: random.Random) -> list[int]:
    words = []
    while len(words) < count:
        await RisingEdge(dut.clk)
        take = rng.random() >= stall
        dut.o__ready.value = int(take)
        await ReadOnly()
        if take and dut.o__valid.value == 1:
            words.append(dut.o__payload.value.to_unsigned())
    return words


async def _start(dut, case: dict, rng: random.Random) -> None:
    """Clock, reset, then drive every input port's frames (``case["frames"]``) in the background."""
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    for name in case["frames"]:
        getattr(dut, f"{name}__valid").value = 0
    dut.o__ready.value = 0
    dut.rst.value = 1
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    for name, frames in case["frames"].items():
        cocotb.start_soon(_drive(dut, name, frames, case["stall"], random.Random(rng.random())))


@cocotb.test(timeout_time=2, timeout_unit="ms")
async def linear_attention_matches_golden(dut):
    case = json.loads(Path(os.environ["ATTN_CASE"]).read_text())
    tokens, heads, d, acc_width = case["tokens"], case["heads"], case["d"], case["acc_width"]
    fields, stall = case["fields"], case["stall"]
    rng = random.Random(case["seed"])
    await _start(dut, case, rng)

    steps = len(case["expected"])
    words = await _collect(dut, steps * tokens * heads, stall, rng)
    for step, expected in enumerate(case["expected"]):
        for i in range(tokens * heads):
            word = words[step * tokens * heads + i]
            token, head = _field(word, fields["token"]), _field(word, fields["head"])
            assert (token, head) == (i // heads, i % heads), f"step {step}: word {i} is ({token}, {head})"
            assert _field(word, fields["last"]) == int(i == tokens * heads - 1), f"step {step}: word {i} last"
            values = _field(word, fields["values"])
            got = [(values >> (j * acc_width)) & ((1 << acc_width) - 1) for j in range(d)]
            want = expected[token][head * d:(head + 1) * d]
            assert got == want, f"step {step}, token {token}, head {head}: {got} != {want}"


@cocotb.test(timeout_time=2, timeout_unit="ms")
async def cospike_matches_golden(dut):
    case = json.loads(Path(os.environ["ATTN_CASE"]).read_text())
    channels, words_per_step, lanes = case["channels"], case["words"], case["lanes"]
    count_width, fields = case["count_width"], case["fields"]
    rng = random.Random(case["seed"])
    await _start(dut, case, rng)

    words = await _collect(dut, len(case["expected"]) * words_per_step, case["stall"], rng)
    for step, expected in enumerate(case["expected"]):
        counts = []
        for i in range(words_per_step):
            word = words[step * words_per_step + i]
            group = _field(word, fields["group"])
            assert group == i, f"step {step}: word {i} is group {group}"
            assert _field(word, fields["last"]) == int(i == words_per_step - 1), f"step {step}: word {i} last"
            values = _field(word, fields["values"])
            counts += [(values >> (j * count_width)) & ((1 << count_width) - 1) for j in range(lanes)]
        assert counts[:channels] == expected, f"step {step}: {counts[:channels]} != {expected}"
        assert not any(counts[channels:]), f"step {step}: counts past C: {counts[channels:]}"
