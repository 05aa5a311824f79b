"""``simulate --overlay``: the bundled model's program on the Verilated overlay through the host driver, every
stored tensor compared with the golden model, and cycles equal to the descriptors' formula."""

import json

import pytest

from compiler.cli import main
from conftest import EXAMPLE


@pytest.mark.slow
def test_the_bundled_model_traced_at_a_lane_count_that_divides_nothing(capsys, tmp_path):
    status = main(["simulate", str(EXAMPLE), "--overlay", "--lanes", "7", "--count", "3", "--trace", "--json",
                   "--build-dir", str(tmp_path)])
    r = json.loads(capsys.readouterr().out)
    assert status == 0
    assert r["mismatches"] == 0 and r["first_mismatch"] is None and r["traced"]
    assert r["schedule"] == "overlay" and r["lanes"] == 7 and r["samples"] == 3
    assert r["cycle_model_error"] == 0 and r["cycles_per_inference"] == r["cycles_modelled_per_inference"]
    assert 0 < r["lane_utilization"] <= 1
    assert r["config"]["lanes"] == 7


@pytest.mark.slow
def test_the_dense_baseline_computes_the_same_in_more_cycles(capsys, tmp_path):
    """``--dense``: the same program with every lane an event, spiking or not: bit-exact, in exactly the formula's
    cycles, and slower than the event-driven program by the zeros it skips."""
    reports = []
    for extra in ([], ["--dense"]):
        assert main(["simulate", str(EXAMPLE), "--count", "2", "--json", "--build-dir", str(tmp_path), *extra]) == 0
        reports.append(json.loads(capsys.readouterr().out))
    sparse, dense = reports
    assert not sparse["dense"] and dense["dense"] and dense["mismatches"] == 0
    assert dense["cycles_per_inference"] == dense["cycles_modelled_per_inference"]
    assert dense["classes"] == sparse["classes"]
    assert dense["spike_events_per_inference"] > 2 * sparse["spike_events_per_inference"]
    assert dense["cycles_per_inference"] > 1.5 * sparse["cycles_per_inference"]
    assert main(["simulate", str(EXAMPLE), "--count", "1", "--dense", "--build-dir", str(tmp_path)]) == 0
    assert "overlay accelerator (dense: every lane an event)" in capsys.readouterr().out


@pytest.mark.slow
def test_the_bundled_model_with_its_weights_streamed_from_sdram(capsys, tmp_path):
    """A 256-word weight store and parameter memories of 40 lane groups: every MATMUL's weights are FETCHed from
    the SDRAM (LiteDRAM on the device model) into alternate halves, each tile's while the tile before it
    computes, and the per-channel parameters of runs of layers into alternate halves of theirs; bit-exact in every layer, and the cycle formula, which counts a fetch at the SDRAM's measured rate
    (``hdl.npu.overlay.SDRAM``), within 1% of the simulation."""
    status = main(["simulate", str(EXAMPLE), "--overlay", "--weight-store", "256", "--param-store", "40", "--count",
                   "2", "--trace", "--json", "--build-dir", str(tmp_path)])
    r = json.loads(capsys.readouterr().out)
    assert status == 0 and r["mismatches"] == 0 and r["traced"]
    ext = r["external_memory"]
    assert ext["weight_store_words"] == r["config"]["weight_depth"] == 256 and r["config"]["ext_depth"] >= 808
    assert ext["fetches"] > 10 and ext["streamed_words"] >= 4 * 808 - 3
    assert ext["sdram_bound_cycles"] == pytest.approx(ext["streamed_words"] / 0.95)
    assert r["cycles_per_inference"] == pytest.approx(r["cycles_modelled_per_inference"], rel=0.01)
    assert ext["compute_cycles"] < r["cycles_modelled_per_inference"]
    assert ext["placement"] == ext["parameters"] == "external memory"
    # the fetches overlap the compute: less than the sum of the bounds
    assert r["cycles_per_inference"] < ext["compute_cycles"] + ext["sdram_bound_cycles"]


@pytest.mark.parametrize("extra, message", [(["--simulator", "amaranth"], "invalid choice: 'amaranth'"),
                                            (["--simulator", "icarus", "--trace"], "drop --simulator icarus"),
                                            (["--weight-store", "256", "--waveform", "x.fst"], "--weight-store"),
                                            (["--post-lanes", "3"], "must divide the lanes (16)"),
                                            (["--param-store", "64"], "add --weight-store WORDS")])
@pytest.mark.parametrize("overlay", [[], ["--overlay"]])              # the default, or asked for
def test_options_the_overlay_does_not_take_are_refused_early(capsys, extra, message, overlay):
    try:
        status = main(["simulate", "no-such-model.pt", *overlay, *extra])
    except SystemExit as exc:                      # argparse's usage errors
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_the_removed_generator_is_refused_early(capsys):
    assert main(["simulate", "no-such-model.pt", "--generator", "--dense"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --generator: the one-engine-per-layer generator was removed") and err.count("\n") == 1
