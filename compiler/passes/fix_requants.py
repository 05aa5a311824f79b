"""Pass: each float affine requantization becomes an integer multiply, add and rounding shift."""

from __future__ import annotations

import math

import numpy as np

from .. import ir

#: Bound on a requantization's rounding shift.
MAX_SHIFT = 32


def fix_requants(graph: ir.Graph) -> ir.Graph:
    """Replace each AffineRequant by an integer multiplier, bias and rounding shift.

    The shift is the largest (at most MAX_SHIFT) that keeps every multiplier within MULT_BITS signed bits;
    a scale so large that even shift 1 needs more (a channel whose BN variance is near zero) keeps shift 1
    and gets a wider multiplier, up to the checker's limit of two cascaded multipliers."""
    ops: list[ir.Op] = []
    for op in graph.ops:
        if not isinstance(op, ir.AffineRequant):
            ops.append(op)
            continue
        peak = float(np.abs(op.a).max()) * 2.0 ** (op.frac or 0)
        room = ir.MULT_BITS - 1 - (math.ceil(math.log2(peak)) if peak > 0 else 0)
        if op.frac is None:            # logits: no rounding, as many fractional bits as the multiplier allows
            frac, shift = max(0, min(room, MAX_SHIFT)), 0
            total = 2.0 ** frac
        else:                          # a scale too large for MULT_BITS (a near-zero BN variance) gets a wider one
            frac, shift = op.frac, max(1, min(room, MAX_SHIFT))
            total = 2.0 ** (frac + shift)
        scaled_a, scaled_b = op.a * total, op.b * total
        if max(np.abs(scaled_a).max(), np.abs(scaled_b).max()) >= ir.INT_LIMIT:
            raise ir.IRError(f"{op.name}: a scale or bias of {max(np.abs(op.a).max(), np.abs(op.b).max()):.3g} "
                             f"is beyond any integer multiplier")
        mult = np.round(scaled_a).astype(np.int64)
        bias = np.round(scaled_b).astype(np.int64)
        ops.append(ir.Requant(op.name, op.src, mult, bias, shift, frac, op.saturate))
    return ir.Graph(graph.input_name, graph.input_type, graph.input_kind, ops, graph.output, graph.meta)
