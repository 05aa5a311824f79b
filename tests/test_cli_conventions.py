"""The project's conventions: a license, the ``qsd-fpga`` entry point and ``--version`` agreeing with the package
metadata, CITATION.cff, the changelog, py.typed markers, ``schema_version`` in every JSON output, one name per
figure, and an internal error's own exit status with its traceback in a log file."""

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

import compiler
from compiler import cli
from compiler.cli import main
from compiler.flows import SCHEMA_VERSION
from conftest import EXAMPLE, ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = metadata.version("qsd-fpga")
PACKAGES = ("compiler", "hdl", "boards", "sim")


def test_mit_license_declared_and_shipped():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "qsd-fpga contributors" in text
    assert PYPROJECT["project"]["license"] == "MIT"
    assert metadata.metadata("qsd-fpga")["License-Expression"] == "MIT"


def test_the_entry_point_is_the_cli():
    assert PYPROJECT["project"]["scripts"] == {"qsd-fpga": "compiler.cli:main"}
    (entry,) = [e for e in metadata.entry_points(group="console_scripts") if e.name == "qsd-fpga"]
    assert entry.load() is main


def test_version_agrees_with_the_package_metadata():
    assert compiler.__version__ == VERSION == PYPROJECT["project"]["version"]
    script = Path(sys.executable).with_name("qsd-fpga")
    for cmd in ([sys.executable, "-m", "compiler"], [str(script)]):
        r = subprocess.run([*cmd, "--version"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and r.stdout == f"qsd-fpga {VERSION}\n", (cmd, r.stdout, r.stderr)


def test_citation_and_changelog():
    cff = (ROOT / "CITATION.cff").read_text()
    assert "cff-version: 1.2.0" in cff and f"version: {VERSION}\n" in cff and "license: MIT" in cff
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "Keep a Changelog" in changelog and "## [Unreleased]" in changelog and f"## [{VERSION}]" in changelog


def test_packages_are_typed():
    data = PYPROJECT["tool"]["setuptools"]["package-data"]
    for package in PACKAGES:
        assert (ROOT / package / "py.typed").is_file()
        assert "py.typed" in data[package]


# ---------------------------------------------------------------- JSON outputs

def test_every_json_output_goes_through_one_place():
    """Every JSON the CLI prints is ``_emit``'s (which puts ``schema_version`` first); the only other JSON
    written by the commands is a build's report.json, an export's report.json,
    a trace folder's index.json (``simulate --trace-dir``) and ``train --history``'s file, which carry
    ``schema_version`` themselves."""
    writers = []
    for path in [ROOT / "compiler" / "cli.py", *sorted((ROOT / "compiler" / "flows").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("dump", "dumps") and getattr(node.func.value, "id", None) == "json"):
                writers.append(f"{path.name}:{node.lineno}")
    # overlay.py: an overlay build's report.json, and the overlay cache's own records and key (not outputs)
    others = [w for w in writers if not w.startswith("overlay.py")]
    assert [w.split(":")[0] for w in others] == ["cli.py", "cli.py", "export.py", "trace_dir.py"], writers
    for flow in ("export.py", "overlay.py", "trace_dir.py"):
        assert '"schema_version": SCHEMA_VERSION' in (ROOT / "compiler" / "flows" / flow).read_text()
    assert '{"schema_version": SCHEMA_VERSION, "model": str(out), **history}' in (ROOT / "compiler" / "cli.py").read_text()


def test_emit_puts_schema_version_first(capsys):
    cli._emit({"a": 1}, True, print)
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["schema_version", "a"] and out["schema_version"] == SCHEMA_VERSION == 1


@pytest.mark.parametrize("args", [
    ["inspect", EXAMPLE, "--count", "4", "--json"],
    ["evaluate", EXAMPLE, "--count", "4", "--json"],
    ["clean", "--dry-run", "--json"],
])
def test_json_outputs_carry_the_schema_version(capsys, args):
    assert main([str(a) for a in args]) == 0
    out = json.loads(capsys.readouterr().out)
    assert next(iter(out)) == "schema_version" and out["schema_version"] == 1


def test_one_name_per_figure_in_the_docs():
    """The names that were retired for their twins in other commands appear nowhere in the docs."""
    docs = "\n".join(p.read_text() for p in (ROOT / "docs").glob("*.md"))
    for old in ("`energy_estimate`", "value_uj", "golden_accuracy", "`synaptic_ops`, `spike_events`"):
        assert old not in docs, old


# ---------------------------------------------------------------- an internal error

@pytest.fixture
def crash(monkeypatch, tmp_path):
    """``inspect`` raising an unexpected exception; the log goes to ``tmp_path``."""
    def boom(args):
        raise RuntimeError("something\nunexpected")
    monkeypatch.setattr(cli, "cmd_inspect", boom)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    return tmp_path


def test_an_internal_error_has_its_own_status_and_a_log(crash, capsys):
    assert main(["inspect", "model.pt"]) == cli.INTERNAL_ERROR == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("internal error") and "report" in err
    assert "RuntimeError: something\\nunexpected" in err
    (log,) = crash.glob("qsd-fpga-crash-*.log")
    assert str(log) in err
    text = log.read_text()
    assert "Traceback" in text and "RuntimeError: something" in text and "inspect model.pt" in text


def test_a_second_crash_never_overwrites_the_first_log(crash, capsys):
    assert main(["inspect", "a.pt"]) == 3 and main(["inspect", "b.pt"]) == 3
    logs = sorted(crash.glob("qsd-fpga-crash-*.log"))
    assert len(logs) == 2 and {"a.pt" in p.read_text() for p in logs} == {True, False}


def test_bad_input_is_still_status_2_and_the_docs_say_3(capsys):
    assert main(["inspect", "no-such-model.pt"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    doc = (ROOT / "docs" / "cli.md").read_text()
    assert re.search(r"\*\*3\*\* \| an internal error", doc)


def test_a_closed_stdout_is_not_an_internal_error(tmp_path):
    """``... --json | head``: the reader went away; exit 141 as a shell reports SIGPIPE, no crash log."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "compiler", "inspect", str(EXAMPLE), "--count", "1", "--json"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()                            # before the command writes anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == cli.BROKEN_PIPE == 141, err
    assert err == "" and not list(tmp_path.iterdir())


def test_usage_names_the_command_it_was_run_as():
    script = Path(sys.executable).with_name("qsd-fpga")
    r = subprocess.run([str(script), "estimate"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.endswith("(see qsd-fpga estimate --help)\n"), r.stderr
