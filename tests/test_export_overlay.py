"""``export MODEL --board B --out DIR``: the board top of the board's standard overlay configuration (what ``build``
synthesizes once and caches) as RTLIL and Verilog, its constraints and scripts, the model's program (images and
listing) and report.json, written atomically into a new (or, with ``--force``, replaced) folder; a model that
does not fit the configuration, and bad input, are refused with one line before anything is written.
(``--overlay``, which chose the overlay once, is accepted.)"""

import contextlib
import io
import json
import os
import subprocess
from pathlib import Path

import pytest

from boards import get_board
from compiler.cli import main
from compiler.flows import overlay
from compiler.hw import overlay_config
from hdl.npu.regmap import config_hash
from sim import verilog
from test_cli_errors import call_cli as _call

FILES = ["build_top.bat", "build_top.json", "build_top.sh", "program.npz", "program.txt", "report.json", "top.il",
         "top.lpf", "top.v", "top.ys"]


def _refused(status, out, err, *fragments):
    assert "Traceback" not in err and status == 2, (status, err)
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert out == ""
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def _train(path: Path, *flags) -> Path:
    assert main(["train", "--dataset", "synthetic", "--epochs", "0", "--dim", "8", "--heads", "2", *flags,
                 "--out", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("model") / "small.pt")


@pytest.fixture(scope="module")
def exported(small_model, tmp_path_factory):
    """``export --overlay --lanes 2 --json`` of the small model (2 lanes: the smallest design, quickest to
    elaborate): (its folder, its --json report)."""
    out = tmp_path_factory.mktemp("export") / "design"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["export", str(small_model), "--board", "ulx3s", "--overlay", "--lanes", "2", "--out", str(out),
                     "--json"]) == 0
    return out, json.loads(stdout.getvalue())


def test_export_overlay_writes_the_design_the_program_and_a_report(exported, small_model):
    out, r = exported
    assert sorted(p.name for p in out.iterdir()) == FILES
    assert sorted(p.name for p in out.parent.iterdir()) == ["design"]            # no staging folder left
    assert next(iter(r)) == "schema_version" and r["schema_version"] == 1
    config = overlay_config.board_config(get_board("ulx3s").fit_totals, 2)
    assert (r["kind"], r["model"], r["board"], r["lanes"], r["clock_mhz"], r["top"], r["lanes_choice"]) == (
        "overlay", str(small_model), "ulx3s-85f", 2, overlay.DEFAULT_CLOCK_MHZ, "top", "given")
    assert r["overlay"]["config_hash"] == f"{config_hash(config):08x}"
    assert r["overlay"]["limits"]["lanes"] == 2 and r["overlay"]["limits"]["max_classes"] >= 10
    assert {f["name"]: f["bytes"] for f in r["files"]} == {p.name: p.stat().st_size for p in out.iterdir()}
    on_disk = json.loads((out / "report.json").read_text())
    assert next(iter(on_disk)) == "schema_version"
    assert {k: on_disk[k] for k in ("model_id", "overlay", "program", "cycles_per_inference")} == {
        k: r[k] for k in ("model_id", "overlay", "program", "cycles_per_inference")}
    assert r["cycles_min"] <= r["cycles_per_inference"] <= r["cycles_max"] and r["cycles_min"] > 0
    assert "module top(" in (out / "top.v").read_text() and "LOCATE" in (out / "top.lpf").read_text()
    assert (out / "top.ys").read_text().count("synth_ecp5") == 1
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask


def test_the_program_is_what_run_loads_and_what_inspect_lists(exported, small_model, capsys):
    out, r = exported
    meta, images = overlay.load_images(out / "program.npz")
    assert f"{meta['model_id']:08x}" == r["model_id"] and f"{meta['config_hash']:08x}" == r["overlay"]["config_hash"]
    assert meta["config"].lanes == 2 and any(len(words) for words in images.values())
    listing = (out / "program.txt").read_text()
    assert listing.startswith(f"program {r['model_id']}: {r['program']['descriptors']} descriptors, 2 lanes")
    lines = listing.splitlines()                # a header, a column line, the descriptors, the total
    assert len(lines) == r["program"]["descriptors"] + 3 and lines[-1].startswith("total: ")
    # the same descriptors as inspect --program lists (inspect sizes its configuration to the model)
    status, stdout, _ = _call(capsys, "inspect", small_model, "--program", "--lanes", "2", "--count", "8", "--json")
    names = [d["name"] for d in json.loads(stdout)["program"]["descriptors"]]
    assert status == 0 and [line.split()[1] for line in lines[2:-1]] == names


def test_the_verilog_is_the_rtlils(exported):
    out, _ = exported
    assert verilog.from_rtlil((out / "top.il").read_text()) == (out / "top.v").read_text()


def test_the_rtlil_is_what_the_overlay_cache_synthesizes(exported, tmp_path):
    """cached_overlay's own preparation of the same configuration writes the same top.il and constraints."""
    out, r = exported
    spec = get_board("ulx3s")
    config = overlay_config.board_config(spec.fit_totals, 2)
    top = overlay._board_top(config, spec, r["clock_mhz"], r["baud"])
    overlay.prepare(top, spec, tmp_path, 1)
    for name in ("top.il", "top.lpf", "top.ys", "build_top.sh"):
        assert (tmp_path / name).read_text() == (out / name).read_text(), name


def test_a_model_that_does_not_fit_the_overlay_is_refused_before_anything_is_written(tmp_path, capsys):
    model = _train(tmp_path / "c40.pt", "--classes", "40")
    status, stdout, err = _call(capsys, "export", model, "--board", "ulx3s", "--overlay", "--out", tmp_path / "d")
    _refused(status, stdout, err, "does not fit the overlay", "40 classes", "configuration")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c40.pt"]


@pytest.mark.parametrize("case,fragments", [
    ("notempty", ["exists and is not empty", "--force"]),
    ("cwd", ["holds the working folder"]),
    ("board", ["unknown board"]),
    ("lanes", ["lanes must be an integer from 1 to 64"]),
    ("file", ["exists and is not a folder"]),
    ("clock", ["--clock"]),
    ("model", ["no such file"]),
])
def test_bad_input_is_refused_and_writes_nothing(small_model, tmp_path, capsys, monkeypatch, case, fragments):
    out = tmp_path / "design"
    args = ["export", small_model, "--board", "ulx3s", "--overlay", "--out", out]
    if case == "notempty":
        out.mkdir()
        (out / "mine.txt").write_text("keep")
    elif case == "cwd":
        monkeypatch.chdir(tmp_path)
        args[-1] = "."
        args.append("--force")
    elif case == "board":
        args[3] = "nosuchboard"
    elif case == "lanes":
        args += ["--lanes", "65"]
    elif case == "file":
        out.write_text("x")
    elif case == "clock":
        args += ["--clock", "-5"]
    elif case == "model":
        args[1] = tmp_path / "missing.pt"
    before = sorted(p.name for p in tmp_path.iterdir())
    status, stdout, err = _call(capsys, *args)
    _refused(status, stdout, err, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    if case == "notempty":
        assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_force_replaces_a_folder_that_is_not_empty(small_model, tmp_path, capsys):
    out = tmp_path / "design"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    status, stdout, err = _call(capsys, "export", small_model, "--board", "ulx3s", "--lanes", "2", "--out", out,
                                "--force")
    assert status == 0, err
    assert sorted(p.name for p in out.iterdir()) == FILES and "ulx3s-85f" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["design"]


def test_the_design_elaborates_against_the_ecp5_cells(exported):
    """Every cell of the RTLIL (top.v is its Verilog: test_the_verilog_is_the_rtlils) is defined, the ECP5's
    primitives by Yosys's cell library, with the ports they have there."""
    out, _ = exported
    r = subprocess.run([verilog._yosys(), "-p", "read_verilog -lib +/ecp5/cells_bb.v +/ecp5/cells_sim.v; "
                        "read_rtlil top.il; hierarchy -check -top top"], cwd=out, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and "ERROR" not in r.stdout, (r.stdout + r.stderr)[-2000:]
    assert "Used module:     \\top.core" in r.stdout and "EHXPLLL" in (out / "top.il").read_text()


def test_help(capsys):
    status, out, _ = _call(capsys, "export", "--help")
    assert status == 0 and "--out DIR" in out and "--board" in out and "--force" in out
    assert "top.v" in out and "program.npz" in out
