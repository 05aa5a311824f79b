"""``python -m compiler estimate``: a model's resources and cycles on a board before any synthesis.

:func:`run`: the first steps of ``build`` (:mod:`compiler.flows.overlay`) without the output folder
and the clock: the model compiled into the program of the board's overlay, the configuration's estimated
resources (:mod:`compiler.hw.overlay_config`) against the device and the program's cycles. Milliseconds once
the model is loaded.
"""

from __future__ import annotations

import time
from pathlib import Path

from boards import get_board

from ..errors import UserError
from . import build, overlay


def run(model: str | Path, board: str, lanes: int | None = None,
        samples: int = build.DEFAULT_SAMPLES) -> tuple[dict, int]:
    """``(report, exit status)`` for ``model`` on ``board``'s overlay (:func:`compiler.flows.overlay.board_program`:
    the standard configuration, else the one that streams the weights from the board's SDRAM): the
    configuration's estimated resources against the device, how full its memories are, and the program's
    cycles per inference and per descriptor on ``samples`` test inputs. Status 0 if the model fits the
    overlay, 1 if it does not (``refusal`` says why); a lane count the board cannot hold is a UserError."""
    from ..hw import overlay_config
    from ..hw.program import model_id, total_events
    spec = get_board(board)
    b = overlay.OverlayBuild(overlay.OverlayBuildConfig(model=Path(model), board=board, lanes=lanes,
                                                        samples=samples))
    b.spec = spec
    # a lane count the board cannot hold is bad input, not a model that does not fit
    overlay_config.board_config(spec.fit_totals, lanes, name=f"the {spec.name}")
    build.load_model(b)
    t0 = time.monotonic()
    refusal = None
    try:
        overlay.step_compile(b)
    except UserError as exc:
        refusal = str(exc)
    seconds = time.monotonic() - t0
    report = {
        "kind": "overlay",
        "model": str(model),
        "model_id": f"{model_id(b.graph):08x}",
        "board": spec.name,
        "device": spec.device,
        "schedule": "overlay",
        "fits": refusal is None,
        "refusal": refusal,
        "fit_totals": build.device_totals(spec),
        "samples": int(len(b.x)),
        "samples_from": b.samples_from,
        "seconds": {"estimate": seconds},
    }
    if refusal is not None:
        return report, 1
    program, config = b.program, b.program.config
    clock = overlay.default_clock(spec, config, lanes is not None)   # build's default target
    report.update({
        "lanes": config.lanes,
        "lanes_choice": ("given" if lanes is not None else
                         f"the {spec.name}'s {'SDRAM-streaming' if config.ext_depth else 'standard'} overlay"),
        "overlay": {**overlay_config.describe(config), "resources": overlay_config.resources(config)},
        "program": {"descriptors": len(program.descriptors), "listing": program.listing(b.events, b.descriptor_cycles),
                    "weight_words": int(len(program.weights)),
                    "bank_words": {bank.name.lower(): int(n) for bank, n in program.bank_words.items()}},
        "weights": program.weight_placement(b.events),
        "cycles_per_inference": float(b.sample_cycles.mean()),
        "clock_mhz": clock,
        "latency_us": float(b.sample_cycles.mean()) / clock,
        "cycles_from": "the descriptors' exact cycle formula on the golden model's events of the samples",
        "cycles_per_descriptor": [{"name": d.name, "kind": d.kind.name, "cycles": float(c)}
                                  for d, c in zip(program.descriptors, b.descriptor_cycles)],
        "spike_events_per_inference": total_events(b.events),
    })
    return report, 0


def print_report(r: dict) -> None:
    if not r["fits"]:
        print(f"{r['model']} on the {r['board']} ({r['device']}): DOES NOT FIT the overlay: {r['refusal']}")
        return
    ov = r["overlay"]
    print(f"{r['model']} on the {r['board']} ({r['device']}), overlay {ov['config_hash']}, {r['lanes']} lane"
          f"{'s' if r['lanes'] != 1 else ''}: fits (estimated before synthesis, in "
          f"{r['seconds']['estimate'] * 1e3:.0f} ms)")
    print(f"  lanes: {r['lanes_choice']}")
    print(f"  {'resource':<12} {'estimate':>9} {'device':>9} {'%':>6}")
    for name, need in ov["resources"].items():
        total = r["fit_totals"].get(name)
        if total:
            print(f"  {name:<12} {need:>9,} {total:>9,} {100 * need / total:>6.1f}")
    w = r["weights"]
    print(f"  weights: {w['placement']} ({w['weights_on_chip_words']:,} of {w['weight_store_words']:,} weight-store "
          f"words)")
    print(f"  cycles per inference: {r['cycles_per_inference']:,.0f} (mean of {r['samples']} samples from "
          f"{r['samples_from']}; {r['latency_us']:,.1f} us at build's default clock, {r['clock_mhz']:g} MHz)")
    for line in r["program"]["listing"].splitlines():
        print(f"  {line}")
