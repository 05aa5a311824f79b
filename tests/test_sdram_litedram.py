"""LiteDRAM's controller (hdl/sdram/litedram.py) on the SDRAM device model, under Icarus (tests/cocotb_sdram.py):
random traffic reads back what was written with no timing rule broken, and a part slower than the one the
controller was generated for is caught as the rule it breaks."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from hdl.sdram.chip import MT48LC16M16A2
from hdl.sdram.litedram import (STREAM_WORDS_PER_CYCLE, SdramController, Wait, Write, core_config, generate,
                                init_steps)
from sim.cocotb_run import run_cocotb, simulator_available
from sim.sdram_bench import TOP, FetchHost, write_bench
from sim.sdram_model import Violation

CLOCK_MHZ = 60.0
ROWS = 16                                       # rows the model stores: 16 x 4 banks x 512 words


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    return generate(MT48LC16M16A2, CLOCK_MHZ, tmp_path_factory.mktemp("litedram"))


def test_generated_core_matches_the_chip(core):
    assert core.data_bits == MT48LC16M16A2.data_bits
    words = MT48LC16M16A2.bytes * 8 // core.data_bits
    assert 1 << core.address_bits == words                    # the whole 32 MB, word-addressed
    assert core.cas_latency in MT48LC16M16A2.cas_latencies
    text = core.verilog.read_text()
    assert "inout  wire   [15:0] sdram_dq," in text and "Date " not in text


def test_generation_is_reproducible(core, tmp_path):
    again = generate(MT48LC16M16A2, CLOCK_MHZ, tmp_path)
    assert again.verilog.read_bytes() == core.verilog.read_bytes()
    assert again.registers == core.registers


def test_init_sequence_waits_the_datasheet_times(core):
    steps = init_steps(core)
    n = MT48LC16M16A2.cycles(CLOCK_MHZ)
    assert [s.cycles for s in steps if isinstance(s, Wait)] == [n["init"], n["rp"], n["rfc"], n["rfc"], n["mrd"]]
    assert all(s.register in core.registers for s in steps if isinstance(s, Write))
    mode = [s.value for s in steps if isinstance(s, Write) and s.register == "sdram_dfii_pi0_address"][-1]
    assert mode == core.cas_latency << 4                      # CAS latency, bursts of one
    assert core_config(MT48LC16M16A2, CLOCK_MHZ)["sdram_module"] == MT48LC16M16A2.litedram_module


def _run(core, tmp_path, *, ops, seed, expect=Violation.NONE, model_chip=None, test="random_traffic",
         host=SdramController, simulator="icarus"):
    if not simulator_available(simulator):
        pytest.skip(f"{simulator} is not installed")
    result = tmp_path / "result.json"
    run_cocotb(lambda folder: write_bench(core, folder, rows=ROWS, model_chip=model_chip, host=host), toplevel=TOP,
               test_module="cocotb_sdram", test_dir=Path(__file__).parent, build_dir=tmp_path / "build",
               simulator=simulator,
               extra_env={"SDRAM_OPS": str(ops), "SDRAM_WORDS": str(ROWS * 4 * 512), "SDRAM_SEED": str(seed),
                          "SDRAM_EXPECT": expect.name, "SDRAM_RESULT": str(result), "COCOTB_TEST_FILTER": test})
    return json.loads(result.read_text())


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_random_traffic_reads_back_with_no_violation(core, tmp_path, simulator):
    """The same traffic, cycle for cycle, under the four-state Icarus and the two-state Verilator (where the
    whole-model harness runs)."""
    result = _run(core, tmp_path, ops=1500, seed=1, simulator=simulator)
    assert result["violation"] == "NONE" and result["checked"] > 300 and result["refreshes"] >= 2, result
    assert (result["reads"], result["writes"], result["refreshes"]) == (591, 908, 30)


@pytest.mark.parametrize("field,violation", [
    ("t_rcd", Violation.T_RCD),
    ("t_rc", Violation.T_RC),
    # LiteDRAM closes rows with auto precharge, which the part holds back until tRAS: the next ACTIVE to the
    # bank then comes within tRP of the precharge
    ("t_ras", Violation.T_RP),
])
def test_a_slower_part_is_caught(core, tmp_path, field, violation):
    """The model of a part with a longer limit than the controller was generated for flags the broken rule."""
    slow = dataclasses.replace(MT48LC16M16A2, **{field: getattr(MT48LC16M16A2, field) * 3})
    _run(core, tmp_path, ops=200, seed=2, expect=violation, model_chip=slow)


def test_sequential_bandwidth(core, tmp_path):
    """Consecutive words stream at the rate the controller states (``STREAM_WORDS_PER_CYCLE``), each way."""
    result = _run(core, tmp_path, ops=4096, seed=3, test="sequential_bandwidth")
    for way in ("read", "write"):
        rate = result["words"] / result[f"{way}_cycles"]
        assert abs(rate - STREAM_WORDS_PER_CYCLE) < 0.02, (way, rate, result)


def test_fetch_fills_a_memory_from_sdram(core, tmp_path):
    """hdl.sdram.fetch on the real controller: 64 words of 64 bits (256 SDRAM words) written, fetched into an
    on-chip memory and read back, each its four SDRAM words; at about the streaming rate."""
    result = _run(core, tmp_path, ops=64, seed=4, test="fetch_into_memory", host=FetchHost)
    rate = result["sdram_words"] / result["fetch_cycles"]
    assert rate > 0.8 * STREAM_WORDS_PER_CYCLE, result
