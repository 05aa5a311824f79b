"""Widths and memory layouts shared by the compiler and the cores: defined once, here (numpy only, no Amaranth).

Widths: :func:`signed_width`, :func:`unsigned_width`, :func:`index_bits` and :func:`groups` are the one
definition of how wide a register or an address is; the IR's types, the hardware plan, the cores and the
cost model all call these.

Packed weights: a layer's integer weights ``W[O, I]`` are stored in ``ceil(O / P)`` lane groups of ``P``
output channels. Word ``g * I + i`` holds ``W[g*P + l, i]`` for lanes ``l = 0..P-1``, lane ``l`` in bits
``[l*b, (l+1)*b)`` as a ``b``-bit two's-complement number; lanes past ``O`` hold 0. One event on input ``i``
reads words ``g * I + i`` for every group ``g``.
"""

from __future__ import annotations

import numpy as np


def signed_width(lo: int, hi: int) -> int:
    """Bits of the narrowest two's-complement register holding every integer in [lo, hi]."""
    return max(int(hi).bit_length(), int(-lo - 1).bit_length() if lo < 0 else 0) + 1


def unsigned_width(hi: int) -> int:
    """Bits of the narrowest unsigned register holding every integer in [0, hi] (at least 1)."""
    return max(1, int(hi).bit_length())


def index_bits(count: int) -> int:
    """Bits of an index into ``count`` items (0 for a single item)."""
    return max(0, (int(count) - 1).bit_length())


def accumulator_width(fan_in: int, weight_bits: int, max_level: int) -> int:
    """Signed width of a sum of ``fan_in`` terms ``level * w`` (level in 0..max_level, w b-bit signed)."""
    qn, qp = -(1 << (weight_bits - 1)), (1 << (weight_bits - 1)) - 1
    return signed_width(fan_in * max_level * qn, fan_in * max_level * qp)


def groups(out_channels: int, lanes: int) -> int:
    """Lane groups of ``lanes`` output channels that hold ``out_channels`` (the last one padded)."""
    return -(-out_channels // lanes)


def pack_weights(weight: np.ndarray, bits: int, lanes: int) -> list[int]:
    """Pack ``W[O, I]`` (signed ``bits``-bit integers) into ``groups(O, P) * I`` words of ``P * bits`` bits."""
    weight = np.asarray(weight)
    if weight.ndim != 2:
        raise ValueError(f"weight must be 2-D [O, I], not shape {weight.shape}")
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if weight.size and (weight.min() < lo or weight.max() > hi):
        raise ValueError(f"weights outside the signed {bits}-bit range [{lo}, {hi}]")
    out, fan_in = weight.shape
    mask = (1 << bits) - 1
    words = []
    for g in range(groups(out, lanes)):
        for i in range(fan_in):
            word = 0
            for lane in range(lanes):
                o = g * lanes + lane
                if o < out:
                    word |= (int(weight[o, i]) & mask) << (lane * bits)
            words.append(word)
    return words


def unpack_word(word: int, bits: int, lanes: int) -> list[int]:
    """The ``P`` signed lanes of one packed word (the inverse of ``pack_weights`` for one word)."""
    mask, sign = (1 << bits) - 1, 1 << (bits - 1)
    lanes_out = []
    for lane in range(lanes):
        v = (word >> (lane * bits)) & mask
        lanes_out.append(v - (1 << bits) if v & sign else v)
    return lanes_out
