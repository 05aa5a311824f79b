"""Quantization-aware training primitives: LSQ weights, multi-level spiking neurons, fixed-point fake-quant.

Every rounding here is the one the integer golden model uses (see ``docs/semantics.md``), so that the
float model and the integer model disagree as rarely as possible.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def weight_range(bits: int) -> tuple[int, int]:
    """Signed range [Qn, Qp] of a ``bits``-bit weight."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def _floor_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.floor(x) - x).detach()


def _grad_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    return (x - x * scale).detach() + x * scale


class LSQ(nn.Module):
    """Learned step size quantizer with one step (scale) per output channel."""

    def __init__(self, bits: int, weight: torch.Tensor):
        super().__init__()
        self.bits = bits
        self.qn, self.qp = weight_range(bits)
        if weight.is_meta:      # shapes only (checkpoint.load's check): arithmetic on meta tensors imports dynamo (1 s)
            self.alpha = nn.Parameter(torch.empty(weight.shape[0], dtype=weight.dtype, device="meta"))
            return
        per_channel = weight.detach().reshape(weight.shape[0], -1).abs().mean(dim=1)
        self.alpha = nn.Parameter(2 * per_channel.clamp_min(1e-4) / math.sqrt(self.qp))

    def _alpha(self, weight: torch.Tensor) -> torch.Tensor:
        return self.alpha.abs().clamp_min(1e-8).reshape(-1, *([1] * (weight.dim() - 1)))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        g = 1.0 / math.sqrt(weight[0].numel() * self.qp)
        alpha = _grad_scale(self._alpha(weight), g)
        return _round_ste(torch.clamp(weight / alpha, self.qn, self.qp)) * alpha

    @torch.no_grad()
    def integer(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The integer weights and the per-channel scale: ``weight ~= w_int * scale``."""
        alpha = self._alpha(weight)
        w_int = torch.round(torch.clamp(weight / alpha, self.qn, self.qp)).to(torch.int64)
        return w_int, alpha.reshape(-1).double()


class QuantLinear(nn.Linear):
    """``nn.Linear`` whose weight is LSQ-quantized to ``bits`` bits in every forward pass."""

    def __init__(self, in_features: int, out_features: int, bits: int, bias: bool = False):
        super().__init__(in_features, out_features, bias=bias)
        self.quant = LSQ(bits, self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.quant(self.weight), self.bias)


class QuantPatchConv(nn.Conv2d):
    """Patch embedding: a conv with kernel = stride = ``patch`` and LSQ-quantized weights."""

    def __init__(self, in_channels: int, out_channels: int, patch: int, bits: int):
        super().__init__(in_channels, out_channels, kernel_size=patch, stride=patch, bias=False)
        self.quant = LSQ(bits, self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.quant(self.weight), None, self.stride)


class QuantConv(nn.Conv2d):
    """A k x k conv (stride, zero padding, groups; depthwise when groups = channels) with LSQ-quantized weights."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, bits: int, stride: int = 1,
                 padding: int = 0, groups: int = 1):
        super().__init__(in_channels, out_channels, kernel_size=kernel, stride=stride, padding=padding,
                         groups=groups, bias=False)
        self.quant = LSQ(bits, self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.quant(self.weight), None, self.stride, self.padding, 1, self.groups)


class IntQuant(nn.Module):
    """Fake-quantizes a non-spike activation to signed ``bits``-bit integers times a learned step ``s``:
    ``q = clamp(floor(x / s + 1/2), Qn, Qp)`` (round half up, saturate: the IR's ``Requant``), output ``q * s``.

    The integer model passes ``q`` on as a multi-level event (the depthwise -> pointwise path of a SepConv)."""

    def __init__(self, bits: int, init: float = 0.5):
        super().__init__()
        self.bits = bits
        self.qn, self.qp = weight_range(bits)
        self.step = nn.Parameter(torch.tensor(float(init)))

    def scale(self) -> float:
        """The step ``s`` as the integer model uses it."""
        return float(self.step.detach().abs().clamp_min(1e-4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = _grad_scale(self.step.abs().clamp_min(1e-4), 1.0 / math.sqrt(x[0].numel() * self.qp))
        return _floor_ste(torch.clamp(x / s, self.qn, self.qp) + 0.5) * s


class _MultiSpike(torch.autograd.Function):
    """level = floor(clamp(D*u, 0, D) + 1/2), straight-through gradient inside [0, 1]."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, levels: int) -> torch.Tensor:
        ctx.save_for_backward(u)
        ctx.levels = levels
        return torch.floor(torch.clamp(levels * u, 0, levels) + 0.5)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (u,) = ctx.saved_tensors
        inside = ((u >= 0) & (u <= 1)).to(grad.dtype)
        return grad * inside * ctx.levels, None


class SpikeNeuron(nn.Module):
    """Multi-level LIF neuron over T time steps (axis 0), hard reset; stateless when T = 1.

    ``H[t] = V[t-1] - V[t-1] / 2**leak_shift + X[t]``; the level is ``floor(clamp(D*H, 0, D) + 1/2)``;
    ``V[t] = H[t]`` if the level is 0, else 0. The output is ``level / D``.

    With ``grid`` set (the residual stream's step 2**-F), the leak rounds down to that grid exactly as the
    integer model's arithmetic shift does, so that membranes on the grid stay on it.
    """

    def __init__(self, levels: int, leak_shift: int, grid: float | None = None):
        super().__init__()
        self.levels = levels
        self.leak_shift = leak_shift
        self.grid = grid

    def _leak(self, v: torch.Tensor) -> torch.Tensor:
        if self.grid is None:
            return v - v / (1 << self.leak_shift)
        steps = v / self.grid
        return (steps - _floor_ste(steps / (1 << self.leak_shift))) * self.grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 1:
            return _MultiSpike.apply(x, self.levels) / self.levels
        v = torch.zeros_like(x[0])
        out = []
        for t in range(x.shape[0]):
            h = self._leak(v) + x[t]
            level = _MultiSpike.apply(h, self.levels)
            out.append(level / self.levels)
            v = h * (level.detach() == 0)
        return torch.stack(out)


class FixedPoint(nn.Module):
    """Fake-quantizes the residual stream: round half up to ``frac`` bits, saturate to ``width`` bits."""

    def __init__(self, frac: int, width: int):
        super().__init__()
        self.frac = frac
        self.width = width

    @property
    def step(self) -> float:
        return 2.0 ** -self.frac

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = float(1 << self.frac)
        lo, hi = -(1 << (self.width - 1)), (1 << (self.width - 1)) - 1
        q = _floor_ste(x * scale + 0.5)
        q = q + (torch.clamp(q, lo, hi) - q).detach()
        return q / scale
