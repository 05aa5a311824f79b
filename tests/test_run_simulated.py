"""``run --simulated``: the CLI starts the simulated board itself (the Verilated UART bridge and the overlay behind a
pty: sim/uart_sim.py) and runs against it, so that the whole board flow can be tried without a board; its options
are checked before any work."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from compiler.cli import main
from conftest import EXAMPLE

ROOT = Path(__file__).resolve().parent.parent
SIM_DIR = ROOT / "build" / "sim"


@pytest.mark.parametrize("extra, message", [
    ([], "--port is needed"),
    (["--simulated", "--port", "/dev/ttyUSB0"], "not both"),
    (["--port", "/dev/ttyUSB0", "--generator"], "the one-engine-per-layer generator was removed"),
    (["--port", "/dev/ttyUSB0", "--build-dir", "x"], "--build-dir is for --simulated"),
    (["--simulated", "--baud", "30000000"], "too fast"),
])
def test_options_that_do_not_go_together_are_refused_before_any_work(tmp_path, capsys, extra, message):
    status = main(["run", str(tmp_path / "no-such-model.pt"), "--count", "1", *extra])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []


def test_an_unusable_build_dir_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    status = main(["run", str(EXAMPLE), "--simulated", "--build-dir", str(tmp_path / "file" / "sim")])
    err = capsys.readouterr().err
    assert status == 2 and "cannot write simulator builds there" in err and err.count("\n") == 1


@pytest.mark.slow
def test_run_against_the_simulated_board_classifies_like_the_golden_model(capsys):
    """The ULX3S-85F's standard overlay behind the pty: ``run`` loads the program and weights over the UART and
    classifies like the golden model, in the formula's cycles. About a minute the first time (the board's
    Verilator model), seconds once it is cached."""
    from compiler.frontend import checkpoint
    from compiler.frontend.data import load_dataset
    from compiler.flows.lower import lower
    from compiler.ir import golden

    status = main(["run", str(EXAMPLE), "--simulated", "--count", "3", "--json", "--build-dir", str(SIM_DIR)])
    out = capsys.readouterr()
    assert status == 0, out.err
    r = json.loads(out.out)
    model = checkpoint.load(EXAMPLE)
    ref = golden.run(lower(model), load_dataset("digits", model.cfg, "test", count=3).x)[0]
    assert r["samples"] == 3 and r["logits_equal"] == 3 and r["class_mismatches"] == 0
    assert r["classes"] == ref.argmax(1).tolist()
    assert r["kind"] == "overlay" and r["cycle_model_error"] == 0 and r["image_words"] > 1000
    assert r["simulated"]["design"] == "overlay" and r["simulated"]["clock_mhz"] == 48
    assert r["simulated"]["cycles"] > 3 * r["cycles_min"] and r["simulated"]["framing_errors"] == 0
    assert r["port"].startswith("/dev/") and r["latency_us"] == pytest.approx(r["cycles_per_inference"] / 48)

    # the command as a user types it, against the same (now cached) board
    proc = subprocess.run([sys.executable, "-m", "compiler", "run", str(EXAMPLE), "--simulated", "--count", "2",
                           "--build-dir", str(SIM_DIR)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "simulated board:" in proc.stdout and "logits 2/2 identical" in proc.stdout


@pytest.mark.slow
def test_run_a_model_whose_weights_stream_from_the_simulated_boards_sdram(tmp_path, capsys, monkeypatch):
    """12,544 weight words do not fit the ULX3S-85F's standard overlay: the simulated board is the overlay that
    streams them, with LiteDRAM on a model of the SDRAM chip. ``run`` loads the weight image into it over the
    UART (CRC-checked) and the logits match the golden model's."""
    model = tmp_path / "m.pt"
    assert main(["train", "--dataset", "synthetic", "--epochs", "0", "--samples", "64", "--dim", "128", "--depth",
                 "1", "--heads", "8", "--image-size", "8", "--patch", "4", "--channels", "1", "--out", str(model)]) == 0
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)                     # no overlay build of this model to find: the board's own
    status = main(["run", str(model), "--simulated", "--overlay", "--count", "1", "--json", "--build-dir",
                   str(SIM_DIR)])
    out = capsys.readouterr()
    assert status == 0, out.err
    r = json.loads(out.out)
    assert r["logits_equal"] == 1 and "SDRAM-streaming" in r["simulated"]["what"]
    assert r["image_words"] > 4 * 12_544 // 2                   # the external image: two SDRAM words a bus word
