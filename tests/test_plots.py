"""compiler.flows.plots: the numbers drawn are the numbers the reports print (checked without matplotlib's drawing),
the PNGs are real pictures, ``inspect --plot`` refuses bad input before any work, and a build without matplotlib
still works and says why it has no plots. CI installs the ``plots`` extra (the Makefile's ``.[test,plots]``):
nothing here is skipped without matplotlib; its absence is simulated."""

import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from compiler.flows import plots
from compiler.cli import main
from compiler.ir import golden, metrics
from compiler.ir import ops as ir

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "digits.pt"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def _assert_pictures(paths) -> None:
    for path in map(Path, paths):
        width, height = _png_size(path)
        assert 500 <= width <= 2000 and 250 <= height <= 4000, (path.name, width, height)
        assert path.stat().st_size > 10_000          # axes, labels and bars, not an empty canvas


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: "), captured.err
    return captured.err


@pytest.fixture
def no_matplotlib(monkeypatch):
    """matplotlib as if it were not installed: every ``import matplotlib...`` raises ImportError."""
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)


# ---------------------------------------------------------------- the data drawn, as numbers

def test_firing_rates_are_the_neurons_outputs_and_average_to_inspects_sparsity(digits_graph, digits_test):
    x = digits_test.x[:16]
    rates = plots.firing_rates(digits_graph, x)
    neurons = [op for op in digits_graph.ops if isinstance(op, ir.Neuron)]
    assert rates.layers == [op.name for op in neurons] and rates.samples == 16 and rates.levels == 4
    assert rates.timesteps == 1
    _, env = golden.run(digits_graph, x, trace=True)
    out = env["block0.mlp.fc1.sn"]                   # [B, T, N, C]: 16 tokens x 128 channels
    k = rates.layers.index("block0.mlp.fc1.sn")
    assert rates.outputs[k] == 16 * 128 and rates.rates[k] == [float((out[:, 0] != 0).mean())]
    # the overall rate is what inspect prints as activation sparsity, from the other side
    sparsity = metrics.summarize(digits_graph, x, 0)["activation_sparsity"]
    assert rates.overall() == pytest.approx(1 - sparsity, abs=1e-12)


def test_firing_rates_per_time_step(tmp_path):
    assert main(["train", "--dataset", "synthetic", "--input", "events", "--timesteps", "3", "--levels", "1",
                 "--epochs", "0", "--out", str(tmp_path / "ev.pt")]) == 0
    from compiler.api import load, lower, samples

    model = load(tmp_path / "ev.pt")
    graph = lower(model).graph
    x, _ = samples(model, count=6)
    rates = plots.firing_rates(graph, x)
    assert rates.timesteps == 3 and all(len(r) == 3 for r in rates.rates) and rates.levels == 1
    _, env = golden.run(graph, x, trace=True)
    first = graph.ops[[op.name for op in graph.ops].index(rates.layers[0])].dst
    assert rates.rates[0] == [float((env[first][:, t] != 0).mean()) for t in range(3)]
    assert rates.overall() == pytest.approx(1 - metrics.summarize(graph, x, 0)["activation_sparsity"])
    _assert_pictures([plots.draw_firing_rates(rates, tmp_path / "f.png", "events")])     # the heat map


def test_resources_of_a_build_report_are_its_used_estimated_and_totals():
    report = {"kind": "overlay", "board": "ulx3s-85f", "device": "LFE5U-85F", "lanes": 16,
              "resources": {"LUT4": {"used": 22452, "total": 83640, "percent": 26.84},
                            "FF": {"used": 13798, "total": 83640, "percent": 16.5},
                            "DP16KD": {"used": 152, "total": 208, "percent": 73.08},
                            "MULT18X18D": {"used": 51, "total": 156, "percent": 32.69}},
              "distributed_ram": {"used": 1100, "total": 2613, "note": ""},
              "fit_totals": {"LUT4": 83640, "FF": 83640, "DP16KD": 208, "MULT18X18D": 156, "DPR16X4": 2613},
              "overlay": {"resources": {"LUT4": 21900, "FF": 13500, "DP16KD": 152, "MULT18X18D": 51}}}
    rows = {r.name: (r.used, r.estimated, r.available) for r in plots.resources(report)}
    assert rows == {"LUT4": (22452, 21900, 83640), "FF": (13798, 13500, 83640), "DP16KD": (152, 152, 208),
                    "MULT18X18D": (51, 51, 156), "DPR16X4": (1100, None, 2613)}
    estimate = {k: v for k, v in report.items() if k not in ("resources", "distributed_ram")}   # no nextpnr yet
    assert [(r.name, r.used) for r in plots.resources(estimate)] == [
        ("LUT4", None), ("FF", None), ("DP16KD", None), ("MULT18X18D", None)]
    assert plots.resource_source(report).startswith("the overlay on the ulx3s-85f (LFE5U-85F), 16 lanes, placed")
    assert "estimated before synthesis" in plots.resource_source(estimate)


# ---------------------------------------------------------------- inspect --plot

def test_inspect_plot_draws_what_inspect_prints(tmp_path, capsys):
    out = tmp_path / "pictures"
    assert main(["inspect", str(EXAMPLE), "--count", "8", "--program", "--plot", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    names = [plots.FIRING, plots.SYNOPS, plots.CYCLES, plots.RESOURCES]
    assert report["plots"] == {"dir": str(out), "board": "ulx3s-85f", "files": [str(out / n) for n in names],
                               "skipped": []}
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    _assert_pictures(report["plots"]["files"])
    # the synaptic operations drawn are inspect's layers with synapses, in its order
    ops = plots.synaptic_ops(report["layers"])
    assert [(o.name, o.dense, o.effective) for o in ops] == [
        (r["name"], r["dense_ops"], r["effective_ops"]) for r in report["layers"] if r["kind"]]
    assert sum(o.dense for o in ops) == report["synaptic_ops"]["dense"]
    assert sum(o.effective for o in ops) == pytest.approx(report["synaptic_ops"]["effective"])
    # the cycles drawn are the program listing's, its END descriptor aside
    cycles = plots.program_cycles(report["program"])
    descriptors = report["program"]["descriptors"]
    assert [(r.name, r.cycles) for r in cycles.rows] == [(d["name"], d["cycles"]) for d in descriptors[:-1]]
    assert cycles.end == descriptors[-1]["cycles"] and descriptors[-1]["kind"] == "END"
    total_line = report["program"]["listing"].splitlines()[-1]
    assert total_line.startswith(f"total: {cycles.total + cycles.end:,.0f} cycles per inference")


def test_inspect_plot_in_words_and_its_refusals(tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["inspect", str(EXAMPLE), "--count", "4", "--plot", str(out), "--board", "ulx3s-25f"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[-4:] == [f"plot: {out / n}" for n in plots.FILES]
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    # a folder that is not empty: refused before the model is loaded, nothing written
    assert main(["inspect", str(EXAMPLE), "--plot", str(out)]) == 2
    assert "the folder is not empty" in _one_error_line(capsys)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    (out / "notes.txt").write_text("mine")
    assert main(["inspect", str(EXAMPLE), "--count", "4", "--plot", str(out), "--force"]) == 0
    capsys.readouterr()
    assert (out / "notes.txt").read_text() == "mine" and len(list(out.iterdir())) == 5
    for argv, message in [
            (["--plot", str(tmp_path / "missing" / "p")], "its parent folder"),
            (["--plot", str(out / "notes.txt")], "exists and is not a folder"),
            (["--plot", ""], "--plot is an empty path"),
            (["--plot", str(tmp_path / "q"), "--board", "nope"], "unknown board 'nope'"),
            (["--plot", str(tmp_path / "q"), "--lanes", "0"], "--lanes must be an integer from 1 to 256"),
            (["--board", "ulx3s"], "--board is for --plot"),
            (["--force"], "--force is for --plot")]:
        assert main(["inspect", str(tmp_path / "no-such-model.pt"), *argv]) == 2, argv
        assert message in _one_error_line(capsys), argv
    assert not (tmp_path / "q").exists()


def test_inspect_plot_without_matplotlib_is_one_error_line(tmp_path, capsys, no_matplotlib):
    assert not plots.available()
    assert main(["inspect", str(EXAMPLE), "--plot", str(tmp_path / "p")]) == 2
    assert _one_error_line(capsys) == "error: plots need matplotlib: pip install 'qsd-fpga[plots]'\n"
    assert not (tmp_path / "p").exists()
    assert main(["inspect", str(EXAMPLE), "--count", "2"]) == 0      # inspect itself needs no matplotlib
    assert "activation sparsity" in capsys.readouterr().out


def test_a_conv_model_gets_every_picture_from_the_overlay(tmp_path, capsys):
    model = tmp_path / "mf.pt"
    assert main(["train", "--dataset", "synthetic", "--image-size", "16", "--arch", "metaformer", "--dims", "8,16",
                 "--depths", "1,1", "--heads", "2", "--epochs", "0", "--out", str(model)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(model), "--count", "4", "--plot", str(tmp_path / "p"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)["plots"]
    # its cycles are the overlay program's (conv stems run there), and so is the resources plot's estimate
    assert [Path(f).name for f in r["files"]] == list(plots.FILES) and r["board"] == "ulx3s-85f"
    assert r["skipped"] == []
    _assert_pictures(r["files"])


# ---------------------------------------------------------------- builds

def test_an_overlay_build_embeds_its_plots_in_report_md(tmp_path, capsys, monkeypatch):
    from compiler.flows import overlay
    from test_overlay_build import _Tools

    monkeypatch.setenv(overlay.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(overlay, "_run_tools", _Tools())
    out = tmp_path / "o"
    assert main(["build", str(EXAMPLE), "--board", "ulx3s", "--overlay", "--out", str(out), "--samples", "3",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["plots"] == {"files": list(plots.FILES), "note": None}
    assert json.loads((out / "report.json").read_text())["plots"] == report["plots"]
    _assert_pictures(out / name for name in plots.FILES)
    md = (out / "report.md").read_text()
    for name in plots.FILES:
        assert f"![{plots.CAPTIONS[name]}]({name})" in md
    # the cycles drawn are the report's: the program's exact cycles, its mean over the samples
    rows = [line.split() for line in report["program"]["listing"].splitlines()[2:-1]]
    assert sum(float(r[-1].replace(",", "")) for r in rows) == pytest.approx(report["cycles_per_inference"], abs=1)


def test_a_build_without_matplotlib_says_the_plots_need_the_extra(tmp_path, capsys, monkeypatch, no_matplotlib):
    from compiler.flows import overlay
    from test_overlay_build import _Tools

    monkeypatch.setenv(overlay.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(overlay, "_run_tools", _Tools())
    monkeypatch.setattr(overlay, "SIM_CYCLE_BUDGET", 0)             # the plots are the point, not the simulation
    out = tmp_path / "o"
    assert main(["build", str(EXAMPLE), "--board", "ulx3s", "--out", str(out), "--samples", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["plots"] == {"files": [], "note": plots.MISSING}
    assert not list(out.glob("*.png")) and (out / "top.bit").exists()
    assert f"No plots: {plots.MISSING}." in (out / "report.md").read_text()


def test_markdown_of_a_report_without_plots_is_unchanged():
    assert plots.markdown(None) == []
    assert plots.markdown({"files": [], "note": "n"}) == ["## Plots", "", "No plots: n.", ""]


def test_the_drawing_functions_take_empty_and_odd_data(tmp_path):
    """A layer the overlay cannot run yet (no cycles) is marked, zero effective operations draw on a log axis."""
    cycles = plots.Cycles([plots.LayerCycles("a", "MATMUL", 100.0), plots.LayerCycles("b", "CONV", None)], "test")
    assert cycles.total == 100.0
    ops = [plots.LayerOps("a", "AC", 1000.0, 0.0), plots.LayerOps("b", "MAC", 10.0, 10.0)]
    rows = [plots.Resource("LUT4", 100, used=150, estimated=90)]              # over the device: above 100%
    files = plots.write(tmp_path, cycles=cycles, ops=ops, resource_rows=rows,
                        firing=plots.FiringRates([], [], [], 0, 1))
    assert [f.name for f in files] == [plots.SYNOPS, plots.CYCLES, plots.RESOURCES]
    _assert_pictures(files)
    assert np.isfinite(plots.FiringRates(["n"], [[0.5, 0.25]], [4], 2, 1).overall())


# ---------------------------------------------------------------- the Python API

def test_the_api_draws_the_same_pictures_and_refuses_as_the_cli(tmp_path, monkeypatch):
    import compiler

    model = compiler.load(EXAMPLE)
    x, _ = compiler.samples(model, count=6)
    report = compiler.plot(model, tmp_path / "p", x)
    assert [Path(f).name for f in report["files"]] == list(plots.FILES) and report["board"] == "ulx3s-85f"
    assert repr(report).startswith(f"<plot report: 4 PNGs in {tmp_path / 'p'}: firing_rates.png")
    _assert_pictures(report["files"])
    for args, kwargs, message in [
            ((tmp_path / "p",), {}, "the folder is not empty"),
            ((tmp_path / "q", x.astype(np.float32)), {}, "must be uint8"),
            ((tmp_path / "q",), {"board": "nope"}, "unknown board"),
            ((tmp_path / "q",), {"lanes": 0}, "--lanes must be at least 1"),
            ((tmp_path / "q",), {"lanes": 257}, "from 1 to 256")]:
        with pytest.raises(compiler.UserError, match=message):
            compiler.plot(model, *args, **kwargs)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(compiler.UserError, match=r"plots need matplotlib: pip install 'qsd-fpga\[plots\]'"):
        compiler.plot(model, tmp_path / "q")
    assert not (tmp_path / "q").exists()
