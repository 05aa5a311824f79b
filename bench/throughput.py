"""Inferences per second of a model on the overlay against ``torch.compile`` of the same float model on this
machine, measured in one run.

The overlay's figure is its cycles per inference, simulated (the Verilated overlay through the host driver,
bit-exact against the golden model: ``compiler.flows.simulate.run``), at a clock: the Fmax that nextpnr
reported for an overlay build (``--report`` of its report.json) or one given (``--fmax``). The CPU's is the
float PyTorch model compiled with ``torch.compile`` (static shapes, once per batch size), timed at batch 1
and at batch 256 on the same samples (median of repeated runs after warm-up, ``torch.get_num_threads()``
threads).

Usage::

    python -m bench.throughput examples/digits.pt --lanes 16 --fmax 100 [--count 64] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def _cpu_rate(model, x, batch: int, repeats: int) -> float:
    """Inferences per second of ``model`` on batches of ``batch`` samples of ``x`` (median of ``repeats``)."""
    import torch
    xb = torch.from_numpy(x[:batch]) if len(x) >= batch else torch.from_numpy(x).repeat(
        -(-batch // len(x)), *([1] * (x.ndim - 1)))[:batch]
    with torch.no_grad():
        for _ in range(3):                                   # compile and warm up
            model(xb)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(xb)
            times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def _from_report(path: Path) -> tuple[float, int | None, int]:
    """``(the clock, lanes, post lanes)`` of a build's report.json: its met clock (``clock_mhz`` of an overlay
    build, which only writes a report when timing is met; else its Fmax), and an overlay's lanes and post unit
    (None and 0 for another kind of build)."""
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: cannot read {path}: {exc}") from None
    config = (report.get("overlay") or {}).get("config") or {}
    lanes, post = config.get("lanes"), int(config.get("post_lanes", 0))
    for key in (("clock_mhz",) if config else ()) + ("fmax_mhz", "achieved_mhz"):
        if isinstance(report.get(key), (int, float)):
            return float(report[key]), lanes, post
    timing = report.get("timing") or report.get("build", {})
    for key in ("fmax_mhz", "achieved_mhz"):
        if isinstance(timing.get(key), (int, float)):
            return float(timing[key]), lanes, post
    raise SystemExit(f"error: {path} names no Fmax (fmax_mhz)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--lanes", type=int, default=None, help="default 16, or an overlay report's")
    p.add_argument("--post-lanes", type=int, default=None,
                   help="the post unit's lanes (default: all, or an overlay report's)")
    clock = p.add_mutually_exclusive_group(required=True)
    clock.add_argument("--fmax", type=float, help="the overlay's clock in MHz")
    clock.add_argument("--report", type=Path,
                       help="an overlay build's report.json: its clock (met), lanes and post unit")
    p.add_argument("--count", type=int, default=64, help="test samples simulated (default 64)")
    p.add_argument("--repeats", type=int, default=20, help="timed CPU runs per batch size (default 20)")
    p.add_argument("--build-dir", default="build/sim")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    import torch

    from compiler.flows import simulate
    from compiler.flows.lower import lower
    from compiler.flows.samples import default_dataset
    from compiler.frontend import checkpoint
    from compiler.frontend.data import load_dataset

    fmax, lanes, post = (args.fmax, None, 0) if args.fmax is not None else _from_report(args.report)
    args.lanes = args.lanes or lanes or 16
    args.post_lanes = post if args.post_lanes is None else args.post_lanes
    model = checkpoint.load(args.model)
    dataset = model.dataset or default_dataset(model)
    x = load_dataset(dataset, model.cfg, "test").x[:args.count]
    # the CPU first: timed after the simulation, batch 1 ran ~500x slower on this 2-core machine (not understood)
    model.eval()           # one static-shape compilation per batch size (a shared one recompiles, dynamic, slower)
    cpu1 = _cpu_rate(torch.compile(model, dynamic=False), x, 1, args.repeats)
    torch._dynamo.reset()
    cpu256 = _cpu_rate(torch.compile(model, dynamic=False), x, 256, max(3, args.repeats // 4))
    sim = simulate.run(lower(model, args.model), x, lanes=args.lanes, trace=False,
                               build_dir=args.build_dir, show_progress=not args.json, post_lanes=args.post_lanes)
    if sim["mismatches"]:
        raise SystemExit(f"error: the overlay is not bit-exact on {sim['mismatches']} samples")
    cycles = sim["cycles_per_inference"]
    overlay_rate = fmax * 1e6 / cycles
    r = {
        "model": args.model, "samples": int(len(x)), "lanes": args.lanes, "post_lanes": args.post_lanes,
        "fmax_mhz": fmax,
        "cycles_per_inference": cycles, "latency_us": cycles / fmax,
        "overlay_inferences_per_s": overlay_rate,
        "lane_utilization": sim["lane_utilization"],
        "fraction_of_lanes_x_fmax": sim["lane_utilization"],
        "torch_compile_batch1_inferences_per_s": cpu1, "torch_compile_batch1_latency_us": 1e6 / cpu1,
        "torch_compile_batch256_inferences_per_s": cpu256,
        "ratio_overlay_to_batch256": overlay_rate / cpu256,
        "cpu_threads": torch.get_num_threads(),
    }
    if args.json:
        print(json.dumps(r, indent=1))
    else:
        print(f"{args.model}: {len(x)} samples, overlay {args.lanes} lanes "
              f"(post unit {args.post_lanes or args.lanes}) at {fmax:.1f} MHz")
        print(f"  overlay:            {cycles:,.0f} cycles = {r['latency_us']:.1f} us per inference, "
              f"{overlay_rate:,.0f} inferences/s ({r['lane_utilization']:.1%} of lanes x Fmax)")
        print(f"  torch.compile b=1:  {r['torch_compile_batch1_latency_us']:.1f} us per inference, {cpu1:,.0f} /s")
        print(f"  torch.compile b=256: {cpu256:,.0f} inferences/s ({r['cpu_threads']} threads)")
        print(f"  ratio overlay / torch.compile b=256: {r['ratio_overlay_to_batch256']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
