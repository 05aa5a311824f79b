"""The Python API (docs/api.md): its notebook example runs as written and prints what the page says; inputs are
checked by the CLI's rules with the CLI's messages; reprs are one short line; ``import compiler`` stays light."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

import compiler
from compiler.cli import main
from compiler.frontend.data import load_dataset
from compiler.ir import golden
from conftest import EXAMPLE, ROOT


def example() -> tuple[str, str]:
    """``(code, output)``: the first Python block of docs/api.md, and the output its comments show (the comment
    lines that follow a line of code, one output each)."""
    text = (ROOT / "docs" / "api.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    output, after_code = [], False
    for line in code.splitlines():
        if line.startswith("#") and after_code:
            output.append(line[1:])
        else:
            after_code = bool(line.strip())
    return code, "\n".join(output)


def _words(text: str) -> str:
    return " ".join(text.split())


def test_the_docs_example_runs_as_written_and_prints_what_it_says():
    code, expected = example()
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert _words(r.stdout) == _words(expected)


def test_import_compiler_is_light():
    code = ("import sys, compiler, compiler.ir\n"
            "assert 'torch' not in sys.modules and 'compiler.api' not in sys.modules, sorted(sys.modules)\n"
            "assert 'load' in dir(compiler) and compiler.__version__\n"
            "try:\n    compiler.no_such_name\nexcept AttributeError as exc:\n    print(exc)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "module 'compiler' has no attribute 'no_such_name'\n"


@pytest.fixture(scope="module")
def model():
    return compiler.load(EXAMPLE)


@pytest.fixture(scope="module")
def lowered(model):
    return compiler.lower(model)


@pytest.fixture(scope="module")
def digits(model):
    data = load_dataset("digits", model.config, "test", count=16)
    return data.x, data.y


def test_predict_is_the_golden_model(model, lowered, digits):
    x, _ = digits
    logits = golden.predict(lowered.graph, x)
    assert np.array_equal(compiler.predict(lowered, x, logits=True), logits)
    assert np.array_equal(compiler.predict(model, x), logits.argmax(1))
    assert np.array_equal(compiler.predict(lowered, x[3]), logits[3:4].argmax(1))     # one sample, no batch axis


def test_samples_as_the_cli_draws_them(model, digits, tmp_path):
    x, y = compiler.samples(model, count=16)
    assert np.array_equal(x, digits[0]) and np.array_equal(y, digits[1])
    np.save(tmp_path / "x.npy", x[:5])
    np.save(tmp_path / "y.npy", y[:5])
    x5, y5 = compiler.samples(model, inputs=tmp_path / "x.npy", labels=tmp_path / "y.npy")
    assert np.array_equal(x5, x[:5]) and np.array_equal(y5, y[:5])
    assert compiler.samples(model, inputs=tmp_path / "x.npy")[1] is None


BAD_IMAGES = {
    "float pixels in [0, 1]": np.random.default_rng(0).random((4, 1, 8, 8)).astype(np.float32),
    "int64 pixels": np.zeros((4, 1, 8, 8), dtype=np.int64),
    "wrong shape": np.zeros((4, 8, 8), dtype=np.uint8),
    "no samples": np.zeros((0, 1, 8, 8), dtype=np.uint8),
}


@pytest.mark.parametrize("name", BAD_IMAGES)
def test_bad_inputs_are_refused_with_the_clis_message(model, lowered, tmp_path, capsys, name):
    array = BAD_IMAGES[name]
    path = tmp_path / "x.npy"
    np.save(path, array)
    assert main(["evaluate", str(EXAMPLE), "--inputs", str(path)]) == 2
    cli_message = capsys.readouterr().err.removeprefix(f"error: {path}: ").strip()
    with pytest.raises(compiler.UserError) as refusal:
        compiler.predict(lowered, array)
    assert str(refusal.value) == f"x: {cli_message}"


def test_a_list_or_a_tensor_is_not_an_array(lowered):
    with pytest.raises(compiler.UserError, match="x: expected a numpy array, not list"):
        compiler.predict(lowered, [[0] * 64])


def test_event_frames_are_checked_too(tmp_path, capsys):
    path = tmp_path / "events.pt"
    assert main(["train", "--dataset", "synthetic", "--input", "events", "--timesteps", "2", "--epochs", "0",
                 "--dim", "8", "--heads", "2", "--out", str(path)]) == 0
    capsys.readouterr()
    events = compiler.load(path)
    x, _ = compiler.samples(events, count=3)
    assert compiler.predict(events, x.astype(bool)).shape == (3,)
    with pytest.raises(compiler.UserError, match="event frames must be binary"):
        compiler.predict(events, x.astype(np.float32) * 0.5)


def test_simulate_a_small_model_on_icarus(tmp_path, capsys):
    """The wrapper end to end, on a model small enough for Icarus Verilog in the cocotb bench (seconds)."""
    path = tmp_path / "small.pt"
    assert main(["train", "--dataset", "synthetic", "--epochs", "0", "--dim", "8", "--heads", "2",
                 "--out", str(path)]) == 0
    capsys.readouterr()
    small = compiler.load(path)
    r = compiler.simulate(small, count=1, lanes=2, simulator="icarus", build_dir=tmp_path / "sim")
    assert r["mismatches"] == 0 and r["samples"] == 1 and r["schema_version"] == 1 and r["model"] == str(path)
    assert repr(r).startswith("<simulate report: 1 sample in icarus, 2 lanes overlay: bit-exact;")


def test_reprs_are_one_short_line(model, lowered):
    est = compiler.estimate(model, "ulx3s", lanes=16)
    for obj in (model, lowered, est):
        text = repr(obj)
        assert "\n" not in text and len(text) < 400, text
    assert repr(est).startswith("<estimate report: ulx3s-85f (LFE5U-85F), the overlay ")
    assert ", 16 lanes: fits;" in repr(est)


def test_estimate_is_the_commands_json(model, capsys):
    est = compiler.estimate(model, "ulx3s", lanes=16)
    assert main(["estimate", str(EXAMPLE), "--board", "ulx3s", "--lanes", "16", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    api = json.loads(json.dumps(est))
    assert api.pop("seconds").keys() == cli.pop("seconds").keys()
    assert api == cli and list(api)[0] == "schema_version"


@pytest.mark.parametrize("call, fragment", [
    (lambda m: compiler.estimate(m, "nope"), "unknown board 'nope'"),
    (lambda m: compiler.estimate(m, "ulx3s", generator=True), "the one-engine-per-layer generator was removed"),
    (lambda m: compiler.estimate(m, "ulx3s", lanes=99), "the overlay's lanes must be an integer from 1 to 64"),
    (lambda m: compiler.estimate(m, "ulx3s", samples=0), "--samples must be at least 1, not 0"),
    (lambda m: compiler.estimate("examples/digits.pt", "ulx3s"), "must be a compiler.Model"),
    (lambda m: compiler.samples(m, count=0), "--count must be at least 1, not 0"),
    (lambda m: compiler.samples(m, dataset="imagenet"), "unknown dataset 'imagenet'"),
    (lambda m: compiler.simulate(m, simulator="modelsim"), "simulator must be one of verilator"),
    (lambda m: compiler.simulate(m, np.zeros((2, 1, 8, 8), np.float64)), "x: images must be uint8"),
    (lambda m: compiler.build(m, "nope"), "unknown board 'nope'"),
    (lambda m: compiler.build(m, "ulx3s", seed=-1), "--seed must be in 0..2147483647"),
    (lambda m: compiler.load("no-such-model.pt"), "no-such-model.pt: no such file"),
])
def test_bad_arguments_are_refused_before_any_work(model, call, fragment):
    with pytest.raises(compiler.UserError, match=re.escape(fragment)):
        call(model)


def test_load_report(tmp_path):
    report = {"schema_version": 1, "kind": "overlay", "board": "ulx3s-85f", "device": "LFE5U-85F", "lanes": 16,
              "fmax_mhz": 78.3, "clock_mhz": 75.0, "timing_met": True, "cycles_per_inference": 8881.0,
              "latency_us": 118.41, "overlay": {"config_hash": "214e963d"}, "bitstream": "top.bit",
              "model_id": "6eba9a86"}
    (tmp_path / "report.json").write_text(json.dumps(report))
    r = compiler.load_report(tmp_path)
    assert r == report and repr(r).startswith("<build report: ulx3s-85f (LFE5U-85F), the overlay 214e963d: Fmax "
                                              "78.3 MHz")
    (tmp_path / "report.json").write_text(json.dumps({**report, "bitstream": "../../etc/passwd"}))
    with pytest.raises(compiler.UserError, match="must be a .bit file"):
        compiler.load_report(tmp_path / "report.json")


def test_export_writes_the_commands_files_and_refuses_as_it_does(model, tmp_path):
    r = compiler.export(model, "ulx3s", tmp_path / "x")
    names = {f["name"] for f in r["files"]}
    assert {"top.il", "top.v", "top.lpf"} <= names
    assert names == {p.name for p in (tmp_path / "x").iterdir()}
    assert r["schema_version"] and r["kind"] == "overlay" and "the overlay" in repr(r)
    assert {"program.npz", "program.txt", "report.json"} <= names
    with pytest.raises(compiler.UserError, match="generator was removed"):
        compiler.export(model, "ulx3s", tmp_path / "g", generator=True)
    assert not (tmp_path / "g").exists()
    with pytest.raises(compiler.UserError, match="not empty"):
        compiler.export(model, "ulx3s", tmp_path / "x")
    with pytest.raises(compiler.UserError, match="board"):
        compiler.export(model, "no-such-board", tmp_path / "y")
    assert not (tmp_path / "y").exists()


def test_simulate_the_overlay(model, tmp_path):
    """The model's program on the Verilated overlay through the host driver, with the boards' 4-lane post unit,
    and its dense baseline; bad options are refused."""
    r = compiler.simulate(model, count=2, post_lanes=4, build_dir=tmp_path / "sim")
    assert r["mismatches"] == 0 and r["schedule"] == "overlay" and r["config"]["post_lanes"] == 4
    assert r["cycle_model_error"] == 0 and repr(r).startswith("<simulate report: 2 samples in verilator, 16 lanes")
    dense = compiler.simulate(model, count=2, post_lanes=4, build_dir=tmp_path / "sim", dense=True)
    assert dense["dense"] and dense["mismatches"] == 0 and dense["cycles_per_inference"] > r["cycles_per_inference"]
    for kwargs, message in (({"post_lanes": 4, "generator": True}, "generator was removed"),
                            ({"simulator": "amaranth"}, "simulator must be one of verilator, icarus"),
                            ({"overlay": True, "param_store": 64}, "add weight_store"),
                            ({"overlay": True, "weight_store": 0}, "weight_store must be")):
        with pytest.raises(compiler.UserError, match=message):
            compiler.simulate(model, count=1, build_dir=tmp_path / "sim", **kwargs)


def test_build_the_overlay_is_the_commands(model, tmp_path, monkeypatch):
    """``build`` hands the overlay build's configuration to its flow (the tools are not run here:
    ``tests/test_overlay_build.py`` covers the flow); ``generator=True`` is refused."""
    from compiler.flows import overlay
    seen = {}

    def run(config):
        seen["config"] = config
        raise compiler.UserError("stopped before synthesis")
    monkeypatch.setattr(overlay, "run", run)
    with pytest.raises(compiler.UserError, match="stopped before synthesis"):
        compiler.build(model, "ulx3s", overlay=True, cache=tmp_path / "cache", seed=2)
    c = seen["config"]
    assert (c.board, c.seed, c.clock_mhz, c.cache, c.standalone) == ("ulx3s", 2, None, tmp_path / "cache", False)
    with pytest.raises(compiler.UserError, match="stopped before synthesis"):
        compiler.build(model, "ulx3s")                  # the default
    with pytest.raises(compiler.UserError, match="generator was removed"):
        compiler.build(model, "ulx3s", standalone=True, generator=True)
