"""A trained model to the integer-only IR: the frontend, then every lowering pass."""

from __future__ import annotations

from .. import ir, passes
from ..errors import UserError
from ..frontend.model import QSDTransformer
from ..frontend.to_ir import to_ir


def lower(model: QSDTransformer, where: str | None = None) -> ir.Graph:
    """``model`` (a QSDTransformer) as an integer graph: :func:`compiler.frontend.to_ir.to_ir`, then
    :func:`compiler.passes.run` (the checker runs between passes). ``where`` (the model's file) prefixes a
    refusal."""
    try:
        return passes.run(to_ir(model))
    except UserError as exc:
        if where is None:
            raise
        raise UserError(f"{where}: {exc}") from None
