"""The spike event: what flows between the event queue and every event-driven core.

A frame (the spike map of one time step of one layer) is a run of events ending with exactly one event
whose ``last`` is set. An event with ``level == 0`` is a no-op that consumers must accept and ignore: a
producer uses one to close a frame that has no spikes (or to close any frame, if that is simpler).
"""

from __future__ import annotations

from amaranth.hdl import unsigned
from amaranth.lib import data, stream


def event_layout(addr_width: int, level_width: int) -> data.StructLayout:
    """``{addr, level, last}``: input index, spike level (1..D, 0 = no-op) and end of frame."""
    return data.StructLayout({"addr": unsigned(addr_width), "level": unsigned(level_width), "last": 1})


def event_stream(addr_width: int, level_width: int) -> stream.Signature:
    return stream.Signature(event_layout(addr_width, level_width))
