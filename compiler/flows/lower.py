"""A trained model to the integer-only IR: the frontend, then every lowering pass."""

from __future__ import annotations

from .. import ir, passes
from ..frontend.model import QSDTransformer
from ..frontend.to_ir import to_ir


def lower(model: QSDTransformer) -> ir.Graph:
    """``model`` (a QSDTransformer) as an integer graph: :func:`compiler.frontend.to_ir.to_ir`, then
    :func:`compiler.passes.run` (the checker runs between passes)."""
    return passes.run(to_ir(model))
