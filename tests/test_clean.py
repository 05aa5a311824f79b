"""``clean``: the simulation caches (and with ``--calibrate`` the calibration's) removed, their bytes counted;
``--dry-run`` removes nothing; a build in progress (its lock held), lock files, run folders and anything that
is not a cache entry stay."""

import fcntl
import json
import os

import pytest

from compiler.flows import clean
from test_cli_errors import call_cli as _call

HASH = "0123456789abcdef"


def _file(path, size):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)


def _cache(root):
    """A simulation cache as sim.verilator_host and sim.cocotb_run leave it, and things that are not its."""
    _file(root / f"verilator-{HASH}" / "Vtop_sim", 1000)
    _file(root / f"verilator-{HASH}" / "obj" / "Vtop.o", 500)
    (root / f"verilator-{HASH}.lock").touch()
    _file(root / f"uart-sim-{HASH[::-1]}" / "Vuart_sim", 300)
    _file(root / f".verilator-{'1' * 16}-k3j2" / "top.v", 70)          # an interrupted build (no lock held)
    _file(root / "icarus" / "sim.vvp", 40)
    _file(root / "icarus" / "top.v", 2)
    (root / "icarus" / ".lock").touch()
    _file(root / "icarus" / "run-abc" / "script.bin", 9)                   # a run that may wait for the lock
    _file(root / "run" / "run-xyz" / "reads.bin", 11)                      # a Verilator run in progress
    _file(root / "notes.txt", 5)                                           # not a cache entry
    _file(root / "verilator-short" / "keep", 5)
    os.symlink(root / "run", root / f"verilator-{'2' * 16}")               # a link is not followed
    return 1000 + 500 + 300 + 70 + 40 + 2


KEPT = {"notes.txt", "verilator-short", f"verilator-{'2' * 16}", "run", "icarus", f"verilator-{HASH}.lock"}


def test_dry_run_lists_and_counts_without_removing(tmp_path, capsys):
    total = _cache(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    status, out, err = _call(capsys, "clean", "--build-dir", tmp_path, "--dry-run", "--json")
    assert status == 0, err
    r = json.loads(out)
    assert r["schema_version"] == 1 and r["dry_run"] is True and r["folders"] == [str(tmp_path)]
    assert r["bytes"] == total
    assert {os.path.basename(e["path"]): e["kind"] for e in r["entries"]} == {
        f"verilator-{HASH}": "simulator binary", f"uart-sim-{HASH[::-1]}": "simulator binary",
        f".verilator-{'1' * 16}-k3j2": "interrupted build", "icarus": "icarus build"}
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    status, out, _ = _call(capsys, "clean", "--build-dir", tmp_path, "--dry-run")
    assert status == 0 and out.splitlines()[-1].startswith(f"would remove 4 entries, {total:,} bytes")


def test_clean_removes_the_cache_and_nothing_else(tmp_path, capsys):
    total = _cache(tmp_path)
    status, out, err = _call(capsys, "clean", "--build-dir", tmp_path)
    assert status == 0, err
    assert f"removed 4 entries, {total:,} bytes" in out
    assert {p.name for p in tmp_path.iterdir()} == KEPT
    assert sorted(p.name for p in (tmp_path / "icarus").iterdir()) == [".lock", "run-abc"]
    assert (tmp_path / "run" / "run-xyz" / "reads.bin").is_file()
    status, out, _ = _call(capsys, "clean", "--build-dir", tmp_path, "--json")
    assert status == 0 and json.loads(out)["entries"] == []                # a second clean finds nothing


def test_a_build_in_progress_is_kept(tmp_path, capsys):
    _cache(tmp_path)
    (tmp_path / f"verilator-{'1' * 16}.lock").touch()
    held = []
    for name in (f"verilator-{HASH}.lock", f"verilator-{'1' * 16}.lock", "icarus/.lock"):
        fd = os.open(tmp_path / name, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)                     # another open file: as another process would hold it
        held.append(fd)
    try:
        status, out, err = _call(capsys, "clean", "--build-dir", tmp_path, "--json")
    finally:
        for fd in held:
            os.close(fd)
    assert status == 0, err
    r = json.loads(out)
    assert [os.path.basename(e["path"]) for e in r["entries"]] == [f"uart-sim-{HASH[::-1]}"]
    assert sorted(os.path.basename(s["path"]) for s in r["skipped"]) == sorted(
        [f"verilator-{HASH}", f".verilator-{'1' * 16}-k3j2", "icarus"])
    assert (tmp_path / f"verilator-{HASH}" / "Vtop_sim").is_file() and (tmp_path / "icarus" / "sim.vvp").is_file()


def test_defaults_and_calibrate(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, out, err = _call(capsys, "clean", "--json")                    # no build folder: nothing to do
    assert status == 0 and json.loads(out)["folders"] == [] and json.loads(out)["bytes"] == 0
    _cache(tmp_path / "build" / "sim")
    _file(tmp_path / "build" / "test-sim" / f"verilator-{HASH}" / "Vtop_sim", 8)
    _file(tmp_path / "build" / "calibrate" / "synth" / ("a" * 20) / "stat.json", 30)
    _file(tmp_path / "build" / "calibrate" / "models" / "synthetic1-abc.pt", 20)
    _file(tmp_path / "build" / "digits-ulx3s" / "report.json", 3)        # a build's output: never a cache
    status, out, err = _call(capsys, "clean", "--json")
    assert status == 0, err
    r = json.loads(out)
    assert r["folders"] == list(clean.SIM_CACHES) and (tmp_path / "build" / "calibrate" / "synth").is_dir()
    status, out, err = _call(capsys, "clean", "--calibrate", "--json")
    r = json.loads(out)
    assert status == 0 and r["bytes"] == 50 and r["folders"][-1] == clean.CALIBRATE_CACHE
    assert sorted(p.name for p in (tmp_path / "build").iterdir()) == ["calibrate", "digits-ulx3s", "sim", "test-sim"]
    assert not any((tmp_path / "build" / "calibrate").iterdir())
    assert (tmp_path / "build" / "digits-ulx3s" / "report.json").is_file()


@pytest.mark.parametrize("make,fragment", [
    (lambda p: None, "no such folder"),
    (lambda p: p.write_text(""), "not a folder"),
])
def test_a_bad_build_dir_is_refused(tmp_path, capsys, make, fragment):
    target = tmp_path / "cache"
    make(target)
    status, out, err = _call(capsys, "clean", "--build-dir", target)
    assert status == 2 and out == "" and err.startswith("error: ") and len(err.splitlines()) == 1
    assert fragment in err


def test_help(capsys):
    status, out, _ = _call(capsys, "clean", "--help")
    assert status == 0 and "--dry-run" in out and "--build-dir" in out and "--calibrate" in out


def test_the_patterns_are_the_simulators_names():
    """The names clean recognises are the ones sim.verilator_host.verilate makes (binary and staging folder)."""
    import inspect

    from sim import uart_sim, verilator_host

    src = inspect.getsource(verilator_host.verilate)
    assert "hexdigest()[:16]" in src and 'f"{prefix}-{digest}"' in src and 'prefix=f".{prefix}-{digest}-"' in src
    prefixes = ["verilator"] + (["uart-sim"] if 'prefix="uart-sim"' in inspect.getsource(uart_sim) else [])
    for prefix in prefixes:
        assert clean._BINARY.match(f"{prefix}-{HASH}") and clean._STAGING.match(f".{prefix}-{HASH}-x1y2")
    assert "uart-sim" in prefixes
