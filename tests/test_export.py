"""``export MODEL --out DIR --board B``: the RTLIL a board build synthesizes, the same as Verilog, and the tools'
constraints and scripts, written atomically into a new (or, with ``--force``, replaced) folder; bad input and
models no hardware runs are refused with one line before anything is written."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from compiler.cli import main
from compiler.flows import build
from sim import verilog
from test_cli_errors import call_cli as _call

FILES = ["build_top.bat", "build_top.json", "build_top.sh", "top.il", "top.lpf", "top.v", "top.ys"]


def _refused(status, out, err, *fragments):
    assert "Traceback" not in err and status == 2, (status, err)
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert out == ""
    for fragment in fragments:
        assert fragment in err, (fragment, err)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "small.pt"
    assert main(["train", "--dataset", "synthetic", "--epochs", "0", "--dim", "8", "--heads", "2", "--out",
                 str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def exported(small_model, tmp_path_factory):
    """``export --json`` of the small model: (its folder, its report)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("export") / "design"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["export", "--generator", str(small_model), "--board", "ulx3s", "--out", str(out), "--lanes", "4",
                     "--json"]) == 0
    return out, json.loads(stdout.getvalue())


def test_export_writes_the_design_and_reports_it(exported, small_model):
    out, r = exported
    assert sorted(p.name for p in out.iterdir()) == FILES
    assert sorted(p.name for p in out.parent.iterdir()) == ["design"]            # no staging folder left
    assert next(iter(r)) == "schema_version" and r["schema_version"] == 1
    assert (r["model"], r["board"], r["device"], r["lanes"], r["clock_mhz"], r["top"]) == (
        str(small_model), "ulx3s-85f", "LFE5U-85F", 4, 100.0, "top")
    assert {f["name"]: f["bytes"] for f in r["files"]} == {p.name: p.stat().st_size for p in out.iterdir()}
    assert "module top(" in (out / "top.v").read_text()
    assert (out / "top.ys").read_text().count("synth_ecp5") == 1 and "LOCATE" in (out / "top.lpf").read_text()
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask                 # a folder's usual mode, not mkdtemp's


def test_the_rtlil_is_what_build_synthesizes(exported, small_model, tmp_path):
    """build's own steps for the same configuration write the same top.il, and top.v is its Verilog."""
    out, _ = exported
    b = build.Build(build.BuildConfig(model=small_model, board="ulx3s", out=tmp_path / "b", lanes=4))
    build.step_load(b)
    build.step_estimate(b)
    build.step_generate(b)
    assert (b.staging / "top.il").read_text() == (out / "top.il").read_text()
    assert (b.staging / "top.lpf").read_text() == (out / "top.lpf").read_text()
    assert verilog.from_rtlil((out / "top.il").read_text()) == (out / "top.v").read_text()


def test_the_verilog_elaborates_against_the_ecp5_cells(exported):
    out, _ = exported
    r = subprocess.run([verilog._yosys(), "-q", "-p", "read_verilog -lib +/ecp5/cells_bb.v +/ecp5/cells_sim.v; "
                        "read_verilog top.v; hierarchy -check -top top"], cwd=out, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def test_a_non_empty_folder_needs_force(small_model, tmp_path, capsys):
    out = tmp_path / "design"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    status, stdout, err = _call(capsys, "export", "--generator", small_model, "--board", "ulx3s", "--out", out)
    _refused(status, stdout, err, "exists and is not empty", "--force")
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    status, stdout, err = _call(capsys, "export", "--generator", small_model, "--board", "ulx3s-25f", "--out", out, "--force")
    assert status == 0, err
    assert sorted(p.name for p in out.iterdir()) == FILES and "ulx3s-25f" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["design"]


@pytest.mark.parametrize("case,fragments", [
    ("file", ["exists and is not a folder"]),
    ("cwd", ["holds the working folder"]),
    ("board", ["unknown board", "ulx3s"]),
    ("lanes", ["--lanes must divide the model width 8"]),
    ("clock", ["--clock"]),
    ("model", ["no such file"]),
])
def test_bad_input_is_refused_and_writes_nothing(small_model, tmp_path, capsys, monkeypatch, case, fragments):
    out = tmp_path / "design"
    args = ["export", "--generator", small_model, "--board", "ulx3s", "--out", out]
    if case == "file":
        out.write_text("x")
    elif case == "cwd":
        monkeypatch.chdir(tmp_path)
        args[-1] = "."
        args.append("--force")
    elif case == "board":
        args[4] = "nosuchboard"
    elif case == "lanes":
        args += ["--lanes", "3"]
    elif case == "clock":
        args += ["--clock", "-5"]
    elif case == "model":
        args[2] = tmp_path / "missing.pt"
    before = sorted(p.name for p in tmp_path.iterdir())
    status, stdout, err = _call(capsys, *args)
    _refused(status, stdout, err, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_conv_model_is_refused(tmp_path, capsys):
    model = tmp_path / "mf.pt"
    assert main(["train", "--dataset", "synthetic", "--image-size", "16", "--arch", "metaformer", "--dims", "4,8",
                 "--heads", "2", "--epochs", "0", "--out", str(model)]) == 0
    status, stdout, err = _call(capsys, "export", "--generator", model, "--board", "ulx3s", "--out", tmp_path / "design")
    _refused(status, stdout, err, "not supported by the one-engine-per-layer generator: drop --generator")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mf.pt"]


def test_help(capsys):
    status, out, _ = _call(capsys, "export", "--help")
    assert status == 0 and "--out DIR" in out and "--board" in out and "--force" in out and "top.v" in out
