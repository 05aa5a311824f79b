"""``python -m compiler estimate``: build's estimate and fit check as a command of its own (no synthesis), its
JSON, its exit statuses and its refusals."""

import json
import subprocess
import sys

import pytest

from compiler.cli import main
from compiler.flows import build
from conftest import EXAMPLE, ROOT


def estimate_json(capsys, *args):
    status = main(["estimate", "--generator", str(EXAMPLE), *map(str, args), "--json"])
    return status, json.loads(capsys.readouterr().out)


def overlay_json(capsys, *args):
    status = main(["estimate", str(EXAMPLE), *map(str, args), "--json"])
    return status, json.loads(capsys.readouterr().out)


# ---------------------------------------------------------------- the overlay (the default)

def test_the_overlay_estimate_is_builds_compile_step(capsys):
    """``estimate`` without --generator: the board's standard overlay, its resources and the program's cycles,
    the same as the build's ``compile`` step computes (the listing, the exact per-sample cycles)."""
    from compiler.flows import overlay
    from compiler.hw import overlay_config

    status, r = overlay_json(capsys, "--board", "ulx3s")
    assert status == 0 and r["schema_version"] == 1 and r["kind"] == "overlay" and r["fits"] and r["refusal"] is None
    b = overlay.OverlayBuild(overlay.OverlayBuildConfig(model=EXAMPLE, board="ulx3s"))
    b.spec = build.get_board("ulx3s")
    build.load_model(b)
    overlay.step_compile(b)
    config = b.program.config
    assert r["lanes"] == 16 and r["overlay"]["config_hash"] == overlay_config.describe(config)["config_hash"]
    assert r["overlay"]["resources"] == overlay_config.resources(config) and r["overlay"]["resources"]["DP16KD"] == 152
    assert r["cycles_per_inference"] == pytest.approx(float(b.sample_cycles.mean()))
    assert sum(d["cycles"] for d in r["cycles_per_descriptor"]) == pytest.approx(r["cycles_per_inference"])
    assert r["program"]["listing"] == b.program.listing(b.events, b.descriptor_cycles)
    assert r["clock_mhz"] == 75 and r["latency_us"] == pytest.approx(r["cycles_per_inference"] / 75)
    assert r["weights"]["placement"] == "on chip" and r["model_id"] == "6eba9a86"


def test_the_overlay_estimate_streams_where_the_weights_do_not_fit(capsys):
    status, r = overlay_json(capsys, "--board", "ulx3s-12f")
    assert status == 0 and r["fits"] and r["weights"]["placement"] == "external memory"
    assert r["clock_mhz"] == 45 and "SDRAM-streaming" in r["lanes_choice"]
    assert main(["estimate", str(EXAMPLE), "--board", "ulx3s-12f"]) == 0
    out = capsys.readouterr().out
    assert "fits" in out and "external memory" in out and "fetch" in out and "total:" in out


def test_a_model_the_overlay_cannot_hold_is_a_failed_check(capsys, tmp_path):
    """Exit status 1 with the refusal (the shortfall and the configuration field), as the build refuses it."""
    big = tmp_path / "big.pt"
    assert main(["train", "--dataset", "synthetic", "--epochs", "0", "--samples", "16", "--dim", "512",
                 "--heads", "8", "--out", str(big)]) == 0
    capsys.readouterr()
    status = main(["estimate", str(big), "--board", "ulx3s", "--json"])
    r = json.loads(capsys.readouterr().out)
    assert status == 1 and not r["fits"] and "(kv_depth)" in r["refusal"]
    assert main(["estimate", str(big), "--board", "ulx3s"]) == 1
    assert "DOES NOT FIT the overlay" in capsys.readouterr().out


def test_overlay_and_generator_together_are_refused(capsys):
    assert main(["estimate", str(EXAMPLE), "--board", "ulx3s", "--overlay", "--generator"]) == 2
    err = capsys.readouterr().err
    assert err == "error: give either --overlay (the default) or --generator, not both\n"


# ---------------------------------------------------------------- the generator (--generator)


def test_the_bundled_model_on_the_ulx3s(capsys):
    """The figures ``build`` records for the bundled model (docs/build.md: 8 lanes chosen by auto, estimate
    22,266 LUT4, 35 DP16KD, 40 MULT18X18D, 14,172 cycles)."""
    status, r = estimate_json(capsys, "--board", "ulx3s")
    assert status == 0 and r["schema_version"] == 1 and r["fits"] and r["fit_problems"] == []
    assert r["board"] == "ulx3s-85f" and r["device"] == "LFE5U-85F" and r["model_id"] == "6eba9a86"
    assert r["lanes"] == 8 and r["lanes_choice"].startswith("auto")
    est = r["estimate"]
    assert est["resources"]["DP16KD"] == 35 and est["resources"]["MULT18X18D"] == 40
    assert set(r["fit_totals"]) == {"LUT4", "FF", "DP16KD", "MULT18X18D", "DPR16X4"}
    assert [s["name"] for s in r["stages"]] == list(est["cycles_per_stage"])
    assert sum(est["cycles_per_stage"].values()) == pytest.approx(est["cycles_per_inference"])
    assert est["cycles_activity"] == "mean of 8 samples" and r["samples_from"] == "digits/test"
    assert r["seconds"]["estimate"] < 10


def test_same_estimate_as_build(capsys):
    """The command is build's own two first steps: the same plan and the same estimate."""
    b = build.Build(build.BuildConfig(model=EXAMPLE, board="ulx3s", lanes=16))
    b.spec = build.get_board("ulx3s")
    build.load_model(b)
    build.step_estimate(b)
    status, r = estimate_json(capsys, "--board", "ulx3s", "--lanes", "16")
    assert status == 0 and r["lanes"] == 16 and r["lanes_choice"] == "given"
    assert r["estimate"] == json.loads(json.dumps(b.estimate.to_dict()))


def test_a_model_that_does_not_fit_is_a_failed_check(capsys):
    status, r = estimate_json(capsys, "--board", "ulx3s-12f", "--lanes", "16")
    assert status == 1 and not r["fits"]
    assert {p["resource"] for p in r["fit_problems"]} >= {"LUT4", "MULT18X18D"}
    for p in r["fit_problems"]:
        assert p["needed"] > p["available"] == r["fit_totals"][p["resource"]]
    assert r["smallest_fitting_board"] == "ulx3s-85f"


def test_printed_as_a_table(capsys):
    assert main(["estimate", "--generator", str(EXAMPLE), "--board", "ulx3s-12f"]) == 1
    out = capsys.readouterr().out
    assert "DOES NOT FIT" in out and "too many" in out and "block0.mlp.fc1" in out and "cycles per inference" in out


@pytest.mark.parametrize("args, fragment", [
    (["--board", "nope"], "unknown board 'nope'"),
    (["--board", "ulx3s", "--lanes", "3"], "--lanes must divide the model width 32"),
    (["--board", "ulx3s", "--lanes", "0"], "lanes must be at least 1"),
    (["--board", "ulx3s", "--samples", "0"], "must be >= 1"),
    ([], "--board"),
])
def test_bad_input_is_one_error_line(capsys, args, fragment):
    try:
        status = main(["estimate", "--generator", str(EXAMPLE), *args])
    except SystemExit as exc:                      # argparse's usage errors
        status = exc.code
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1 and fragment in err


def test_a_broken_model_file_is_refused(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["estimate", "--generator", str(bad), "--board", "ulx3s"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}") and err.count("\n") == 1


def test_help():
    r = subprocess.run([sys.executable, "-m", "compiler", "estimate", "--help"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "usage:" in r.stdout and "--lanes" in r.stdout and "synthesis" in r.stdout
