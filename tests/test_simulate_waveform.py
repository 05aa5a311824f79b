"""``simulate --waveform FILE.fst|.vcd``: a waveform of the first sample's run from a tracing Verilator build of the
same design; a suffix, simulator or file that cannot be written refused before any work."""

import json
import re

import pytest

from compiler.cli import main
from compiler.flows import simulate as simulate_flow


def _refused(args, capsys, message):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_what_cannot_be_written_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    model = str(tmp_path / "no-such-model.pt")          # refused before the model is looked at
    _refused(["simulate", model, "--waveform", str(tmp_path / "w.ghw")], capsys, "must end in .fst or .vcd")
    _refused(["simulate", model, "--waveform", str(tmp_path / "w")], capsys, "not nothing")
    _refused(["simulate", model, "--waveform", str(tmp_path / "w.vcd"), "--simulator", "icarus"], capsys,
             "--waveform is the Verilator harness's: drop --simulator icarus")
    _refused(["simulate", model, "--waveform", str(tmp_path / "no" / "w.vcd")], capsys, "does not exist")
    (tmp_path / "old.vcd").write_text("mine")
    _refused(["simulate", model, "--waveform", str(tmp_path / "old.vcd")], capsys, "--force")
    assert (tmp_path / "old.vcd").read_text() == "mine"
    monkeypatch.setattr(simulate_flow, "fst_writer_available", lambda: False)
    _refused(["simulate", model, "--waveform", str(tmp_path / "w.fst")], capsys, "apt install liblz4-dev")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.vcd"]


@pytest.mark.slow
def test_a_vcd_of_the_first_sample(small_model, tmp_path, capsys):
    """A tracing build of a small model's overlay, then its run (about two minutes with the untraced build)."""
    out = tmp_path / "small.vcd"
    status = main(["simulate", str(small_model), "--lanes", "4", "--count", "2", "--waveform", str(out), "--json",
                   "--build-dir", str(tmp_path / "sim")])
    r = json.loads(capsys.readouterr().out)
    assert status == 0 and r["mismatches"] == 0
    w = r["waveform"]
    assert w["file"] == str(out) and w["format"] == "vcd" and w["sample"] == 0 and w["bytes"] == out.stat().st_size
    assert w["cycles"] > r["cycles_max"]                 # the program's load, then sample 0's inference
    text = out.read_text()
    assert "$timescale 1ns $end" in text and re.search(r"\$var wire 1 \S+ clk \$end", text)
    assert re.search(r"\$var wire 32 \S+ bus__rdata \[31:0\] \$end", text)
    last = max(int(t) for t in re.findall(r"^#(\d+)$", text, re.M))
    assert last >= 10 * w["cycles"]                      # 10 ns a cycle, loading and reading included
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim", "small.vcd"]   # no temporary file left


@pytest.mark.slow
def test_an_fst_of_the_overlay(small_model, tmp_path, capsys):
    if not simulate_flow.fst_writer_available():
        pytest.skip("no lz4.h for Verilator's FST writer here (apt install liblz4-dev)")
    out = tmp_path / "overlay.fst"
    status = main(["simulate", str(small_model), "--overlay", "--lanes", "4", "--count", "1", "--waveform", str(out),
                   "--json", "--build-dir", str(tmp_path / "sim")])
    r = json.loads(capsys.readouterr().out)
    assert status == 0 and r["mismatches"] == 0 and r["waveform"]["format"] == "fst"
    assert r["waveform"]["cycles"] > r["cycles_per_inference"]        # the program's load and the inference
    data = out.read_bytes()
    assert len(data) == r["waveform"]["bytes"] > 1000 and data[0] == 0   # FST's header block (type 0) first
