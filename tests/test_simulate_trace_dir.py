"""``simulate --trace-dir DIR``: every stored layer of every sample saved beside the golden model's, an index
of which layers matched; a folder that cannot take them refused before any work."""

import json

import numpy as np
import pytest

from compiler.cli import main
from compiler.flows import trace_dir
from conftest import EXAMPLE


@pytest.mark.slow
def test_every_layer_of_every_sample_is_saved_beside_the_golden_models(tmp_path, capsys):
    from compiler import load, lower, samples
    from compiler.ir import golden

    out = tmp_path / "traces"
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier run")           # replaced with --force
    capsys.readouterr()
    status = main(["simulate", str(EXAMPLE), "--count", "2", "--trace-dir", str(out), "--force", "--json"])
    r = json.loads(capsys.readouterr().out)
    assert status == 0 and r["mismatches"] == 0 and r["traced"] and r["trace_dir"] == str(out)
    assert sorted(p.name for p in out.iterdir()) == ["index.json", "sample-00000.npz", "sample-00001.npz"]
    assert not list(tmp_path.glob(".traces.*"))                    # no staging or old folder left
    index = json.loads((out / "index.json").read_text())
    assert index["schema_version"] == 1 and index["samples"] == 2 and index["matched"] is True
    assert index["simulator"] == "verilator" and index["schedule"] == "overlay" and index["model_id"] == r["model_id"]
    assert index["layers"][-1] == "logits" and len(index["layers"]) > 5
    assert [s["file"] for s in index["per_sample"]] == ["sample-00000.npz", "sample-00001.npz"]

    model = load(EXAMPLE)
    x, _ = samples(model, count=2)
    graph = lower(model).graph
    logits, env = golden.run(graph, x, trace=True)
    for b in range(2):
        hw, gold = trace_dir.load(out, b)
        assert list(hw) == index["layers"] and list(gold) == index["layers"]
        for name in index["layers"][:-1]:                           # the golden model's own arrays, reshaped
            assert np.array_equal(gold[name], env[name][b].reshape(hw[name].shape))
            assert np.array_equal(hw[name], gold[name])
            assert index["per_sample"][b]["layers"][name] == {"matched": True, "shape": list(hw[name].shape),
                                                              "differences": 0, "first_differences": []}
        assert np.array_equal(gold["logits"], logits[b]) and np.array_equal(hw["logits"], logits[b])
        with np.load(out / trace_dir.sample_file(b)) as f:
            assert np.array_equal(f["input"], x[b])


def test_the_index_names_every_difference(tmp_path):
    writer = trace_dir.TraceWriter(tmp_path / "t", force=False)
    same = np.arange(12).reshape(1, 3, 4)
    other = same.copy()
    other[0, 2, 1] = -5
    writer.add(0, np.zeros((1, 2, 2), np.uint8), [("a", same, same), ("b", same, same)], [1, 2], [1, 2])
    writer.add(1, np.zeros((1, 2, 2), np.uint8), [("a", same, same), ("b", other, same.ravel())], [1, 2], [1, 3])
    index = writer.finish({"simulator": "test"})
    assert index["matched"] is False and index["mismatched_samples"] == [1]
    assert index["per_layer"]["a"]["samples_matched"] == 2 and index["per_layer"]["b"]["mismatched_samples"] == [1]
    b = index["per_sample"][1]["layers"]["b"]
    assert b["matched"] is False and b["differences"] == 1
    assert b["first_differences"] == [{"position": [0, 2, 1], "hardware": -5, "golden": 9}]
    assert index["per_sample"][1]["layers"]["logits"]["first_differences"][0]["position"] == [1]
    assert json.loads((tmp_path / "t" / "index.json").read_text()) == index
    hw, gold = trace_dir.load(tmp_path / "t", 1)
    assert hw["b"][0, 2, 1] == -5 and gold["b"].shape == (1, 3, 4)


def _refused(args, capsys, message):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_a_folder_that_cannot_take_the_traces_is_refused_before_any_work(tmp_path, capsys):
    missing_model = str(tmp_path / "no-such-model.pt")              # the folder is refused before the model
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    _refused(["simulate", missing_model, "--trace-dir", str(full)], capsys, "not empty")
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    (tmp_path / "file").write_text("")
    _refused(["simulate", missing_model, "--trace-dir", str(tmp_path / "file")], capsys, "not a folder")
    _refused(["simulate", missing_model, "--trace-dir", str(tmp_path / "file" / "t")], capsys, "no folder")
    _refused(["simulate", missing_model, "--trace-dir", str(tmp_path / "a" / "b")], capsys, "no folder")
    _refused(["simulate", missing_model, "--trace-dir", "."], capsys, "working folder")
    _refused(["simulate", missing_model, "--trace-dir", " "], capsys, "empty path")
    _refused(["simulate", missing_model, "--force"], capsys, "--force is for --trace-dir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "full"]


def test_an_unwritable_folder_is_refused(tmp_path, capsys):
    _refused(["simulate", str(tmp_path / "m.pt"), "--trace-dir", "/proc/qsd-traces"], capsys, "cannot write")


def test_a_failed_simulation_leaves_nothing(small_model, tmp_path, capsys, monkeypatch):
    from compiler.flows import simulate

    def broken(*args, **kwargs):
        raise RuntimeError("the simulator broke")

    monkeypatch.setattr(simulate, "_run", broken)
    assert main(["simulate", str(small_model), "--count", "1", "--trace-dir", str(tmp_path / "t"),
                 "--build-dir", str(tmp_path / "sim")]) == 3
    capsys.readouterr()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim"]
