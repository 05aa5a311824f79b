"""``python -m compiler run``'s refusals, each one line before any inference: no such port, a port where nothing
answers, something that is not a serial port, and a board that does not run the overlay (a toy device behind the
Verilated UART bridge, sim/uart_sim.py). The overlay end to end is tests/test_overlay_run.py. Also ``flash``'s
command line."""

import json
from pathlib import Path

import pytest

from compiler.cli import main
from compiler.host.link import SerialPort
from sim.uart_sim import simulated_board
from test_uart_sim import MODEL_ID, _board

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "digits.pt"


def test_run_refuses_a_board_that_does_not_run_the_overlay(tmp_path, capsys):
    with simulated_board(_board(), tmp_path) as board, SerialPort(board.path, timeout=5.0):
        status = main(["run", str(EXAMPLE), "--port", board.path, "--count", "1"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert err.startswith(f"error: the board on {board.path} does not run the overlay (it answers {MODEL_ID:08x}")
    assert "python -m compiler build" in err


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
