"""The building blocks of the attention units' event pipelines: argument checks, registers, the division
of an event address by a constant, level products and the input stage that the phases share."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal

from ..events import event_layout

__all__ = ["KIND_V", "KIND_K", "KIND_Q", "DIV_STEPS_PER_STAGE", "check_int", "bits", "widths", "register", "delays",
           "divide", "division_stages", "times_level", "frame_inputs", "entry"]

KIND_V, KIND_K, KIND_Q = 0, 1, 2
DIV_STEPS_PER_STAGE = 2      # quotient bits resolved per pipeline stage of a constant division


# -- argument checking ----------------------------------------------------------------------------------

def check_int(name: str, value, minimum: int = 1, maximum: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, not {value!r}")
    return value


def bits(value: int) -> int:
    """Width of an unsigned register holding ``0..value`` (at least 1)."""
    return max(1, int(value).bit_length())


def widths(tokens, channels, levels, level_width, addr_width):
    """Check the arguments common to every unit; return ``(level_width, addr_width)``."""
    check_int("tokens", tokens)
    check_int("channels", channels)
    check_int("levels", levels, 1, 255)
    need_lw = bits(levels)
    if level_width is None:
        level_width = need_lw
    check_int("level_width", level_width, need_lw, 16)
    need_aw = bits(tokens * channels - 1)
    if addr_width is None:
        addr_width = need_aw
    check_int("addr_width", addr_width, need_aw, 32)
    return level_width, addr_width


# -- pipeline building blocks ---------------------------------------------------------------------------

def register(m: Module, value, name: str, en=None, *, reset: bool = False):
    """A register (a view for a layout-shaped value) loaded with ``value`` every cycle, or when ``en``.

    Datapath registers have no reset (``reset=True`` for valid bits): the ECP5 packs them with no LUT."""
    reg = Signal(value.shape(), name=name, reset_less=not reset)
    if en is None:
        m.d.sync += reg.eq(value)
    else:
        with m.If(en):
            m.d.sync += reg.eq(value)
    return reg


def delays(m: Module, value, count: int, name: str, *, reset: bool = False) -> list:
    """``[value, value delayed 1 cycle, ..., delayed count cycles]``."""
    out = [value]
    for k in range(count):
        out.append(register(m, out[-1], f"{name}_d{k + 1}", reset=reset))
    return out


def divide(m: Module, x, divisor: int, quotient_bits: int, carry: list, *, name: str, en=None,
           stage_valids: list | None = None):
    """``x // divisor`` and ``x % divisor`` for a constant divisor, with ``x < divisor << quotient_bits``.

    A power of two is a slice (no latency). Otherwise a restoring division resolves
    ``DIV_STEPS_PER_STAGE`` quotient bits per registered stage; ``carry`` (a list of values) is delayed
    alongside (``carry[0]``, a valid bit, with a reset). Returns ``(quotient, remainder, carried)``; both
    results are at least 1 bit wide. ``stage_valids`` (a list) receives every stage's valid bit: a pipeline
    is empty only when each of them is clear, not only the last.
    """
    if divisor & (divisor - 1) == 0:
        shift = divisor.bit_length() - 1
        quotient = x[shift:shift + quotient_bits] if quotient_bits else Const(0, 1)
        remainder = x[:shift] if shift else Const(0, 1)
        return quotient, remainder, list(carry)
    rem = x[:bits((divisor << quotient_bits) - 1)]
    qbits: list = []                                   # most significant first
    carry = list(carry)
    stages = pending = 0
    for k in reversed(range(quotient_bits)):
        step = divisor << k
        ge = Signal(name=f"{name}_ge{k}")
        nrem = Signal(range(step), name=f"{name}_rem{k}")
        m.d.comb += [ge.eq(rem >= step), nrem.eq(Mux(ge, rem - step, rem))]
        rem, pending = nrem, pending + 1
        qbits.append(ge)
        if pending == DIV_STEPS_PER_STAGE or k == 0:
            rem = register(m, rem, f"{name}_s{stages}_rem", en)
            qreg = register(m, Cat(*qbits), f"{name}_s{stages}_q", en)
            qbits = [qreg[i] for i in range(len(qbits))]
            carry = [register(m, c, f"{name}_s{stages}_c{i}", en, reset=i == 0) for i, c in enumerate(carry)]
            if stage_valids is not None:
                stage_valids.append(carry[0])
            stages, pending = stages + 1, 0
    quotient = Cat(*reversed(qbits)) if qbits else Const(0, 1)
    return quotient, rem[:bits(divisor - 1)], carry


def division_stages(*divisions) -> int:
    """Pipeline stages of :func:`divide` for ``(quotient_bits, divisor)`` pairs."""
    return sum(-(-q // DIV_STEPS_PER_STAGE) for q, div in divisions if div & (div - 1))


def times_level(level, value, levels: int):
    """``level * value`` for ``0 <= level <= levels`` by shift-and-add (no multiplier).

    When ``levels = 2**p`` the top level bit excludes every other, so the top term is a mux, not an adder.
    """
    width = bits(levels)
    level = level[:width]
    if levels & (levels - 1) == 0 and width > 1:
        low = sum((Mux(level[b], value << b, 0) for b in range(width - 1)), Const(0, 1))
        return Mux(level[width - 1], value << (width - 1), low)
    return sum((Mux(level[b], value << b, 0) for b in range(width)), Const(0, 1))


def frame_inputs(m: Module, sel: dict, phases) -> None:
    """Take each input port's events in its phase into the shared pipeline entry ``sel``.

    ``phases`` holds ``(active, port, kind)`` per port, ``active`` the FSM's decode of the port's phase (one
    at most at a time): ``port.ready`` is ``active``. Each signal is one expression (see
    ``hdl.attention``'s docstring): as assignments in the FSM's states, ``ready`` would be X until the state first changed,
    and with it the producer's handshake and the accelerator's event counters."""
    payloads, kinds = [], []
    for active, port, kind in phases:
        m.d.comb += port.ready.eq(active)
        payloads.append(Mux(active, port.payload.as_value(), 0))
        kinds.append(Mux(active, kind, 0))
    m.d.comb += [
        sel["valid"].eq(Cat(*(active & port.valid for active, port, _ in phases)).any()),
        sel["payload"].eq(_any_of(payloads)),
        sel["kind"].eq(_any_of(kinds)),
    ]


def _any_of(values):
    """The OR of ``values`` (at most one of them non-zero: a one-hot multiplexer)."""
    out = values[0]
    for value in values[1:]:
        out = out | value
    return out



def entry(m: Module, addr_width: int, level_width: int):
    """The shared input stage ``s0``: the accepted event of the current phase, registered.

    Returns ``(sel, s0)``: ``sel`` is driven from the FSM's phase (:func:`frame_inputs`); ``s0["valid"]``
    is set for an accepted event with a non-zero level (level-0 events are no-ops and go no further)."""
    sel = {"valid": Signal(), "payload": Signal(event_layout(addr_width, level_width)), "kind": Signal(2)}
    s0 = {"valid": Signal(name="s0_valid"), "addr": Signal(addr_width, name="s0_addr", reset_less=True),
          "level": Signal(level_width, name="s0_level", reset_less=True),
          "kind": Signal(2, name="s0_kind", reset_less=True)}
    m.d.sync += [
        s0["valid"].eq(sel["valid"] & (sel["payload"].level != 0)),
        s0["addr"].eq(sel["payload"].addr),
        s0["level"].eq(sel["payload"].level),
        s0["kind"].eq(sel["kind"]),
    ]
    return sel, s0


