"""``python -m compiler estimate``: a model's resources and cycles on a board before any synthesis.

The first two steps of ``build`` (:mod:`compiler.flows.build`) without the output folder and the clock: the
model lowered, the hardware plan at the given or the automatic lane count and its pre-synthesis estimate
(:mod:`compiler.hw.estimate`), compared with the device. Milliseconds once the model is loaded.
"""

from __future__ import annotations

from pathlib import Path

from boards import get_board

from ..hw import estimate as hw_estimate
from . import build


def run(model: str | Path, board: str, lanes: int | None = None,
        samples: int = build.DEFAULT_SAMPLES) -> tuple[dict, int]:
    """``(report, exit status)``: 0 if the estimate fits the board, 1 if not. ``lanes`` None: as ``build
    --lanes auto``; ``samples``: test inputs whose golden-model activity drives the cycle estimate."""
    b = build.Build(build.BuildConfig(model=Path(model), board=board, lanes=lanes, samples=samples))
    b.spec = get_board(board)
    build.load_model(b)
    build.estimate_plan(b)
    totals = build.device_totals(b.spec)
    problems = hw_estimate.fit_problems(b.estimate.resources, totals)
    bigger = build.smallest_fitting_board(b.estimate.resources, like=b.spec) if problems else None
    report = {
        "model": str(model),
        "model_id": f"{b.plan.model_id:08x}",
        "board": b.spec.name,
        "device": b.spec.device,
        "lanes": b.plan.lanes,
        "lanes_choice": b.lanes_note,
        "schedule": "dense" if b.plan.dense else "event-driven",
        "fits": not problems,
        "fit_problems": [{"resource": name, "needed": need, "available": have} for name, need, have in problems],
        "smallest_fitting_board": None if bigger is None else bigger.name,
        "fit_totals": totals,
        "samples": int(len(b.x)),
        "samples_from": b.samples_from,
        "estimate": b.estimate.to_dict(),
        "stages": [{"name": s.name, "kind": s.kind, "ops": list(s.ops)} for s in b.plan.stages],
        "seconds": {"estimate": b.seconds["estimate"]},
    }
    return report, 0 if not problems else 1


def print_report(r: dict) -> None:
    est = r["estimate"]
    verdict = "fits"
    if not r["fits"]:
        bigger = r["smallest_fitting_board"]
        verdict = ("DOES NOT FIT (" + (f"the smallest listed board that fits it is {bigger}" if bigger
                                      else "nor does any listed board") + ")")
    print(f"{r['model']} on the {r['board']} ({r['device']}), {r['lanes']} lane{'s' if r['lanes'] != 1 else ''}, {r['schedule']}: {verdict} "
          f"(estimated before synthesis, in {r['seconds']['estimate'] * 1e3:.0f} ms)")
    print(f"  lanes: {r['lanes_choice']}")
    print(f"  {'resource':<12} {'estimate':>9} {'device':>9} {'%':>6}")
    for name, total in r["fit_totals"].items():
        need = est["resources"][name]
        print(f"  {name:<12} {need:>9,} {total:>9,} {100 * need / total if total else float('inf'):>6.1f}"
              + ("  too many" if any(p["resource"] == name for p in r["fit_problems"]) else ""))
    print(f"  cycles per inference: {est['cycles_per_inference']:,.0f} ({est['cycles_activity']} from "
          f"{r['samples_from']}; {est['cycles_per_inference'] / build.DEFAULT_CLOCK_MHZ:,.1f} us at "
          f"{build.DEFAULT_CLOCK_MHZ:g} MHz)")
    print(f"  {'stage':<22} {'kind':<18} {'cycles':>9}  ops")
    for stage in r["stages"]:
        print(f"  {stage['name']:<22} {stage['kind']:<18} {est['cycles_per_stage'][stage['name']]:>9,.0f}  "
              f"{', '.join(stage['ops'])}")
