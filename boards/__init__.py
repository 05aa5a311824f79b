"""ECP5 boards: their descriptions (on top of amaranth-boards), the board top, the build and flashing.

=========================  ==========================================================================
:mod:`boards.spec`         :class:`BoardSpec`: one board variant
:mod:`boards.ulx3s`, ...   one module per board, with the specs of its variants
:mod:`boards.pll`          ECP5 PLL dividers and the ``sync`` clock domain from the oscillator
:mod:`boards.top`          :class:`~boards.top.BoardTop`: PLL, accelerator core, UART link and LEDs
:mod:`boards.build`        synthesis, place and route and bitstream with the YoWASP tools
:mod:`boards.flash`        the openFPGALoader command and running it
=========================  ==========================================================================

A new board is one module like :mod:`boards.ecpix5` (``SPECS`` and ``ALIASES``), named in ``_MODULES``.
"""

from __future__ import annotations

from .errors import BoardError

from . import ecpix5, ulx3s
from .spec import BoardSpec, Led

__all__ = ["BOARDS", "BoardSpec", "Led", "get_board"]

_MODULES = (ulx3s, ecpix5)

#: Every board variant by name, and the aliases (``ulx3s`` is ``ulx3s-85f``).
BOARDS: dict[str, BoardSpec] = {}
for _module in _MODULES:
    BOARDS.update({spec.name: spec for spec in _module.SPECS})
    BOARDS.update({alias: BOARDS[target] for alias, target in _module.ALIASES.items()})


def get_board(name: str) -> BoardSpec:
    """The board called ``name``; a :class:`~boards.errors.BoardError` naming the valid ones if none is."""
    try:
        return BOARDS[name]
    except KeyError:
        raise BoardError(f"unknown board {name!r}; valid boards: {', '.join(sorted(BOARDS))}") from None
