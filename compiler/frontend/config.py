"""Model configuration: the one place where a QSD-Transformer's hyper-parameters are named and checked."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import UserError
from ..ir import conv_out

SUPPORTED_BITS = (2, 3, 4, 8)
SUPPORTED_LEVELS = (1, 2, 4)
ATTENTION_KINDS = ("sdsa1", "linear")
INPUT_KINDS = ("image", "events")
MAX_TIMESTEPS = 16
#: Architectures, by the names scripts use (``--arch``): ``flat`` is the original family.
ARCHS = ("flat", "metaformer", "spikformer")
HEAD_KINDS = ("spikes", "membrane")
MAX_STAGES = 6
#: ``dims`` and ``depths`` when an architecture other than flat is asked for without them.
DEFAULT_STAGES = {"metaformer": ((16, 32, 64, 128), (1, 1, 2, 1)), "spikformer": ((16, 32, 64), (1,))}
#: Fields that only the non-flat architectures use: left out of a flat model's dictionary (and so of its
#: checkpoint) while they hold these defaults, so that flat checkpoints stay what they always were.
_STAGE_DEFAULTS = {"arch": "flat", "dims": (), "depths": (), "head": "spikes"}


def parse_int_list(text: str, flag: str) -> tuple[int, ...]:
    """A command line's comma-separated integers (``--dims 16,32,64,128``) as a tuple; UserError naming ``flag``
    otherwise. The values themselves are checked by :class:`ModelConfig`."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise UserError(f"{flag} must be comma-separated integers such as 16,32,64, not {text!r}") from None
    return values


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a QSD-style spiking Transformer.

    Attributes
    ----------
    input: ``"image"`` (uint8 C x H x W, direct encoding, the same image at every time step)
        or ``"events"`` (binary frames T x C x H x W).
    image_size, channels: input height = width, and channel count.
    classes: number of output classes.
    patch: the stem is a conv with kernel = stride = ``patch`` (patch embedding).
    dim, depth, heads, mlp_ratio: transformer width, block count, heads, MLP hidden = round(dim * ratio).
    bits: signed weight bits of every conv/linear layer (LSQ, one scale per output channel).
    levels: D, spike levels 0..D (1 = binary spikes).
    timesteps: T, time steps; the membranes leak by ``leak_shift`` (tau = 2**leak_shift) between steps.
    attention: ``"sdsa1"`` (V1: AND, popcount over tokens, threshold, mask) or ``"linear"`` (V2/QSD: Q (K^T V)).
    attn_scale: the attention's fixed scale before its neuron.
    pos_embed: a learned per-token, per-channel bias on the stem's membrane (position information; flat only).
    arch: ``"flat"`` (patch stem, ``depth`` blocks of width ``dim``), ``"metaformer"`` (QSD / Meta-SpikeFormer:
        a 7x7 stride-2 conv stem, 3x3 stride-2 downsampling before every later stage, the first
        ``len(dims) // 2`` stages of conv blocks, the rest of transformer blocks) or ``"spikformer"``
        (Spike-driven Transformer V1: an SPS stem of 3x3 convs, each but the last followed by a neuron and a
        3x3 stride-2 max-pool, a 3x3 conv position embedding, then transformer blocks). docs/model.md.
    dims, depths: metaformer: each stage's width and block count (one entry per stage); spikformer: the SPS
        convs' widths (the last is the transformer's) and one entry, the transformer block count. Empty for
        flat (which uses ``dim`` and ``depth``); for the others, both empty mean ``DEFAULT_STAGES``, and
        ``depths`` alone empty means one block per stage (spikformer: one transformer block).
    head: ``"spikes"`` (a neuron on the residual stream, then the mean of its spikes) or ``"membrane"`` (the
        mean of the residual stream itself, Spike-driven Transformer V1's head).
    """

    input: str = "image"
    image_size: int = 8
    channels: int = 1
    classes: int = 10
    patch: int = 2
    dim: int = 32
    depth: int = 1
    heads: int = 4
    mlp_ratio: float = 4.0
    bits: int = 4
    levels: int = 4
    timesteps: int = 1
    leak_shift: int = 1
    attention: str = "linear"
    attn_scale: float = 0.125
    pos_embed: bool = True
    arch: str = "flat"
    dims: tuple[int, ...] = ()
    depths: tuple[int, ...] = ()
    head: str = "spikes"

    def __post_init__(self) -> None:
        for name in ("dims", "depths"):          # lists (JSON, the command line) become tuples
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        def empty(value) -> bool:
            return isinstance(value, tuple) and not value

        if isinstance(self.arch, str) and self.arch in DEFAULT_STAGES and empty(self.depths):
            dims, depths = DEFAULT_STAGES[self.arch]
            if empty(self.dims):
                object.__setattr__(self, "dims", dims)
            elif isinstance(self.dims, tuple):           # widths given alone: one block per stage
                object.__setattr__(self, "depths", (1,) * len(self.dims) if self.arch == "metaformer" else (1,))
            if empty(self.depths):
                object.__setattr__(self, "depths", depths)
        self.validate()

    def mlp_hidden(self, dim: int) -> int:
        """Hidden width of an MLP (or a channel-conv block) on a ``dim``-wide stream."""
        return max(1, int(round(dim * self.mlp_ratio)))

    @property
    def hidden(self) -> int:
        return self.mlp_hidden(self.dim)

    @property
    def width(self) -> int:
        """The residual stream's width where the head reads it."""
        return self.dim if self.arch == "flat" else self.dims[-1]

    @property
    def conv_stages(self) -> int:
        """metaformer: how many leading stages are conv stages (the rest are transformer stages)."""
        return len(self.dims) // 2 if self.arch == "metaformer" else 0

    def grids(self) -> list[tuple[int, int]]:
        """The token grid (height, width) of each stage's residual stream: one entry for flat and spikformer."""
        if self.arch == "flat":
            side = self.image_size // self.patch
            return [(side, side)]
        side = self.image_size
        if self.arch == "spikformer":
            for _ in self.dims[:-1]:
                side = conv_out(side, 3, 2, 1)         # each SPS max-pool halves the grid (rounding up)
            return [(side, side)]
        sides = [conv_out(side, 7, 2, 3)]
        for _ in self.dims[1:]:
            sides.append(conv_out(sides[-1], 3, 2, 1))
        return [(h, h) for h in sides]

    @property
    def tokens(self) -> int:
        """Tokens where the head reads the residual stream."""
        h, w = self.grids()[-1]
        return h * w

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample (without the batch axis)."""
        hw = (self.channels, self.image_size, self.image_size)
        return hw if self.input == "image" else (self.timesteps, *hw)

    def validate(self) -> None:
        def need(cond: bool, what: str) -> None:
            if not cond:
                raise UserError(f"unsupported model configuration: {what}")

        ints = ("image_size", "channels", "classes", "patch", "dim", "depth", "heads",
                "bits", "levels", "timesteps", "leak_shift")
        for name in ints:
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool), f"{name} must be an integer, not {value!r}")
        need(isinstance(self.pos_embed, bool), f"pos_embed must be true or false, not {self.pos_embed!r}")
        for name in ("mlp_ratio", "attn_scale"):
            value = getattr(self, name)
            need(isinstance(value, (int, float)) and not isinstance(value, bool), f"{name} must be a number, not {value!r}")
        need(self.input in INPUT_KINDS, f"input must be one of {', '.join(INPUT_KINDS)}, not {self.input!r}")
        need(self.attention in ATTENTION_KINDS,
             f"attention must be one of {', '.join(ATTENTION_KINDS)}, not {self.attention!r}")
        need(self.bits in SUPPORTED_BITS, f"bits must be one of {SUPPORTED_BITS}, not {self.bits}")
        need(self.levels in SUPPORTED_LEVELS, f"levels must be one of {SUPPORTED_LEVELS}, not {self.levels}")
        need(1 <= self.timesteps <= MAX_TIMESTEPS, f"timesteps must be 1..{MAX_TIMESTEPS}, not {self.timesteps}")
        need(1 <= self.leak_shift <= 8, f"leak_shift must be 1..8 (tau = 2**leak_shift), not {self.leak_shift}")
        need(1 <= self.channels <= 64, f"channels must be 1..64, not {self.channels}")
        need(2 <= self.classes <= 1024, f"classes must be 2..1024, not {self.classes}")
        need(1 <= self.image_size <= 256, f"image_size must be 1..256, not {self.image_size}")
        need(self.arch != "flat" or (1 <= self.patch <= self.image_size and self.image_size % self.patch == 0),
             f"patch {self.patch} must divide image_size {self.image_size}")
        need(1 <= self.dim <= 1024, f"dim must be 1..1024, not {self.dim}")
        need(1 <= self.depth <= 16, f"depth must be 1..16, not {self.depth}")
        if self.arch == "flat":
            need(1 <= self.heads <= self.dim and self.dim % self.heads == 0,
                 f"heads {self.heads} must divide dim {self.dim}")
        need(0 < self.mlp_ratio <= 16, f"mlp_ratio must be in (0, 16], not {self.mlp_ratio}")
        need(0 < self.attn_scale <= 16, f"attn_scale must be in (0, 16], not {self.attn_scale}")
        need(self.arch in ARCHS, f"arch must be one of {', '.join(ARCHS)}, not {self.arch!r}")
        need(self.head in HEAD_KINDS, f"head must be one of {', '.join(HEAD_KINDS)}, not {self.head!r}")
        for name in ("dims", "depths"):
            value = getattr(self, name)
            need(isinstance(value, tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in value),
                 f"{name} must be a list of integers, not {value!r}")
        if self.arch == "flat":
            need(self.dims == () and self.depths == (),
                 "dims and depths are for the metaformer and spikformer architectures (flat uses dim and depth)")
            return
        need(1 <= len(self.dims) <= MAX_STAGES, f"dims must have 1..{MAX_STAGES} entries, not {len(self.dims)}")
        need(all(1 <= d <= 1024 for d in self.dims), f"every entry of dims must be 1..1024, not {self.dims}")
        need(all(0 <= d <= 16 for d in self.depths), f"every entry of depths must be 0..16, not {self.depths}")
        if self.arch == "metaformer":
            need(len(self.depths) == len(self.dims),
                 f"metaformer needs one depth per stage: {len(self.dims)} dims, {len(self.depths)} depths")
            attention_dims = [d for i, d in enumerate(self.dims) if i >= self.conv_stages and self.depths[i]]
        else:
            need(len(self.depths) == 1, "spikformer takes one depth (its transformer block count), "
                                         f"not {len(self.depths)}")
            attention_dims = [self.dims[-1]] if self.depths[0] else []
        for d in attention_dims:
            need(self.heads <= d and d % self.heads == 0, f"heads {self.heads} must divide every transformer "
                                                          f"stage's width, not {d}")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if self.arch == "flat":
            for name, default in _STAGE_DEFAULTS.items():
                if data[name] == default:
                    del data[name]
        else:
            data["dims"], data["depths"] = list(self.dims), list(self.depths)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> "ModelConfig":
        if not isinstance(data, dict):
            raise UserError(f"model configuration must be a mapping, not {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"unsupported model configuration: unknown key(s) {', '.join(map(str, unknown))}")
        return cls(**data)
