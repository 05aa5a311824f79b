"""``python -m compiler run`` end to end in simulation: the host driver (SerialPort -> Link -> Driver) talks over
a pty to the Verilated UART bridge and accelerator (sim/uart_sim.py), classifies digits and checks classes and
logits against the golden model; a board that runs another model is refused. Also ``flash``'s command line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from compiler.frontend import checkpoint

from compiler.ir import golden
from compiler.cli import main
from compiler.flows.lower import lower
from compiler.host.link import SerialPort
from compiler.hw.plan import build_plan
from hdl.accelerator import Accelerator
from sim.uart_sim import UartBoard, simulated_board

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "digits.pt"
SIM_DIR = ROOT / "build" / "sim"          # Verilated models are cached here by a hash of their Verilog
CLOCK_HZ, BAUD = 48_000_000, 3_000_000    # 16 cycles per bit: the fastest simulation at 3 Mbaud


@pytest.fixture(scope="module")
def digits_plan():
    return build_plan(lower(checkpoint.load(EXAMPLE)))


@pytest.fixture(scope="module")
def board(digits_plan):
    """A simulated board running the bundled model (idle: it simulates only while bytes move)."""
    top = UartBoard(Accelerator(digits_plan, ecp5=False), CLOCK_HZ, BAUD)
    # the fixture holds the pty open between the commands' own opens of it, as a terminal would
    with simulated_board(top, SIM_DIR) as sim_board, SerialPort(sim_board.path, timeout=5.0):
        yield sim_board


def test_run_classifies_digits_like_the_golden_model(board, digits_plan, capsys):
    status = main(["run", str(EXAMPLE), "--port", board.path, "--dataset", "digits", "--count", "8", "--json",
                   "--clock", "48"])
    out = capsys.readouterr()
    assert status == 0, out.err
    report = json.loads(out.out)
    from compiler.frontend.data import load_dataset
    x = load_dataset("digits", checkpoint.load(EXAMPLE).cfg, "test", count=8).x
    ref = golden.run(digits_plan.graph, x)[0]
    assert report["samples"] == 8 and report["logits_equal"] == 8 and report["class_mismatches"] == 0
    assert report["classes"] == ref.argmax(1).tolist()
    assert report["model_id"] == f"{digits_plan.model_id:08x}"
    assert report["cycles_min"] > 1000 and report["latency_us"] == pytest.approx(report["cycles_per_inference"] / 48)
    assert all(p["class"] == p["golden_class"] for p in report["per_inference"])


def test_run_as_a_separate_process_prints_a_table(board):
    """The command line as a user types it, against the same simulated board (its pty)."""
    proc = subprocess.run([sys.executable, "-m", "compiler", "run", str(EXAMPLE), "--port", board.path,
                           "--dataset", "digits", "--count", "2"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "logits 2/2 identical" in proc.stdout
    assert "cycles per inference" in proc.stdout


def test_run_refuses_a_board_running_another_model(board, tmp_path, capsys):
    other = tmp_path / "other.pt"
    assert main(["train", "--dataset", "digits", "--epochs", "0", "--dim", "16", "--heads", "2",
                 "--out", str(other)]) == 0
    capsys.readouterr()
    status = main(["run", str(other), "--port", board.path, "--dataset", "digits", "--count", "2"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("error: the board on ")
    assert f"runs model id {build_plan(lower(checkpoint.load(EXAMPLE))).model_id:08x}" in err


def test_run_errors_are_one_line(tmp_path, capsys):
    # no such port
    assert main(["run", str(EXAMPLE), "--port", str(tmp_path / "ttyNONE"), "--count", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot open ") and err.count("\n") == 1
    # a port where nothing answers: a pty whose other end is silent
    import os
    import pty
    master, slave = pty.openpty()
    try:
        assert main(["run", str(EXAMPLE), "--port", os.ttyname(slave), "--count", "1", "--timeout", "0.2"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: no answer from an accelerator on ") and err.count("\n") == 1
    finally:
        os.close(master)
        os.close(slave)
    # not a serial port (pyserial takes any rate, 12345 too: the port itself is refused)
    assert main(["run", str(EXAMPLE), "--port", "/dev/null", "--baud", "12345", "--count", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot open /dev/null: not a serial port") and err.count("\n") == 1


# ---------------------------------------------------------------- flash

def _fake_build(tmp_path, board="ulx3s"):
    out = tmp_path / "b"
    out.mkdir()
    (out / "top.bit").write_bytes(b"\xff\x00")
    (out / "report.json").write_text(json.dumps({"board": board, "bitstream": "top.bit", "model_id": "00000000"}))
    return out


def test_flash_dry_run_prints_the_command(tmp_path, capsys, monkeypatch):
    out = _fake_build(tmp_path)
    monkeypatch.setenv("OPENFPGALOADER", "definitely-not-installed-loader")
    assert main(["flash", str(out), "--dry-run"]) == 0
    assert capsys.readouterr().out.split() == ["openFPGALoader", "-b", "ulx3s", str(out / "top.bit")]
    assert main(["flash", str(out / "top.bit"), "--board", "ulx3s", "--flash", "--cable", "ft2232",
                 "--dry-run"]) == 0
    assert capsys.readouterr().out.split() == ["openFPGALoader", "-b", "ulx3s", "-c", "ft2232", "-f",
                                               str(out / "top.bit")]


def test_flash_errors(tmp_path, capsys, monkeypatch):
    out = _fake_build(tmp_path, board="ulx3s-12f")
    # the build report names another board
    assert main(["flash", str(out), "--board", "ulx3s", "--dry-run"]) == 2
    assert "was built for the ulx3s-12f, not the ulx3s-85f" in capsys.readouterr().err
    # no bitstream
    assert main(["flash", str(tmp_path / "nothing"), "--board", "ulx3s"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    # a bare .bit without --board
    bare = tmp_path / "x.bit"
    bare.write_bytes(b"\x00")
    assert main(["flash", str(bare)]) == 2
    assert "--board is needed" in capsys.readouterr().err
    # no openFPGALoader
    monkeypatch.setenv("OPENFPGALOADER", "definitely-not-installed-loader")
    assert main(["flash", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: openFPGALoader not found") and err.count("\n") == 1
    # openFPGALoader that finds no board
    loader = tmp_path / "openFPGALoader"
    loader.write_text("#!/bin/sh\necho 'Error: no device found' >&2\nexit 1\n")
    loader.chmod(0o755)
    monkeypatch.setenv("OPENFPGALOADER", str(loader))
    assert main(["flash", str(out)]) == 2
    last = capsys.readouterr().err.splitlines()[-1]          # openFPGALoader's own output comes first
    assert last.startswith("error: openFPGALoader failed: Error: no device found") and "plugged in" in last


def test_run_on_something_that_is_not_a_serial_port(tmp_path, capsys):
    plain = tmp_path / "file"
    plain.write_bytes(b"")
    for port in ("/dev/null", str(plain)):
        assert main(["run", str(EXAMPLE), "--port", port, "--dataset", "digits", "--count", "1"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: cannot open {port}: not a serial port"), err


@pytest.mark.parametrize("report, message", [
    ([], "not a build report (a JSON object), but list"),
    (None, "not a build report (a JSON object), but NoneType"),
    ({"board": "ulx3s", "bitstream": 5}, "'bitstream' must be str, not 5"),
    ({"board": ["ulx3s"], "bitstream": "top.bit"}, "'board' must be str, not ['ulx3s']"),
    ({"board": "ulx3s", "bitstream": "/etc/passwd"}, "the bitstream must be a .bit file in the build's folder"),
    ({"board": "ulx3s", "bitstream": "../../x.bit"}, "the bitstream must be a .bit file in the build's folder"),
    ({"board": "ulx3s", "bitstream": "top.bit", "clock_mhz": 0}, "'clock_mhz' must be a positive frequency"),
])
def test_flash_and_run_refuse_a_malformed_build_report(tmp_path, capsys, report, message):
    out = tmp_path / "b"
    out.mkdir()
    (out / "top.bit").write_bytes(b"\xff")
    (out / "report.json").write_text(json.dumps(report))
    assert main(["flash", str(out), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert main(["run", str(EXAMPLE), "--port", "/dev/null", "--build", str(out), "--count", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err


@pytest.mark.parametrize("behaviour", ["flood", "drip", "silent", "hangup"])
def test_run_against_a_hostile_board_on_a_pty_ends_with_one_error_line(capsys, behaviour):
    """A scripted board behind a real pty: one that never stops sending, one that drips a byte just inside
    every timeout, one that never answers, one that hangs up. ``run`` must end, quickly, with one ``error:`` line (no hang, no traceback)."""
    import os
    import threading
    import time

    master, slave = os.openpty()
    path = os.ttyname(slave)
    os.close(slave)
    os.set_blocking(master, False)                             # the scripted board never blocks
    stop = threading.Event()

    def board():
        while not stop.is_set():
            if behaviour == "flood":
                try:
                    os.write(master, b"\x00\xa5" * 512)
                except OSError:
                    time.sleep(0.001)
            elif behaviour == "drip":                          # a byte just inside every timeout
                try:
                    os.write(master, b"\x5a")
                except OSError:
                    pass
                time.sleep(0.15)
            elif behaviour == "hangup":
                time.sleep(0.3)
                os.close(master)
                return
            else:
                time.sleep(0.01)

    thread = threading.Thread(target=board, daemon=True)
    thread.start()
    t0 = time.monotonic()
    try:
        status = main(["run", str(EXAMPLE), "--port", path, "--timeout", "0.2", "--dataset", "digits",
                       "--count", "1"])
    finally:
        stop.set()
        thread.join()
        if behaviour != "hangup":
            os.close(master)
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert time.monotonic() - t0 < 30
