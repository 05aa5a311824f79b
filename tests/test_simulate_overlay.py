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


@pytest.mark.parametrize("extra, message", [(["--dense"], "event-driven only"),
                                            (["--simulator", "icarus"], "runs in verilator")])
def test_options_the_overlay_does_not_take_are_refused_early(capsys, extra, message):
    assert main(["simulate", "no-such-model.pt", "--overlay", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
