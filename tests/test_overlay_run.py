# amaranth: UnusedElaboratable=no
"""``run`` on an overlay build, end to end against the simulated board: ``python -m compiler run`` -> SerialPort ->
Link -> NpuDriver over a pty to the Verilated UART bridge and ``OverlayBus`` of the ULX3S-85F's standard
configuration (sim/uart_sim.py). The program and weights are loaded (CRC-checked frames), every sample's logits
must equal the golden model's and its cycles the descriptors' formula; a board whose overlay has another
configuration, or a build of another model, is refused with one line."""

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from boards import get_board
from compiler.cli import main
from compiler.errors import UserError
from compiler.flows import overlay
from compiler.flows import run as run_flow
from compiler.hw import overlay_config
from compiler.hw.program import compile_program
from hdl.npu.regmap import config_hash

from test_overlay_build import _Tools

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "digits.pt"
SIM_DIR = ROOT / "build" / "sim"          # Verilated models are cached here by a hash of their Verilog
CLOCK_HZ, BAUD = 48_000_000, 3_000_000    # 16 cycles per bit


def _overlay_build(tmp_path, model, board="ulx3s", name="b"):
    """An overlay build folder made by the flow with stand-in tools (a cache of its own)."""
    mp = pytest.MonkeyPatch()
    try:
        mp.setenv(overlay.CACHE_ENV, str(tmp_path / "cache"))
        mp.setattr(overlay, "_run_tools", _Tools())
        out = tmp_path / name
        assert main(["build", str(model), "--board", board, "--overlay", "--out", str(out), "--samples", "2",
                     "--json"]) == 0
    finally:
        mp.undo()
    return out


@pytest.fixture(scope="module")
def digits_build(tmp_path_factory):
    return _overlay_build(tmp_path_factory.mktemp("overlay"), EXAMPLE)


@pytest.fixture(scope="module")
def other_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "other.pt"
    assert main(["train", "--dataset", "digits", "--epochs", "0", "--dim", "16", "--heads", "2", "--seed", "3",
                 "--out", str(path)]) == 0
    return path


def _args(**kw):
    base = dict(model=str(EXAMPLE), port="/dev/pts/x", build=None)
    return argparse.Namespace(**{**base, **kw})


def test_the_program_comes_from_the_build_or_the_boards_standard_configurations(digits_build, digits_graph,
                                                                                  monkeypatch, tmp_path):
    config = overlay_config.board_config(get_board("ulx3s").fit_totals)
    program, report, source = run_flow._overlay_program(_args(build=str(digits_build)), digits_graph,
                                                        config_hash(config))
    assert program.config == config and report["kind"] == "overlay" and source == str(digits_build)
    monkeypatch.chdir(tmp_path)                   # no build/ here: the device's hash names the configuration
    program, report, source = run_flow._overlay_program(_args(), digits_graph, config_hash(config))
    assert program.config == config and report is None and source == "the standard overlay of the ecpix5-85f, ulx3s-85f"
    with pytest.raises(UserError, match="which is no board's standard configuration; give --build DIR"):
        run_flow._overlay_program(_args(), digits_graph, 0x12345678)
    with pytest.raises(UserError, match=f"runs the overlay of configuration 12345678, not {config_hash(config):08x}"):
        run_flow._overlay_program(_args(build=str(digits_build)), digits_graph, 0x12345678)


def test_a_build_of_another_model_or_with_other_images_is_refused(digits_build, digits_graph, other_model,
                                                                  tmp_path, capsys):
    config = overlay_config.board_config(get_board("ulx3s").fit_totals)
    # another model's build: refused before the port is opened
    assert main(["run", str(other_model), "--port", "/dev/null", "--build", str(digits_build), "--count", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is the build of model id" in err
    # the build's images replaced by another model's
    other_build = _overlay_build(tmp_path, other_model, name="other")
    capsys.readouterr()
    forged = tmp_path / "forged"
    shutil.copytree(digits_build, forged)
    shutil.copy(other_build / "program.npz", forged / "program.npz")
    with pytest.raises(UserError, match="holds the program of model id"):
        run_flow._overlay_program(_args(build=str(forged)), digits_graph, config_hash(config))
    # a build that is not an overlay build
    report = json.loads((forged / "report.json").read_text())
    report.pop("kind")
    (forged / "report.json").write_text(json.dumps(report))
    with pytest.raises(UserError, match="is not an overlay build"):
        run_flow._overlay_program(_args(build=str(forged)), digits_graph, config_hash(config))


# ---------------------------------------------------------------- against the simulated board

@pytest.fixture(scope="module")
def board():
    """A simulated board running the ULX3S-85F's standard overlay (idle: it simulates only while bytes move)."""
    from compiler.host.link import SerialPort
    from hdl.npu.bus import OverlayBus
    from sim.uart_sim import UartBoard, simulated_board

    config = overlay_config.board_config(get_board("ulx3s").fit_totals)
    top = UartBoard(OverlayBus(config), CLOCK_HZ, BAUD)
    with simulated_board(top, SIM_DIR) as sim_board, SerialPort(sim_board.path, timeout=5.0):
        yield sim_board


@pytest.mark.slow
def test_run_loads_the_program_and_classifies_like_the_golden_model(board, digits_build, digits_graph, capsys):
    status = main(["run", str(EXAMPLE), "--port", board.path, "--build", str(digits_build), "--dataset", "digits",
                   "--count", "6", "--clock", "48", "--json"])
    out = capsys.readouterr()
    assert status == 0, out.err
    r = json.loads(out.out)
    from compiler.frontend import checkpoint
    from compiler.frontend.data import load_dataset
    from compiler.ir import golden
    x = load_dataset("digits", checkpoint.load(EXAMPLE).cfg, "test", count=6).x
    ref = golden.run(digits_graph, x)[0]
    config = overlay_config.board_config(get_board("ulx3s").fit_totals)
    program = compile_program(digits_graph, config)
    assert r["kind"] == "overlay" and r["config_hash"] == f"{config_hash(config):08x}"
    assert r["samples"] == 6 and r["logits_equal"] == 6 and r["class_mismatches"] == 0
    assert r["classes"] == ref.argmax(1).tolist() and r["model_id"] == f"{program.model_id:08x}"
    assert r["cycle_model_error"] == 0 and r["cycles_min"] > 1000
    from hdl.npu.regmap import AddressMap
    chunks = AddressMap(config).chunks
    assert r["image_words"] == sum(len(w) * chunks[m] for m, w in program.images().items()) > 4000
    assert r["load_seconds"] > 0
    assert r["latency_us"] == pytest.approx(r["cycles_per_inference"] / 48)
    print(f"\nload {r['image_words']} words in {r['load_seconds']:.1f} s, {r['host_seconds_per_inference']:.2f} s "
          f"per inference, {r['cycles_per_inference']:.0f} cycles", file=__import__('sys').stderr)


@pytest.mark.slow
def test_run_without_a_build_finds_the_standard_configuration(board, tmp_path, monkeypatch):
    """The command line as a user types it, in a folder without builds: the board's configuration hash names
    the ULX3S-85F's standard overlay."""
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "compiler", "run", str(EXAMPLE), "--port", board.path,
                           "--dataset", "digits", "--count", "2"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert "logits 2/2 identical" in proc.stdout, proc.stdout
    assert "the standard overlay of the ecpix5-85f, ulx3s-85f" in proc.stdout, proc.stdout
    assert "largest difference from the board's counter: 0 cycles" in proc.stdout


@pytest.mark.slow
def test_run_refuses_a_board_whose_overlay_has_another_configuration(board, tmp_path, capsys):
    build45 = _overlay_build(tmp_path, EXAMPLE, board="ulx3s-45f")
    capsys.readouterr()
    status = main(["run", str(EXAMPLE), "--port", board.path, "--build", str(build45), "--count", "1"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    config = overlay_config.board_config(get_board("ulx3s").fit_totals)
    assert err.startswith(f"error: the board on {board.path} runs the overlay of configuration "
                          f"{config_hash(config):08x}, not ") and "flash that build's bitstream" in err
