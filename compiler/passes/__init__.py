"""Lowering passes over the IR: float affine maps (BN and LSQ scales folded) to integer arithmetic.

Each pass takes an :class:`compiler.ir.Graph` and returns a new one; :func:`run` applies them in order with
the IR checker between passes, so that a pass that breaks a type rule is caught where it happens.
"""

from __future__ import annotations

from .. import ir
from ..errors import UserError
from .fix_requants import MAX_SHIFT, fix_requants
from .fold_thresholds import NEURON_FRAC, fold_thresholds

__all__ = ["PASSES", "run", "fold_thresholds", "fix_requants", "NEURON_FRAC", "MAX_SHIFT"]

PASSES = (fold_thresholds, fix_requants)


def run(graph: ir.Graph) -> ir.Graph:
    """Every pass, with the checker before and between them; the result is integer-only."""
    ir.check(graph)
    for p in PASSES:
        try:
            graph = p(graph)
        except ir.IRError as exc:
            raise UserError(f"the model cannot be lowered: {exc}") from None
        ir.check(graph)
    ir.check(graph, integer=True)
    return graph
