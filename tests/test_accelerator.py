"""The generated accelerator, simulated cycle by cycle and compared bit for bit with the golden model.

Verilator models are cached by the hash of their Verilog in build/test-sim (a fresh clone builds each once).
"""

import json

import numpy as np
import pytest

from compiler import cli

from compiler.ir import golden
from compiler.hw.plan import build_plan
from sim.accelerator import simulate

from conftest import EXAMPLE, ROOT

BUILD = ROOT / "build" / "test-sim"


def _simulate_cli(capsys, *args):
    code = cli.main(["simulate", "--generator", *map(str, args), "--json", "--build-dir", str(BUILD)])
    out = capsys.readouterr().out
    return code, (json.loads(out) if out.strip() else None)


@pytest.fixture(scope="module")
def digits_run(digits_graph, digits_test):
    """64 held-out digits on the event-driven and on the dense accelerator."""
    x = digits_test.x[:64]
    event = simulate(build_plan(digits_graph), x, build_dir=BUILD)
    dense = simulate(build_plan(digits_graph, dense=True), x, build_dir=BUILD)
    return x, event, dense


def test_bundled_model_is_bit_exact(digits_graph, digits_run):
    x, event, dense = digits_run
    ref = golden.run(digits_graph, x)[0]
    assert np.array_equal(event.logits, ref)
    assert np.array_equal(dense.logits, ref)
    assert event.model_id == build_plan(digits_graph).model_id


def test_clock_gating_changes_nothing_but_speed(digits_graph, digits_run):
    """Simulations gate each engine's clock; boards get the ungated design: same logits, same cycles."""
    x, event, _ = digits_run
    plain = simulate(build_plan(digits_graph), x[:8], build_dir=BUILD, clock_gating=False)
    assert np.array_equal(plain.logits, event.logits[:8])
    assert np.array_equal(plain.cycles, event.cycles[:8])
    assert np.array_equal(plain.synops, event.synops[:8])


def test_cycles_follow_the_spikes(digits_run):
    """Event-driven: cycles grow with the spike events of each sample; the dense schedule costs about
    1 / (fraction of synapses driven by a spike) times as many cycles."""
    _, event, dense = digits_run
    assert np.corrcoef(event.events, event.cycles)[0, 1] > 0.9
    assert np.ptp(dense.cycles) <= 0.001 * dense.cycles.mean()   # dense: the same work for every input
    fraction = event.synops.mean() / dense.synops.mean()
    ratio = dense.cycles.mean() / event.cycles.mean()
    assert 0.75 / fraction < ratio < 1.05 / fraction, (ratio, 1 / fraction)
    assert (event.synops / event.cycles).max() <= 16   # never above the P-lane ceiling


def test_simulate_command_reports(capsys):
    code, r = _simulate_cli(capsys, EXAMPLE, "--count", 8, "--trace")
    assert code == 0 and r["mismatches"] == 0 and r["samples"] == 8 and r["simulator"] == "verilator"
    assert r["first_mismatch"] is None and r["traced"]
    assert 5000 < r["cycles_per_inference"] < 12000
    assert 0 < r["ops_per_cycle"] <= r["ops_per_cycle_ceiling"] == r["lanes"] == 16


def test_a_mismatch_fails_and_names_the_layer(capsys, monkeypatch):
    real = golden.run

    def corrupted(graph, x, trace=False):
        logits, env = real(graph, x, trace)
        env["block0.mlp.fc1.sn"] = env["block0.mlp.fc1.sn"].copy()
        env["block0.mlp.fc1.sn"][1, 0, 3, 5] += 1
        return logits, env

    monkeypatch.setattr(golden, "run", corrupted)
    code, r = _simulate_cli(capsys, EXAMPLE, "--count", 2, "--trace")
    assert code == 1 and r["mismatches"] == 1 and r["mismatched_samples"] == [1]
    assert r["first_mismatch"]["tensor"] == "block0.mlp.fc1.sn"
    assert r["first_mismatch"]["position"] == [0, 3, 5] and r["first_mismatch"]["sample"] == 1


@pytest.mark.parametrize("args", [["--lanes", "12"], ["--lanes", "0"], ["--simulator", "modelsim"]])
def test_bad_options_are_refused(capsys, args):
    try:
        code = cli.main(["simulate", "--generator", str(EXAMPLE), *args])
    except SystemExit as exc:            # argparse's usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1


# configurations no other test names: widths, heads, bits, levels, time steps, attention forms, inputs
CONFIGS = {
    "sdsa1-T2-D1-b2": "--attention sdsa1 --timesteps 2 --levels 1 --bits 2 --dim 16 --heads 2 --classes 4",
    "events-T3-D2-b8": "--attention linear --timesteps 3 --levels 2 --bits 8 --dim 24 --heads 3 --input events",
    "rgb-b3-hidden24": "--timesteps 1 --levels 4 --bits 3 --dim 16 --heads 1 --mlp-ratio 1.5 --channels 3",
    "sdsa1-depth2-d2": "--attention sdsa1 --levels 4 --bits 4 --depth 2 --dim 8 --heads 4",
    "16px-T2-8heads": "--timesteps 2 --levels 1 --bits 2 --dim 32 --heads 8 --no-pos-embed --image-size 16 --patch 4",
}


@pytest.fixture(scope="module")
def config_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("configs")
    paths = {}
    for name, flags in CONFIGS.items():
        paths[name] = folder / f"{name}.pt"
        assert cli.main(["train", "--dataset", "synthetic", "--epochs", "0", *flags.split(),
                         "--out", str(paths[name])]) == 0
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_configurations_are_bit_exact_in_every_layer(capsys, config_models, name):
    code, r = _simulate_cli(capsys, config_models[name], "--count", 6, "--trace")
    assert code == 0, r["first_mismatch"]
    assert r["mismatches"] == 0 and r["samples"] == 6


@pytest.mark.slow
def test_amaranth_simulator_agrees(capsys, config_models):
    code, r = _simulate_cli(capsys, config_models["rgb-b3-hidden24"], "--count", 1, "--simulator", "amaranth")
    assert code == 0 and r["mismatches"] == 0 and r["simulator"] == "amaranth"


@pytest.mark.slow
def test_icarus_runs_the_bundled_model(capsys):
    """The same host-bus script from a cocotb bench on Icarus Verilog: bit-exact, same cycle count."""
    code, r = _simulate_cli(capsys, EXAMPLE, "--count", 1, "--simulator", "icarus")
    assert code == 0 and r["mismatches"] == 0 and r["simulator"] == "icarus"
    assert r["cycles_per_inference"] == 7908          # as in Verilator (tests above: sample 0)
