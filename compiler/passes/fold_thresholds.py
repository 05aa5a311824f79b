"""Pass: each float affine neuron (``u = a * ACC + b``) becomes integer multi-threshold comparisons."""

from __future__ import annotations

import numpy as np

from .. import ir

#: Fractional bits of a stateful (T > 1) neuron's membrane, in accumulator units.
NEURON_FRAC = 12


def fold_thresholds(graph: ir.Graph) -> ir.Graph:
    """Replace each AffineNeuron (``u = a * ACC + b``) by integer multi-threshold comparisons.

    With one time step the bias folds into the thresholds exactly: ``theta = ceil((thr - b) / |a|)``.
    With state, the membrane is kept in accumulator units with NEURON_FRAC fractional bits:
    ``X = sign(a) * (ACC << F) + B`` with ``B = round(b / |a| * 2**F)``, and
    ``theta = B + ceil((thr - b) / |a| * 2**F)``, so that the first step compares exactly.
    Thresholds are clamped to the membrane's reachable range (which changes no comparison).
    """
    types = ir.infer_types(graph)
    T = graph.meta["timesteps"]
    ops: list[ir.Op] = []
    for op in graph.ops:
        if not isinstance(op, ir.AffineNeuron):
            ops.append(op)
            continue
        src = types[op.src]
        thr = np.array(ir.neuron_thresholds(op.levels))
        sign = np.sign(op.a).astype(np.int64)
        mag = np.where(sign == 0, 1.0, np.abs(op.a))
        frac = 0 if T == 1 else NEURON_FRAC
        bias = np.zeros_like(sign) if T == 1 else np.round(op.b / mag * (1 << frac)).astype(np.int64)
        # theta - bias is rounded as one number, so the first step compares exactly as the float model
        raw = bias[:, None] + np.ceil((thr[None, :] - op.b[:, None]) / mag[:, None] * (1 << frac))
        provisional = ir.Neuron(op.name, op.src, op.levels, sign, bias, frac,
                                np.zeros((len(sign), op.levels), np.int64), op.leak_shift)
        xlo, xhi = ir.neuron_input_range(provisional, src)
        s = op.leak_shift if T > 1 else 0
        lo, hi = min(xlo, xlo << s), max(xhi, xhi << s) + 1
        theta = np.clip(raw, lo, hi).astype(np.int64)
        ops.append(ir.Neuron(op.name, op.src, op.levels, sign, bias, frac, theta, op.leak_shift))
    return ir.Graph(graph.input_name, graph.input_type, graph.input_kind, ops, graph.output, graph.meta)
