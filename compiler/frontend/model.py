"""The PyTorch QSD-Transformer family (float model with quantization-aware training).

Shapes: activations are ``[T, B, N, C]`` (time, batch, tokens, channels). The residual stream (membrane
shortcut) is fake-quantized to the fixed-point format the hardware uses after every addition.
"""

from __future__ import annotations

import torch
from torch import nn

from torch.nn import functional as F

from ..ir import conv_out
from .config import ModelConfig
from .quant import FixedPoint, IntQuant, QuantConv, QuantLinear, QuantPatchConv, SpikeNeuron

# The residual stream's fixed-point format (see docs/semantics.md): signed RESIDUAL_WIDTH bits,
# RESIDUAL_FRAC of them fractional, so values in [-128, 128) with a step of 1/256.
RESIDUAL_FRAC = 8
RESIDUAL_WIDTH = 16

# The conv architectures' fixed shapes (docs/model.md): kernel, stride, padding.
STEM_CONV = (7, 2, 3)            # metaformer's stem on the pixels
DOWN_CONV = (3, 2, 1)            # metaformer's downsampling before every later stage
SEP_EXPANSION = 2                # SepConv: pointwise to 2 x width, depthwise, pointwise back
SEP_DW_CONV = (7, 1, 3)          # SepConv's depthwise conv
SEP_BITS = 4                     # the depthwise -> pointwise intermediate: signed 4-bit integers
CHANNEL_CONV = (3, 1, 1)         # the channel-conv block's two convs
SPS_CONV = (3, 1, 1)             # spikformer's SPS convs and its conv position embedding
SPS_POOL = (3, 2, 1)             # the max-pool after each SPS neuron but the last


class ConvBN(nn.Module):
    """A quantized 1x1 conv (a linear layer over tokens) followed by BatchNorm over channels."""

    def __init__(self, cin: int, cout: int, bits: int):
        super().__init__()
        self.linear = QuantLinear(cin, cout, bits)
        self.bn = nn.BatchNorm1d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return self.bn(y.reshape(-1, y.shape[-1])).reshape(y.shape)


class GridConvBN(nn.Module):
    """A quantized k x k conv over tokens that form an ``h x w`` grid (token ``n = y * w + x``), then BatchNorm:
    ``[T, B, h*w, C] -> [T, B, ho*wo, O]`` (the IR's ``Conv``, zero padding)."""

    def __init__(self, cin: int, cout: int, bits: int, grid: tuple[int, int], conv: tuple[int, int, int],
                 groups: int = 1):
        super().__init__()
        kernel, stride, padding = conv
        self.conv = QuantConv(cin, cout, kernel, bits, stride, padding, groups)
        self.bn = nn.BatchNorm2d(cout)
        self.grid = grid
        self.out_grid = (conv_out(grid[0], kernel, stride, padding), conv_out(grid[1], kernel, stride, padding))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, b, n, c = x.shape
        y = self.bn(self.conv(x.reshape(t * b, *self.grid, c).permute(0, 3, 1, 2)))
        return y.permute(0, 2, 3, 1).reshape(t, b, self.out_grid[0] * self.out_grid[1], y.shape[1])


class GridMaxPool(nn.Module):
    """k x k max-pooling of spikes over tokens that form an ``h x w`` grid (the IR's ``MaxPool``)."""

    def __init__(self, grid: tuple[int, int], pool: tuple[int, int, int]):
        super().__init__()
        self.kernel, self.stride, self.padding = pool
        self.grid = grid
        self.out_grid = tuple(conv_out(g, *pool) for g in grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, b, n, c = x.shape
        y = F.max_pool2d(x.reshape(t * b, *self.grid, c).permute(0, 3, 1, 2), self.kernel, self.stride, self.padding)
        return y.permute(0, 2, 3, 1).reshape(t, b, -1, c)


class LayerScale(nn.Module):
    """A learned per-channel scale on a residual branch (folded into the branch's requantization)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


class Attention(nn.Module):
    """Spike-driven self-attention, ``sdsa1`` (V1) or ``linear`` (V2/QSD), on a ``dim``-wide stream."""

    def __init__(self, cfg: ModelConfig, residual_grid: float, dim: int | None = None):
        super().__init__()
        dim = cfg.dim if dim is None else dim
        self.kind = cfg.attention
        self.heads = cfg.heads
        self.scale = cfg.attn_scale
        self.input_sn = SpikeNeuron(cfg.levels, cfg.leak_shift, residual_grid)
        self.q = ConvBN(dim, dim, cfg.bits)
        self.k = ConvBN(dim, dim, cfg.bits)
        self.v = ConvBN(dim, dim, cfg.bits)
        self.q_sn = SpikeNeuron(cfg.levels, cfg.leak_shift)
        self.k_sn = SpikeNeuron(cfg.levels, cfg.leak_shift)
        self.v_sn = SpikeNeuron(cfg.levels, cfg.leak_shift)
        # sdsa1's key-value neuron is binary: its output masks Q's spikes.
        self.attn_sn = SpikeNeuron(1 if self.kind == "sdsa1" else cfg.levels, cfg.leak_shift)
        self.proj = ConvBN(dim, dim, cfg.bits)

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
    def __init__(self, cfg: ModelConfig, residual_grid: float, dim: int | None = None):
        super().__init__()
        dim = cfg.dim if dim is None else dim
        self.input_sn = SpikeNeuron(cfg.levels, cfg.leak_shift, residual_grid)
        self.fc1 = ConvBN(dim, cfg.mlp_hidden(dim), cfg.bits)
        self.hidden_sn = SpikeNeuron(cfg.levels, cfg.leak_shift)
        self.fc2 = ConvBN(cfg.mlp_hidden(dim), dim, cfg.bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.hidden_sn(self.fc1(self.input_sn(x))))


class Block(nn.Module):
    """A transformer block with membrane shortcuts: ``x = x + attn(x)``, ``x = x + mlp(x)`` (with a per-channel
    layer scale on both branches when ``layer_scale``)."""

    def __init__(self, cfg: ModelConfig, fixed: FixedPoint, dim: int | None = None, layer_scale: bool = False):
        super().__init__()
        self.attn = Attention(cfg, fixed.step, dim)
        self.mlp = MLP(cfg, fixed.step, dim)
        self.fixed = fixed
        dim = cfg.dim if dim is None else dim
        self.attn_layer_scale = LayerScale(dim) if layer_scale else None
        self.mlp_layer_scale = LayerScale(dim) if layer_scale else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.attn(x)
        x = self.fixed(x + (a if self.attn_layer_scale is None else self.attn_layer_scale(a)))
        m = self.mlp(x)
        return self.fixed(x + (m if self.mlp_layer_scale is None else self.mlp_layer_scale(m)))


class SepConv(nn.Module):
    """MetaFormer's SepConv branch: ``SN -> pointwise (2C) + BN -> SN -> 7x7 depthwise + BN -> 4-bit integers
    -> pointwise (C) + BN -> layer scale``: the depthwise output feeds the next conv without a neuron."""

    def __init__(self, cfg: ModelConfig, fixed: FixedPoint, dim: int, grid: tuple[int, int]):
        super().__init__()
        hidden = SEP_EXPANSION * dim
        self.input_sn = SpikeNeuron(cfg.levels, cfg.leak_shift, fixed.step)
        self.pw1 = ConvBN(dim, hidden, cfg.bits)
        self.pw1_sn = SpikeNeuron(cfg.levels, cfg.leak_shift)
        self.dw = GridConvBN(hidden, hidden, cfg.bits, grid, SEP_DW_CONV, groups=hidden)
        self.dw_q = IntQuant(SEP_BITS)
        self.pw2 = ConvBN(hidden, dim, cfg.bits)
        self.scale = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.pw1_sn(self.pw1(self.input_sn(x)))
        return self.scale(self.pw2(self.dw_q(self.dw(s))))


class ChannelConv(nn.Module):
    """MetaFormer's channel-conv branch: ``SN -> 3x3 conv (hidden) + BN -> SN -> 3x3 conv (C) + BN -> layer scale``."""

    def __init__(self, cfg: ModelConfig, fixed: FixedPoint, dim: int, grid: tuple[int, int]):
        super().__init__()
        hidden = cfg.mlp_hidden(dim)
        self.input_sn = SpikeNeuron(cfg.levels, cfg.leak_shift, fixed.step)
        self.conv1 = GridConvBN(dim, hidden, cfg.bits, grid, CHANNEL_CONV)
        self.hidden_sn = SpikeNeuron(cfg.levels, cfg.leak_shift)
        self.conv2 = GridConvBN(hidden, dim, cfg.bits, grid, CHANNEL_CONV)
        self.scale = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale(self.conv2(self.hidden_sn(self.conv1(self.input_sn(x)))))


class ConvBlock(nn.Module):
    """A conv block with membrane shortcuts: ``x = x + SepConv(x)``, ``x = x + ChannelConv(x)``."""

    def __init__(self, cfg: ModelConfig, fixed: FixedPoint, dim: int, grid: tuple[int, int]):
        super().__init__()
        self.sep = SepConv(cfg, fixed, dim, grid)
        self.channel = ChannelConv(cfg, fixed, dim, grid)
        self.fixed = fixed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fixed(x + self.sep(x))
        return self.fixed(x + self.channel(x))


class Stage(nn.Module):
    """A metaformer stage: downsampling (the 7x7 stride-2 stem on the input's tokens for the first stage; a
    neuron and a 3x3 stride-2 conv on the residual stream for the others) + BN into a new residual stream, then
    its blocks (conv blocks or transformer blocks)."""

    def __init__(self, cfg: ModelConfig, fixed: FixedPoint, index: int, grid: tuple[int, int]):
        super().__init__()
        first = index == 0
        cin = cfg.channels if first else cfg.dims[index - 1]
        dim = cfg.dims[index]
        self.down_sn = None if first else SpikeNeuron(cfg.levels, cfg.leak_shift, fixed.step)
        self.down = GridConvBN(cin, dim, cfg.bits, grid, STEM_CONV if first else DOWN_CONV)
        self.grid = self.down.out_grid
        self.conv = index < cfg.conv_stages
        self.blocks = nn.ModuleList(ConvBlock(cfg, fixed, dim, self.grid) if self.conv
                                    else Block(cfg, fixed, dim, layer_scale=True)
                                    for _ in range(cfg.depths[index]))
        self.fixed = fixed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fixed(self.down(x if self.down_sn is None else self.down_sn(x)))
        for block in self.blocks:
            x = block(x)
        return x


class SPS(nn.Module):
    """spikformer's stem (Spike-driven Transformer V1's SPS): 3x3 convs + BN, each but the last followed by a
    neuron and a 3x3 stride-2 max-pool on its spikes; the last conv's BN output is the residual stream ``x``,
    then the conv position embedding ``x = x + BN(conv3x3(SN(x)))``."""

    def __init__(self, cfg: ModelConfig, fixed: FixedPoint):
        super().__init__()
        grid = (cfg.image_size, cfg.image_size)
        self.convs, self.sns, self.pools = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        cin = cfg.channels
        for i, dim in enumerate(cfg.dims):
            self.convs.append(GridConvBN(cin, dim, cfg.bits, grid, SPS_CONV))
            if i < len(cfg.dims) - 1:
                self.sns.append(SpikeNeuron(cfg.levels, cfg.leak_shift))
                self.pools.append(GridMaxPool(grid, SPS_POOL))
                grid = self.pools[-1].out_grid
            cin = dim
        self.grid = grid
        self.rpe_sn = SpikeNeuron(cfg.levels, cfg.leak_shift, fixed.step)
        self.rpe = GridConvBN(cin, cin, cfg.bits, grid, SPS_CONV)
        self.fixed = fixed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, sn, pool in zip(self.convs, self.sns, self.pools):
            x = pool(sn(conv(x)))
        x = self.fixed(self.convs[-1](x))
        return self.fixed(x + self.rpe(self.rpe_sn(x)))


class QSDTransformer(nn.Module):
    """The model of every architecture (``cfg.arch``, docs/model.md), then its head.

    flat: stem (patch embedding + BN + position bias) -> blocks. metaformer: stages (conv stages, then
    transformer stages). spikformer: the SPS stem, then blocks. The head: a neuron on the residual stream and
    the mean of its spikes over tokens and steps (or, ``cfg.head == "membrane"``, the mean of the residual
    stream itself) -> linear."""

    def __init__(self, cfg: ModelConfig, dataset: str | None = None):
        super().__init__()
        self.cfg = cfg
        self.dataset = dataset          # what it was trained on: evaluate's default dataset
        self.fixed = FixedPoint(RESIDUAL_FRAC, RESIDUAL_WIDTH)
        if cfg.arch == "flat":
            self.stem = QuantPatchConv(cfg.channels, cfg.dim, cfg.patch, cfg.bits)
            self.stem_bn = nn.BatchNorm2d(cfg.dim)
            self.pos = nn.Parameter(torch.zeros(cfg.tokens, cfg.dim)) if cfg.pos_embed else None
            self.blocks = nn.ModuleList(Block(cfg, self.fixed) for _ in range(cfg.depth))
        elif cfg.arch == "metaformer":
            grid = (cfg.image_size, cfg.image_size)
            self.stages = nn.ModuleList()
            for i in range(len(cfg.dims)):
                self.stages.append(Stage(cfg, self.fixed, i, grid))
                grid = self.stages[-1].grid
        else:
            self.sps = SPS(cfg, self.fixed)
            self.blocks = nn.ModuleList(Block(cfg, self.fixed, cfg.dims[-1]) for _ in range(cfg.depths[0]))
        self.head_sn = SpikeNeuron(cfg.levels, cfg.leak_shift, self.fixed.step) if cfg.head == "spikes" else None
        self.head = QuantLinear(cfg.width, cfg.classes, cfg.bits, bias=True)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Input batch -> float frames ``[T, B, C, H, W]`` (images: pixels / 255, repeated T times)."""
        if self.cfg.input == "image":
            return (x.float() / 255.0).unsqueeze(0).expand(self.cfg.timesteps, *x.shape)
        return x.float().transpose(0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = self.encode(x)
        t, b = frames.shape[:2]
        if self.cfg.arch == "flat":
            y = self.stem_bn(self.stem(frames.reshape(t * b, *frames.shape[2:])))  # [T*B, C, h, w]
            y = y.flatten(2).transpose(1, 2).reshape(t, b, self.cfg.tokens, self.cfg.dim)
            if self.pos is not None:
                y = y + self.pos
            x = self.fixed(y)
        else:
            x = frames.flatten(3).transpose(2, 3)          # [T, B, H*W, C]: token n = y * W + x (Tokenize)
            if self.cfg.arch == "metaformer":
                for stage in self.stages:
                    x = stage(x)
            else:
                x = self.sps(x)
        if self.cfg.arch != "metaformer":
            for block in self.blocks:
                x = block(x)
        s = x if self.head_sn is None else self.head_sn(x)
        return self.head(s.mean(dim=(0, 2)))
