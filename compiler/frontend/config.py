"""Model configuration: the one place where a QSD-Transformer's hyper-parameters are named and checked."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import UserError

SUPPORTED_BITS = (2, 3, 4, 8)
SUPPORTED_LEVELS = (1, 2, 4)
ATTENTION_KINDS = ("sdsa1", "linear")
INPUT_KINDS = ("image", "events")
MAX_TIMESTEPS = 16


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
    pos_embed: a learned per-token, per-channel bias on the stem's membrane (position information).
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

    def __post_init__(self) -> None:
        self.validate()

    @property
    def hidden(self) -> int:
        return max(1, int(round(self.dim * self.mlp_ratio)))

    @property
    def tokens(self) -> int:
        return (self.image_size // self.patch) ** 2

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
        need(1 <= self.patch <= self.image_size and self.image_size % self.patch == 0,
             f"patch {self.patch} must divide image_size {self.image_size}")
        need(1 <= self.dim <= 1024, f"dim must be 1..1024, not {self.dim}")
        need(1 <= self.depth <= 16, f"depth must be 1..16, not {self.depth}")
        need(1 <= self.heads <= self.dim and self.dim % self.heads == 0,
             f"heads {self.heads} must divide dim {self.dim}")
        need(0 < self.mlp_ratio <= 16, f"mlp_ratio must be in (0, 16], not {self.mlp_ratio}")
        need(0 < self.attn_scale <= 16, f"attn_scale must be in (0, 16], not {self.attn_scale}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "ModelConfig":
        if not isinstance(data, dict):
            raise UserError(f"model configuration must be a mapping, not {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"unsupported model configuration: unknown key(s) {', '.join(map(str, unknown))}")
        return cls(**data)
