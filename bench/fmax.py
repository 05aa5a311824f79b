"""Place and route a model's accelerator on a board and print what limits its clock.

The same board top as ``python -m compiler build`` (PLL, UART bridge, LEDs), built with timing failures
allowed and no simulation, so that one run answers "how fast does this design go and what path limits it".
The result is one JSON object: Fmax, resources, step times and nextpnr's critical path (delay, cells, nets
and the ``hdl/`` source lines that define them; from its JSON report, ``BuildResult.critical_path``).

Usage::

    python -m bench.fmax examples/digits.pt --board ulx3s --lanes 8 --clock 100 [--out build/fmax]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fmax", description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--board", default="ulx3s")
    p.add_argument("--lanes", type=int, default=None)
    p.add_argument("--clock", type=float, default=100.0, help="target MHz (the PLL's nearest)")
    p.add_argument("--baud", type=int, default=3_000_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--router", default="router2")
    p.add_argument("--nextpnr", default=None, help="nextpnr-ecp5 placer options, one string (default: the flow's)")
    p.add_argument("--out", default=None, help="build folder (default: build/fmax-<lanes>-<clock>)")
    args = p.parse_args(argv)

    from boards import get_board
    from boards.build import build
    from boards.top import BoardTop
    from compiler.frontend import checkpoint
    from compiler.flows.build import check_clock
    from compiler.flows.lower import lower
    from compiler.hw.plan import build_plan
    from hdl.accelerator import Accelerator
    from hdl.uart_bridge import UartBridge

    spec = get_board(args.board)
    clock_mhz, _div = check_clock(spec, args.clock, args.baud)
    plan = build_plan(lower(checkpoint.load(args.model)), lanes=args.lanes)
    out = Path(args.out or f"build/fmax-{plan.lanes}-{args.clock:g}")
    top = BoardTop(Accelerator(plan), spec, clock_mhz, lambda f: UartBridge(f, args.baud))
    result = build(top, spec, out, seed=args.seed, allow_timing_fail=True, router=args.router,
                   **({} if args.nextpnr is None else {"nextpnr_opts": args.nextpnr}))
    report = {
        "board": spec.name, "lanes": plan.lanes, "clock_mhz": clock_mhz, "fmax_mhz": round(result.fmax_mhz, 2),
        "router": args.router, "seed": args.seed, "nextpnr": args.nextpnr,
        "resources": {k: [u.used, u.total] for k, u in result.resources.items()},
        "seconds": {k: round(v, 1) for k, v in result.seconds.items()},
        "critical_path": result.critical_path,
    }
    json.dump(report, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
