"""``python -m compiler estimate``: build's compile step and fit check as a command of its own (no synthesis), its
JSON, its exit statuses and its refusals."""

import json
import subprocess
import sys

import pytest

from boards import get_board
from compiler.cli import main
from compiler.flows import build
from conftest import EXAMPLE, ROOT


def overlay_json(capsys, *args):
    status = main(["estimate", str(EXAMPLE), *map(str, args), "--json"])
    return status, json.loads(capsys.readouterr().out)


def test_the_overlay_estimate_is_builds_compile_step(capsys):
    """``estimate``: the board's standard overlay, its resources and the program's cycles,
    the same as the build's ``compile`` step computes (the listing, the exact per-sample cycles)."""
    from compiler.flows import overlay
    from compiler.hw import overlay_config

    status, r = overlay_json(capsys, "--board", "ulx3s")
    assert status == 0 and r["schema_version"] == 1 and r["kind"] == "overlay" and r["fits"] and r["refusal"] is None
    b = overlay.OverlayBuild(overlay.OverlayBuildConfig(model=EXAMPLE, board="ulx3s"))
    b.spec = get_board("ulx3s")
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


@pytest.mark.parametrize("args, fragment", [
    (["--board", "nope"], "unknown board 'nope'"),
    (["--board", "ulx3s", "--lanes", "0"], "lanes must be at least 1"),
    (["--board", "ulx3s", "--lanes", "99"], "the overlay's lanes must be an integer from 1 to 64"),
    (["--board", "ulx3s", "--generator"], "the one-engine-per-layer generator was removed"),
    (["--board", "ulx3s", "--samples", "0"], "must be >= 1"),
    ([], "--board"),
])
def test_bad_input_is_one_error_line(capsys, args, fragment):
    try:
        status = main(["estimate", str(EXAMPLE), *args])
    except SystemExit as exc:                      # argparse's usage errors
        status = exc.code
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1 and fragment in err


def test_a_broken_model_file_is_refused(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["estimate", str(bad), "--board", "ulx3s"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}") and err.count("\n") == 1


def test_help():
    r = subprocess.run([sys.executable, "-m", "compiler", "estimate", "--help"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "usage:" in r.stdout and "--lanes" in r.stdout and "synthesis" in r.stdout
