"""The overlay in a cocotb bench under Icarus Verilog (``compiler.flows.cocotb_npu``): the host driver a board gets
(``compiler.host.npu.NpuDriver``) loads the program and runs the samples through the bench's bus coroutines,
and an event-driven simulator checks the overlay's Verilog bit for bit and cycle for cycle."""

import dataclasses
import json

import numpy as np
import pytest

from compiler.cli import main
from sim.cocotb_run import simulator_available

pytestmark = pytest.mark.skipif(not simulator_available("icarus"), reason="Icarus Verilog is not installed "
                                "(make install installs it; CI does)")


def test_simulate_on_icarus_is_bit_exact_and_cycle_exact(small_model, tmp_path, capsys):
    status = main(["simulate", str(small_model), "--simulator", "icarus", "--lanes", "2", "--count", "2", "--json",
                   "--build-dir", str(tmp_path / "sim")])
    r = json.loads(capsys.readouterr().out)
    assert status == 0 and r["simulator"] == "icarus" and r["schedule"] == "overlay"
    assert r["mismatches"] == 0 and r["samples"] == 2
    assert r["cycle_model_error"] == 0 and r["cycles_min"] > 1000      # the hardware counter is the formula's
    assert r["simulated_cycles"] > 2 * r["cycles_min"]                 # the load and the bus accesses too
    # the bench's build is the cache's icarus folder: clean empties it
    assert (tmp_path / "sim" / "icarus" / "sim.vvp").is_file()
    assert main(["clean", "--build-dir", str(tmp_path / "sim"), "--json"]) == 0
    cleaned = json.loads(capsys.readouterr().out)
    assert "icarus build" in {e["kind"] for e in cleaned["entries"]}
    assert sorted(p.name for p in (tmp_path / "sim" / "icarus").iterdir()) == [".lock"]


def test_a_wrong_weight_is_caught(small_model, tmp_path):
    """The bench compares what the hardware computed: a program with one weight changed gives other logits."""
    from compiler import load, lower, samples
    from compiler.hw.program import compile_program, fit_config
    from compiler.ir import golden
    from compiler.flows.cocotb_npu import run_program

    model = load(small_model)
    x, _ = samples(model, count=2)
    graph = lower(model).graph
    program = compile_program(graph, fit_config(graph, 2))
    weights = program.weights.copy()
    weights[weights != 0] = -weights[weights != 0]                     # every weight's sign flipped
    wrong = dataclasses.replace(program, weights=weights)
    logits, cycles, _, _ = run_program(wrong, x, tmp_path / "sim")
    assert cycles.shape == (2,) and not np.array_equal(logits, golden.run(graph, x)[0])
