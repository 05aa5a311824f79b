"""What the lane-group cores (:mod:`hdl.neuron`, :mod:`hdl.requant`, :mod:`hdl.pixel_conv`) share beyond
:mod:`hdl.lanes` (which describes the lane streams): their frame, :class:`LaneCore`, the range of their
input values, :func:`input_range`, and the write of a result into their :class:`hdl.lanes.OutputQueue`,
:func:`queue_beat`.
"""

from __future__ import annotations

from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["LaneCore", "input_range", "queue_beat"]


class LaneCore(wiring.Component):
    """A lane-group core: the streams ``i`` and ``o`` and the ``lanes`` and ``groups`` it is built for.

    A subclass sets ``self._lanes`` (``P``) and ``self._groups`` (``G``) and calls this constructor with its
    payload layouts.

    Parameters
    ----------
    in_layout : Layout
        The payload of ``i`` (kept as the attribute ``in_layout``).
    out_layout : Layout
        The payload of ``o`` (kept as the attribute ``out_layout``).
    src_loc_at : int
        As for :class:`wiring.Component`: a subclass passes ``1 + src_loc_at``.

    Members
    -------
    i : In(stream.Signature(in_layout))
        The input stream.
    o : Out(stream.Signature(out_layout))
        The output stream.
    """

    def __init__(self, in_layout, out_layout, *, src_loc_at=0):
        self.in_layout = in_layout
        self.out_layout = out_layout
        super().__init__({
            "i": In(stream.Signature(in_layout)),
            "o": Out(stream.Signature(out_layout)),
        }, src_loc_at=1 + src_loc_at)

    @property
    def lanes(self) -> int:
        """``P``, channels per beat."""
        return self._lanes

    @property
    def groups(self) -> int:
        """``G = ceil(O / P)``, lane groups per token."""
        return self._groups


def input_range(in_width: int, in_range=None) -> tuple[int, int]:
    """The inclusive range of signed ``in_width``-bit inputs, or ``in_range`` if given (it must lie within).

    Parameters
    ----------
    in_width : int
        Signed width of the input values.
    in_range : (int, int), optional
        A narrower inclusive range; ValueError if it does not lie within ``in_width`` bits.
    """
    lo, hi = -(1 << (in_width - 1)), (1 << (in_width - 1)) - 1
    if in_range is None:
        return lo, hi
    rlo, rhi = (int(v) for v in in_range)
    if not lo <= rlo <= rhi <= hi:
        raise ValueError(f"in_range must lie within signed {in_width} bits, not {in_range!r}")
    return rlo, rhi


def queue_beat(queue, en, group, token, last, values, field: str = "values") -> list:
    """The assignments that write one lane beat into ``queue`` (for ``m.d.comb``).

    Parameters
    ----------
    queue : hdl.lanes.OutputQueue
        The queue, of a lane layout (:func:`hdl.lanes.lane_layout`).
    en : Value
        Write in this cycle (``w_en``).
    group, token, last : Value
        The beat's fields.
    values : list of Value
        One per lane, into the lane array.
    field : str
        The name of the lane array in the queue's layout.
    """
    beat = queue.w_data
    return [
        queue.w_en.eq(en),
        beat.group.eq(group),
        beat.token.eq(token),
        beat.last.eq(last),
    ] + [getattr(beat, field)[lane].eq(value) for lane, value in enumerate(values)]
