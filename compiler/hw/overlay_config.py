"""The standard overlay configuration of a board: one ``hdl.npu.isa.Config`` per device, built once and shared by
every model that fits it (``build --overlay``, docs/build.md).

A configuration fixes the overlay's element widths and memory depths. The **widths** are the same on every
board (:data:`WIDTHS`): wide enough for the model family of ``compiler.frontend.config`` (weights of 2-4
bits, 1-4 spike levels, time steps up to the descriptor's ``steps`` field), measured with ``fit_config`` on
untrained (``train --epochs 0``) models of that family with margin (docs/build.md); a model with 8-bit weights
gets the same configuration with an 8-bit weight store (:data:`WIDE_WEIGHT_BITS`). The **depths** are derived
from the device's block RAM (DP16KD): the fixed memories first (program, per-channel parameters, the K^T V
store; the accumulators and membranes at :data:`MAX_CHANNELS` channels), then the scratchpad banks and the
weight store doubled in turn, keeping ``weight_depth : spike_depth : wide_depth`` near 4 : 1 : 1, while the
whole stays within :data:`BRAM_BUDGET` of the device's blocks.

Block RAMs are counted by the rule the estimator uses for Yosys-inferred memories
(``compiler.hw.estimate.map_memory``: one copy per read port, the cheapest DP16KD geometry); multipliers and
LUTs by a per-lane and per-post-lane model measured on the synthesized 16-lane overlay of the ULX3S-85F
(:data:`MULT_PER_LANE`, :data:`LUT4_PER_LANE` and their post-unit counterparts), used only to choose fewer
lanes on devices that cannot hold 16.
"""

from __future__ import annotations

from dataclasses import asdict, replace

from hdl.cost import Memory
from hdl.npu.isa import DESCRIPTOR_FIELDS, DESCRIPTOR_WORDS, EXT_ALIGN, WORD_BITS, Config
from hdl.npu.overlay import ext_address_bits, ext_ratio
from hdl.npu.regmap import EXT_FIFO_DEPTH, AddressMap, config_hash
from hdl.sdram.chip import SdramChip

from ..errors import UserError
from .estimate import map_memory

__all__ = ["STANDARD_LANES", "POST_LANES", "WIDTHS", "BRAM_BUDGET", "MAX_CHANNELS", "MIN_WEIGHTS", "PARAM_GROUPS",
           "PARAM_CHANNELS", "STREAM_WEIGHT_WORDS", "STREAM_PARAM_GROUPS", "STREAM_PROGRAM_DEPTH", "MULT_PER_LANE", "MULT_PER_POST_LANE", "MULT_FIXED", "LUT4_PER_LANE",
           "LUT4_PER_POST_LANE", "LUT4_FIXED", "LUT4_SDRAM", "standard_post_lanes", "external_depth", "overlay_memories", "block_rams", "resources",
           "board_config", "limits", "describe"]

#: Lanes of the standard configuration, where the device holds them (fewer, a power of two, where not).
STANDARD_LANES = 16

#: Lanes of the standard configurations' post unit (``Config.post_lanes``; all of them below 4): a group's
#: post takes ``lanes / 4`` cycles. At 16 lanes a post unit of all of them (16 copies of a 40-bit pipeline with
#: two barrel shifters, four threshold comparators and two saturations, fed a 2,048-bit threshold word a
#: cycle) was where router2 found most of its overused wires on the LFE5U-85F, and the overlay did not route.
POST_LANES = 4


def standard_post_lanes(lanes: int) -> int:
    """The standard post unit of ``lanes`` lanes: the largest divisor of ``lanes`` up to :data:`POST_LANES`."""
    return max(q for q in range(1, min(lanes, POST_LANES) + 1) if lanes % q == 0)

#: Element widths of every standard configuration. The flat family's largest needs, from ``fit_config`` at 16
#: lanes on untrained models from the bundled one up to dim 256, 8-bit weights, 4 levels and 15 time steps:
#: spike 3, wide 16, acc 21, bias 34, membrane (post) 36, theta 31, logits 36, K^T V 12 bits. The weights are
#: the family's 4 bits (the block RAMs this saves on the 85F hold a 28 x 28 image in the wide bank).
WIDTHS = dict(spike_bits=3, wide_bits=16, event_bits=16, weight_bits=4, acc_bits=24, mult_bits=18, bias_bits=36,
              post_bits=40, levels=4, theta_bits=32, kv_bits=16, logit_bits=40, classes=32)

#: The weights' width of a board's second configuration, for models whose weights have more bits than the
#: standard one's 4 (``train --bits 8``): the same overlay with an 8-bit weight store, its own bitstream.
WIDE_WEIGHT_BITS = 8

#: Fraction of the device's DP16KD that the overlay (with the UART bridge's buffer) may take. At 88% (184 of the
#: 85F's 208) and at 83% nextpnr's router2 did not converge on the 16-lane overlay (overuse stuck near 45,000
#: wires after 9 iterations, over an hour; docs/build.md).
BRAM_BUDGET = 0.75

#: Output channels of one layer that the accumulators and membranes hold (``out_groups * lanes``): an MLP of
#: 4 x 128 channels.
MAX_CHANNELS = 512

#: Weights on chip (``weight_depth * lanes``) below which a device's standard configuration takes fewer lanes:
#: the bundled model's 12,928 fit.
MIN_WEIGHTS = 16_384

#: Lane groups of per-channel parameters (multipliers, biases, thresholds) that the program's layers share:
#: 4,096 channels at 16 lanes (the bundled models use 59 and 39 groups, an untrained dim-128 depth-2
#: transformer 329), and at fewer lanes up to twice as many groups for :data:`PARAM_CHANNELS` channels. The
#: thresholds are the widest (``levels x theta_bits``): 29 DP16KD at 256 groups of 16 lanes.
PARAM_GROUPS = 256
PARAM_CHANNELS = 1024           # the bundled digits model has 938 channels of parameters

#: Descriptors of the program memory (a flat block is 9 descriptors, the stem and the head 4).
PROGRAM_DEPTH = 128

#: The configuration that streams weights and parameters from the board's SDRAM (``board_config(sdram=)``) holds
#: what one stretch of a program needs, not a model: a weight store of two halves of 2,048 words (a tile of 8
#: lane groups of a 256-input layer), parameter memories of two halves of 64 lane groups (their block RAMs' least
#: depth: 512 post rows), and room for the FETCHes in the program (an untrained dim-256 depth-4 transformer
#: takes 282 descriptors). The rest of the budget goes to the scratchpad banks (:func:`_grow_banks`).
STREAM_WEIGHT_WORDS = 4096
STREAM_PARAM_GROUPS = 128
STREAM_PROGRAM_DEPTH = 512

#: Words of the K^T V store: time steps x channels x the lane groups a head spans.
KV_DEPTH = 1024

#: MULT18X18D per lane and per post-unit lane, and the fixed part: Yosys made 51 for the 16-lane ULX3S-85F
#: overlay with a 4-lane post unit (75 with a 16-lane one): per lane the sparse engine's level x operand and
#: COSPIKE's product, per post lane the accumulator x multiplier in two.
MULT_PER_LANE = 2
MULT_PER_POST_LANE = 2
MULT_FIXED = 11

#: LUT4 sites per lane, per post-unit lane, and the board's fixed part (UART bridge, PLL, LEDs, sequencer, the
#: bus's staging register): nextpnr's ``TRELLIS_COMB`` of the 16-lane ULX3S-85F overlay was 21,700 with a
#: 4-lane post unit, 43,706 with a 16-lane one. Used only to choose the lanes of a smaller device.
LUT4_PER_LANE = 750
LUT4_PER_POST_LANE = 1850
LUT4_FIXED = 2500
#: LUT4 of the SDRAM controller (``hdl.sdram.litedram.SdramController`` for the MT48LC16M16A2 at 60 MHz,
#: synthesized alone for the 85F: 1,105, docs/sdram.md) and the overlay's side of it, in a configuration with an
#: external memory.
LUT4_SDRAM = 1300

#: The UART bridge's write buffer (``hdl.uart_bridge.UartBridge``'s, 64 words of 32 bits).
_BRIDGE = Memory("uart bridge buffer", 32, 64)


def overlay_memories(config: Config) -> list[Memory]:
    """The memories of ``hdl.npu.overlay.Overlay(config)`` as Yosys infers them (one copy per read port: the
    scratchpad banks have two, the engine's and the post unit's / peek port's; so have the accumulators, whose
    read addresses are registers: distributed RAM where that is cheaper, block RAM at 2 lanes' 256 groups)."""
    c, P, Q, R = config, config.lanes, config.post_width, config.post_steps     # the post unit's memories:
    return [Memory("program", WORD_BITS, c.program_depth * DESCRIPTOR_WORDS),
            Memory("spikes", P * c.spike_bits, c.spike_depth, read_ports=2),
            Memory("wide", P * c.wide_bits, c.wide_depth, read_ports=2),
            Memory("weights", P * c.weight_bits, c.weight_depth),
            Memory("mult", Q * c.mult_bits, c.param_depth * R),
            Memory("bias", Q * c.bias_bits, c.param_depth * R),
            Memory("theta", Q * c.levels * c.theta_bits, c.param_depth * R),
            Memory("acc", P * c.acc_bits, c.out_groups, read_ports=2),
            Memory("membrane", Q * c.post_bits, c.out_groups * R),
            Memory("kv", P * c.kv_bits, c.kv_depth),
            *([Memory("ext fifo", ext_address_bits(c) + 32, EXT_FIFO_DEPTH)] if c.ext_depth else [])]


def block_rams(config: Config) -> dict[str, int]:
    """DP16KD of each memory of the overlay of ``config`` (and of the UART bridge), by name."""
    out = {}
    for mem in overlay_memories(config) + [_BRIDGE]:
        mapping = map_memory(mem)
        out[mem.name] = mapping.count if mapping.kind == "DP16KD" else 0
    return out


def resources(config: Config) -> dict[str, int]:
    """The board top's estimated DP16KD (exact rule), MULT18X18D and LUT4 (per-lane model) with ``config``."""
    P, Q = config.lanes, config.post_width
    return {"DP16KD": sum(block_rams(config).values()),
            "MULT18X18D": MULT_FIXED + MULT_PER_LANE * P + MULT_PER_POST_LANE * Q,
            "LUT4": LUT4_FIXED + LUT4_PER_LANE * P + LUT4_PER_POST_LANE * Q + (LUT4_SDRAM if config.ext_depth else 0)}


def external_depth(config: Config, chip: SdramChip) -> int:
    """Weight-store words of ``config``'s layout that ``chip`` holds, at most what ``FETCH``'s ``ext_base``
    field reaches (``2 ** bits * EXT_ALIGN`` external words): the ``ext_depth`` of a configuration on that chip."""
    words = min(chip.banks * chip.rows * chip.columns, (1 << dict(DESCRIPTOR_FIELDS)["ext_base"]) * EXT_ALIGN)
    return words // ext_ratio(config)


def _fits(config: Config, totals: dict[str, int]) -> bool:
    r = resources(config)
    try:
        AddressMap(config)                      # the host link's 24-bit addresses
    except ValueError:
        return False
    return (r["DP16KD"] <= int(BRAM_BUDGET * totals["DP16KD"]) and r["MULT18X18D"] <= totals["MULT18X18D"]
            and r["LUT4"] <= totals["LUT4"])


def _grow(config: Config, totals: dict[str, int]) -> Config:
    """Double the scratchpad banks and the weight store while the configuration fits: first whichever is
    furthest below ``weight : spike : wide = 4 : 1 : 1``, then any that still fits (a conv stem's image and its
    first feature map are as many words as each other: 784 of each for a 28 x 28 image at 16 channels)."""
    ratio = {"weight_depth": 4, "spike_depth": 1, "wide_depth": 1}
    while True:
        behind = sorted(ratio, key=lambda k: (getattr(config, k) / ratio[k], -ratio[k]))
        for knob in behind:
            bigger = replace(config, **{knob: 2 * getattr(config, knob)})
            if _fits(bigger, totals):
                config = bigger
                break
        else:
            return config


def _grow_banks(config: Config, totals: dict[str, int]) -> Config:
    """Grow the scratchpad banks by quarters (of the power of two below) while the configuration fits, whichever
    is further below ``spike : wide = 4 : 1`` first: a transformer's widest spike tensor (its MLP's hidden
    layer, 4x the width) and its residual stream, both live at once with another of the width."""
    ratio = {"spike_depth": 4, "wide_depth": 1}
    while True:
        behind = sorted(ratio, key=lambda k: (getattr(config, k) / ratio[k], -ratio[k]))
        for knob in behind:
            depth = getattr(config, knob)
            bigger = replace(config, **{knob: depth + (1 << (depth.bit_length() - 1)) // 4})
            if _fits(bigger, totals):
                config = bigger
                break
        else:
            return config


def weight_bits_of(graph) -> int:
    """The most bits of any weight of an IR graph (1 for a graph without weights)."""
    return max((int(op.bits) for op in graph.ops if getattr(op, "weight", None) is not None), default=1)


def board_config(totals: dict[str, int], lanes: int | None = None, *, name: str = "the device",
                 weight_bits: int | None = None, sdram: SdramChip | None = None) -> Config:
    """The standard overlay configuration of a device with ``totals`` (``boards.spec.BoardSpec.fit_totals``: LUT4,
    FF, DP16KD, MULT18X18D) at ``lanes`` lanes; None: :data:`STANDARD_LANES`, or on a device that cannot hold
    them with :data:`MIN_WEIGHTS` weights on chip, the largest power of two below that can (else the one that
    holds the most weights). UserError (naming the device ``name``) if it holds none.

    ``weight_bits``: the model's (:func:`weight_bits_of`); above the standard 4 the configuration has
    :data:`WIDE_WEIGHT_BITS`-bit weights (fewer of them on chip). ``sdram``: the board's SDRAM chip, for the
    configuration that streams weights from it (``ext_depth``: :func:`external_depth`; the board's second
    bitstream, for models whose weights do not fit on chip)."""
    widths = dict(WIDTHS)
    if weight_bits is not None and weight_bits > WIDTHS["weight_bits"]:
        widths["weight_bits"] = WIDE_WEIGHT_BITS
    if lanes is not None and (isinstance(lanes, bool) or not isinstance(lanes, int) or not 1 <= lanes <= 64):
        raise UserError(f"the overlay's lanes must be an integer from 1 to 64, not {lanes!r}")
    tries = [lanes] if lanes is not None else [p for p in (16, 8, 4, 2, 1) if p <= STANDARD_LANES]
    made = []
    for p in tries:
        base = Config(lanes=p, program_depth=PROGRAM_DEPTH, kv_depth=KV_DEPTH, out_groups=-(-MAX_CHANNELS // p),
                      spike_depth=256, wide_depth=128, weight_depth=512, post_lanes=standard_post_lanes(p),
                      **widths)
        base = replace(base, param_depth=max(PARAM_GROUPS, min(2 * PARAM_GROUPS, -(-PARAM_CHANNELS // p))))
        if sdram is not None:           # a smaller device: a shorter program memory before fewer lanes
            for depth in (STREAM_PROGRAM_DEPTH, STREAM_PROGRAM_DEPTH // 2, PROGRAM_DEPTH):
                stream = replace(base, weight_depth=STREAM_WEIGHT_WORDS, param_depth=STREAM_PARAM_GROUPS,
                                 program_depth=depth, spike_depth=4 * base.wide_depth)
                stream = replace(stream, ext_depth=external_depth(stream, sdram))
                if _fits(stream, totals):
                    break
            base = stream
        if _fits(base, totals):
            config = _grow(base, totals) if sdram is None else _grow_banks(base, totals)
            if lanes is not None or config.weight_depth * p >= MIN_WEIGHTS:
                return config
            made.append(config)
    if made:
        return max(made, key=lambda c: (c.weight_depth * c.lanes, c.lanes))
    r = resources(base)
    raise UserError(f"{name} cannot hold the overlay at {tries[-1]} lane{'s' if tries[-1] != 1 else ''}: it needs "
                    f"about {r['DP16KD']:,} DP16KD (budget {int(BRAM_BUDGET * totals['DP16KD']):,}), "
                    f"{r['MULT18X18D']:,} MULT18X18D (has {totals['MULT18X18D']:,}), {r['LUT4']:,} LUT4 "
                    f"(has {totals['LUT4']:,})")


def limits(config: Config) -> dict[str, int]:
    """What a model may have to run on ``config`` (each a bound ``compile_program`` checks, with the field that
    sets it): channels of one layer's output, tokens, weights on chip, time steps, spike levels, weight bits,
    classes, descriptors, per-channel parameter words, the scratchpad banks' words, the external memory's
    weight words (0: none, every weight on chip)."""
    fields = dict(DESCRIPTOR_FIELDS)
    P = config.lanes
    return {"lanes": P,
            "post_lanes": config.post_width,
            "max_out_channels": config.out_groups * P,
            "max_in_channels": (1 << fields["in_ch"]) - 1,
            "max_tokens": (1 << fields["tokens"]) - 1,
            "max_time_steps": (1 << fields["steps"]) - 1,
            "max_levels": min(config.levels, (1 << config.spike_bits) - 1),
            "max_weight_bits": config.weight_bits,
            "weights_on_chip": config.weight_depth * P,
            "weight_words": config.weight_depth,
            "external_weight_words": config.ext_depth,
            "spike_words": config.spike_depth,
            "wide_words": config.wide_depth,
            "param_words": config.param_depth,
            "kv_words": config.kv_depth,
            "max_descriptors": config.program_depth,
            "max_classes": config.classes}


def describe(config: Config) -> dict:
    """``config`` for reports: its fields, its hash (what the gateware answers in ``REG_CONFIG``), its limits
    and its block RAMs."""
    return {"config": asdict(config), "config_hash": f"{config_hash(config):08x}", "limits": limits(config),
            "block_rams": block_rams(config)}
