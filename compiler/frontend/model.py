"""The PyTorch QSD-Transformer family (float model with quantization-aware training).

Shapes: activations are ``[T, B, N, C]`` (time, batch, tokens, channels). The residual stream (membrane
shortcut) is fake-quantized to the fixed-point format the hardware uses after every addition.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig
from .quant import FixedPoint, QuantLinear, QuantPatchConv, SpikeNeuron

# The residual stream's fixed-point format (see docs/semantics.md): signed RESIDUAL_WIDTH bits,
# RESIDUAL_FRAC of them fractional, so values in [-128, 128) with a step of 1/256.
RESIDUAL_FRAC = 8
RESIDUAL_WIDTH = 16


class ConvBN(nn.Module):
    """A quantized 1x1 conv (a linear layer over tokens) followed by BatchNorm over channels."""

    def __init__(self, cin: int, cout: int, bits: int):
        super().__init__()
        self.linear = QuantLinear(cin, cout, bits)
        self.bn = nn.BatchNorm1d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return self.bn(y.reshape(-1, y.shape[-1])).reshape(y.shape)


class Attention(nn.Module):
    """Spike-driven self-attention, ``sdsa1`` (V1) or ``linear`` (V2/QSD)."""

    def __init__(self, cfg: ModelConfig, residual_grid: float):
        super().__init__()
        self.kind = cfg.attention
        self.heads = cfg.heads
        self.scale = cfg.attn_scale
        self.input_sn = SpikeNeuron(cfg.levels, cfg.leak_shift, residual_grid)
        self.q = ConvBN(cfg.dim, cfg.dim, cfg.bits)
        self.k = ConvBN(cfg.dim, cfg.dim, cfg.bits)
        self.v = ConvBN(cfg.dim, cfg.dim, cfg.bits)
        self.q_sn = SpikeNeuron(cfg.levels, cfg.leak_shift)
        self.k_sn = SpikeNeuron(cfg.levels, cfg.leak_shift)
        self.v_sn = SpikeNeuron(cfg.levels, cfg.leak_shift)
        # sdsa1's key-value neuron is binary: its output masks Q's spikes.
        self.attn_sn = SpikeNeuron(1 if self.kind == "sdsa1" else cfg.levels, cfg.leak_shift)
        self.proj = ConvBN(cfg.dim, cfg.dim, cfg.bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.input_sn(x)
        q = self.q_sn(self.q(s))
        k = self.k_sn(self.k(s))
        v = self.v_sn(self.v(s))
        if self.kind == "sdsa1":
            kv = (k * v).sum(dim=2, keepdim=True)          # [T, B, 1, C]: co-spikes over tokens
            a = q * self.attn_sn(kv * self.scale)          # mask Q's spikes
        else:
            t, b, n, c = q.shape
            h = self.heads
            qh, kh, vh = (z.reshape(t, b, n, h, c // h).transpose(2, 3) for z in (q, k, v))
            kv = kh.transpose(-2, -1) @ vh                 # [T, B, H, d, d]
            a = (qh @ kv).transpose(2, 3).reshape(t, b, n, c)
            a = self.attn_sn(a * self.scale)
        return self.proj(a)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig, residual_grid: float):
        super().__init__()
        self.input_sn = SpikeNeuron(cfg.levels, cfg.leak_shift, residual_grid)
        self.fc1 = ConvBN(cfg.dim, cfg.hidden, cfg.bits)
        self.hidden_sn = SpikeNeuron(cfg.levels, cfg.leak_shift)
        self.fc2 = ConvBN(cfg.hidden, cfg.dim, cfg.bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.hidden_sn(self.fc1(self.input_sn(x))))


class Block(nn.Module):
    """A transformer block with membrane shortcuts: ``x = x + attn(x)``, ``x = x + mlp(x)``."""

    def __init__(self, cfg: ModelConfig, fixed: FixedPoint):
        super().__init__()
        self.attn = Attention(cfg, fixed.step)
        self.mlp = MLP(cfg, fixed.step)
        self.fixed = fixed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fixed(x + self.attn(x))
        return self.fixed(x + self.mlp(x))


class QSDTransformer(nn.Module):
    """Stem (patch embedding + BN + position bias) -> blocks -> spiking head (token mean -> linear)."""

    def __init__(self, cfg: ModelConfig, dataset: str | None = None):
        super().__init__()
        self.cfg = cfg
        self.dataset = dataset          # what it was trained on: evaluate's default dataset
        self.fixed = FixedPoint(RESIDUAL_FRAC, RESIDUAL_WIDTH)
        self.stem = QuantPatchConv(cfg.channels, cfg.dim, cfg.patch, cfg.bits)
        self.stem_bn = nn.BatchNorm2d(cfg.dim)
        self.pos = nn.Parameter(torch.zeros(cfg.tokens, cfg.dim)) if cfg.pos_embed else None
        self.blocks = nn.ModuleList(Block(cfg, self.fixed) for _ in range(cfg.depth))
        self.head_sn = SpikeNeuron(cfg.levels, cfg.leak_shift, self.fixed.step)
        self.head = QuantLinear(cfg.dim, cfg.classes, cfg.bits, bias=True)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Input batch -> float frames ``[T, B, C, H, W]`` (images: pixels / 255, repeated T times)."""
        if self.cfg.input == "image":
            return (x.float() / 255.0).unsqueeze(0).expand(self.cfg.timesteps, *x.shape)
        return x.float().transpose(0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = self.encode(x)
        t, b = frames.shape[:2]
        y = self.stem_bn(self.stem(frames.reshape(t * b, *frames.shape[2:])))  # [T*B, C, h, w]
        y = y.flatten(2).transpose(1, 2).reshape(t, b, self.cfg.tokens, self.cfg.dim)
        if self.pos is not None:
            y = y + self.pos
        x = self.fixed(y)
        for block in self.blocks:
            x = block(x)
        s = self.head_sn(x)
        return self.head(s.mean(dim=(0, 2)))
