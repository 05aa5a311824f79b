"""Synthesize each hdl/ core alone for the LFE5U-85F (speed 6) and print (or save) LUT4, FF, DP16KD,
MULT18X18D and nextpnr's Fmax. The results table of docs/cores.md comes from this script:

    .venv/bin/python -m bench.synth_cores [--only NAME ...] [--json results.json]

Each configuration is representative of the bundled model's layers or of the issue's targets (P = 16, 64).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from .synth import synthesize


def _rng():
    return np.random.default_rng(1)


def accumulate(lanes: int):
    from hdl.accumulate import SpikeAccumulator
    w = _rng().integers(-8, 8, size=(128, 128))
    return SpikeAccumulator(lanes, w, 4, 3, ecp5=True)


def event_queue(lanes: int):
    from hdl.event_queue import EventQueue
    return EventQueue(lanes, 3, 12)


def neuron(stateful: bool):
    from hdl.neuron import NeuronUnit
    rng = _rng()
    out, levels = 128, 4
    theta = np.sort(rng.integers(-2000, 2000, size=(out, levels)), axis=1)
    return NeuronUnit(lanes=16, in_width=14, levels=levels, sign=rng.choice([-1, 1], size=out),
                      bias=rng.integers(-500, 500, size=out) if stateful else np.zeros(out, np.int64),
                      frac=12 if stateful else 0, theta=theta, leak_shift=1, tokens=16, stateful=stateful,
                      ecp5=True)


def requant():
    from hdl.requant import RequantUnit
    rng = _rng()
    return RequantUnit(lanes=16, in_width=14, mult=rng.integers(-(1 << 17), 1 << 17, size=128),
                       bias=rng.integers(-(1 << 24), 1 << 24, size=128), shift=20, saturate=None, tokens=16, ecp5=True)


def residual_add():
    from hdl.requant import ResidualAdd
    return ResidualAdd(lanes=16, channels=128, tokens=16, in_width=16, width=16)


def pixel_conv():
    from hdl.pixel_conv import PatchConvUnit
    w = _rng().integers(-8, 8, size=(32, 1, 2, 2))
    return PatchConvUnit(weight=w, bits=4, lanes=16, tokens=16, ecp5=True)


def linear_attention(tokens: int, channels: int, heads: int):
    from hdl.attention import LinearAttentionUnit
    return LinearAttentionUnit(tokens, channels, heads, 4, ecp5=True)


def cospike(tokens: int, channels: int):
    from hdl.attention import CoSpikeUnit
    return CoSpikeUnit(tokens, channels, 4, ecp5=True)


CORES = {
    "accumulate P=16": lambda: accumulate(16),
    "accumulate P=64": lambda: accumulate(64),
    "event_queue K=16": lambda: event_queue(16),
    "event_queue K=64": lambda: event_queue(64),
    "neuron P=16 T=1": lambda: neuron(False),
    "neuron P=16 T>1": lambda: neuron(True),
    "requant P=16": requant,
    "residual_add P=16": residual_add,
    "pixel_conv P=16": pixel_conv,
    "linear_attention N=16 C=32 H=4": lambda: linear_attention(16, 32, 4),
    "linear_attention N=64 C=64 H=4": lambda: linear_attention(64, 64, 4),
    "cospike N=16 C=32": lambda: cospike(16, 32),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.synth_cores", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="core names (default: all); see the list with --list")
    parser.add_argument("--list", action="store_true", help="list the core configurations and exit")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(CORES))
        return 0
    names = args.only or list(CORES)
    unknown = [n for n in names if n not in CORES]
    if unknown:
        print(f"error: unknown core(s) {unknown}; choose from {list(CORES)}", file=sys.stderr)
        return 2
    results = []
    print(f"{'core':<34} {'LUT4':>6} {'FF':>6} {'DP16KD':>6} {'MULT':>5} {'Fmax MHz':>9} {'yosys s':>8} {'pnr s':>6}")
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name} ...", file=sys.stderr, flush=True)
        r = synthesize(CORES[name](), name.replace(" ", "_").replace("=", "").replace(">", "gt"))
        r["name"] = name
        results.append(r)
        print(f"{name:<34} {r['LUT4']:>6} {r['FF']:>6} {r['DP16KD']:>6} {r['MULT18X18D']:>5} "
              f"{r['fmax_mhz']:>9.1f} {r['yosys_s']:>8.1f} {r['nextpnr_s']:>6.1f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
