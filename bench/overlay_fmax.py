"""Place and route the overlay alone (``bench.synth``'s two-pin harness) and print its Fmax at several seeds.

The figures of docs/architecture.md's "Where the clock stands": the overlay with small memories (so that one
run takes minutes, not the hour of a board's standard configuration) at ``--lanes`` lanes, synthesized by
Yosys and placed and routed by nextpnr for the LFE5U-85F at each ``--seeds`` seed. The result is one JSON
object: per seed Fmax, resources and the critical path's source lines (``hdl/`` only); and the minimum and
median Fmax. The widths are the standard configuration's (``compiler.hw.overlay_config.WIDTHS``); the
harness adds about one FF per port bit (``harness_ff``).

With ``--board NAME`` it measures what ``build --overlay`` builds instead: the board's standard configuration
(``--lanes`` lanes, default the standard count) inside the board top (PLL at ``--freq``, UART bridge, LEDs), with
the overlay flow's nextpnr options, timing allowed to fail so that the figure is read whatever it is. One seed of
the ULX3S-85F's takes about an hour on two cores.

Usage::

    python -m bench.overlay_fmax --lanes 2 --seeds 1,2,3 [--freq 150] [--workdir build/overlay_fmax]
    python -m bench.overlay_fmax --board ulx3s --seeds 1 --freq 60
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from dataclasses import asdict, replace
from pathlib import Path

from hdl.npu.isa import Config

#: The memories of the measured overlay: deep enough that each maps to block RAM as on a board.
SMALL_DEPTHS = dict(spike_depth=512, wide_depth=256, weight_depth=1024, param_depth=64, out_groups=8, kv_depth=64,
                    program_depth=16)


def small_config(lanes: int) -> Config:
    from compiler.hw.overlay_config import WIDTHS, standard_post_lanes
    return Config(lanes=lanes, post_lanes=standard_post_lanes(lanes), **SMALL_DEPTHS, **WIDTHS)


def critical_lines(log: str) -> list[str]:
    """The ``hdl/`` source lines of nextpnr's critical path (from its log), in path order, each once."""
    block = log.split("Critical path report for clock", 1)[-1].split("Critical path report for cross", 1)[0]
    seen: list[str] = []
    for line in block.splitlines():
        m = re.search(r"(?:^|[\s/])(hdl/[\w/]+\.py:\d+)", line)
        if m and "site-packages" not in line and m.group(1) not in seen:
            seen.append(m.group(1))
    return seen


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.overlay_fmax", description=__doc__.split("\n\n")[0])
    p.add_argument("--lanes", type=int, default=None, help="lanes (default: 2, with --board the standard count)")
    p.add_argument("--board", default=None, help="measure the board's standard overlay inside its board top")
    p.add_argument("--bram-budget", type=float, default=None,
                   help="with --board: the configuration within this fraction of the device's DP16KD instead of "
                        "the standard BRAM_BUDGET (how routing depends on the block RAMs used)")
    p.add_argument("--post-lanes", type=int, default=None,
                   help="with --board: a post unit of this many lanes (a divisor of the lanes) instead of the "
                        "standard one")
    p.add_argument("--seeds", default="1", help="nextpnr seeds, comma-separated (default: 1)")
    p.add_argument("--freq", type=float, default=200.0, help="nextpnr's target in MHz (default: 200)")
    p.add_argument("--workdir", default="build/overlay_fmax")
    a = p.parse_args(argv)
    try:
        seeds = [int(s) for s in a.seeds.split(",")]
    except ValueError:
        print(f"error: --seeds must be integers separated by commas, not {a.seeds!r}", file=sys.stderr)
        return 2
    if a.board is not None:
        return _board(a, seeds)
    a.lanes = 2 if a.lanes is None else a.lanes
    if not 1 <= a.lanes <= 64:
        print(f"error: --lanes must be 1-64, not {a.lanes}", file=sys.stderr)
        return 2
    from bench.synth import synthesize
    from hdl.npu.overlay import Overlay

    config = small_config(a.lanes)
    runs = []
    for seed in seeds:
        work = Path(a.workdir) / f"lanes{a.lanes}-seed{seed}"
        print(f"seed {seed}: synthesizing, placing and routing in {work} ...", file=sys.stderr, flush=True)
        r = synthesize(Overlay(config), f"overlay{a.lanes}", workdir=work, seed=seed, freq_mhz=a.freq)
        r.pop("critical_path", None)
        r["seed"] = seed
        r["critical_path_lines"] = critical_lines((work / "nextpnr.log").read_text())
        print(f"seed {seed}: {r['fmax_mhz']} MHz", file=sys.stderr, flush=True)
        runs.append(r)
    fmax = [r["fmax_mhz"] for r in runs]
    json.dump({"config": asdict(config), "runs": runs, "fmax_min_mhz": min(fmax),
               "fmax_median_mhz": statistics.median(fmax)}, sys.stdout, indent=2)
    print()
    return 0


def _board(a, seeds: list[int]) -> int:
    from boards import build as board_flow
    from boards import get_board
    from boards.errors import BoardError
    from compiler.errors import UserError
    from compiler.flows.overlay import NEXTPNR_OPTIONS, ROUTER, _board_top
    from compiler.hw import overlay_config
    if a.bram_budget is not None and not 0 < a.bram_budget <= 1:
        print(f"error: --bram-budget must be in (0, 1], not {a.bram_budget}", file=sys.stderr)
        return 2
    standard = overlay_config.BRAM_BUDGET
    budget = standard if a.bram_budget is None else a.bram_budget
    try:
        overlay_config.BRAM_BUDGET = budget
        spec = get_board(a.board)
        config = overlay_config.board_config(spec.fit_totals, a.lanes, name=spec.device)
        if a.post_lanes is not None:
            if not 1 <= a.post_lanes <= config.lanes or config.lanes % a.post_lanes:
                raise UserError(f"--post-lanes must divide the {config.lanes} lanes, not {a.post_lanes}")
            config = replace(config, post_lanes=a.post_lanes)
    except (BoardError, UserError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        overlay_config.BRAM_BUDGET = standard
    runs = []
    for seed in seeds:
        work = Path(a.workdir) / f"{spec.name}-lanes{config.lanes}-post{config.post_width}-bram{budget:g}-seed{seed}"
        print(f"seed {seed}: the {config.lanes}-lane overlay of the {spec.name} at {a.freq:g} MHz in {work} ...",
              file=sys.stderr, flush=True)
        top = _board_top(config, spec, a.freq, 3_000_000)
        result = board_flow.build(top, spec, work, seed=seed, allow_timing_fail=True, router=ROUTER,
                                  nextpnr_opts=NEXTPNR_OPTIONS)
        r = {"seed": seed, "fmax_mhz": result.fmax_mhz, "target_mhz": result.target_mhz,
             "resources": {k: {"used": u.used, "total": u.total} for k, u in result.resources.items()},
             "seconds": result.seconds,
             "critical_path_lines": critical_lines((work / "top.tim").read_text())}
        print(f"seed {seed}: {r['fmax_mhz']} MHz", file=sys.stderr, flush=True)
        runs.append(r)
    fmax = [r["fmax_mhz"] for r in runs]
    json.dump({"board": spec.name, "bram_budget": budget,
               "block_rams": overlay_config.block_rams(config), "config": asdict(config), "runs": runs, "fmax_min_mhz": min(fmax),
               "fmax_median_mhz": statistics.median(fmax)}, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
