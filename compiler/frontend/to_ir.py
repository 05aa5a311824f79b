"""From the trained PyTorch model to the IR: each layer becomes IR ops whose neurons and residual additions
still carry the float affine maps (BN and the LSQ scales) that :mod:`compiler.passes` folds into integers.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .. import ir
from .model import (RESIDUAL_FRAC, RESIDUAL_WIDTH, SEP_BITS, SPS_POOL, Block, ConvBlock, ConvBN, GridConvBN,
                    LayerScale, QSDTransformer)
from .quant import SpikeNeuron


def _bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[np.ndarray, np.ndarray]:
    """BatchNorm in eval mode as ``y = scale * x + shift`` (float64)."""
    var = bn.running_var.double()
    scale = bn.weight.detach().double() / torch.sqrt(var + bn.eps)
    shift = bn.bias.detach().double() - bn.running_mean.double() * scale
    return scale.numpy(), shift.numpy()


class _Builder:
    """Appends ops to a graph with readable, unique tensor names."""

    def __init__(self, model: QSDTransformer):
        self.model = model
        self.cfg = model.cfg
        self.ops: list[ir.Op] = []

    def add(self, op: ir.Op) -> str:
        self.ops.append(op)
        return op.dst

    def residual_neuron(self, name: str, src: str, sn: SpikeNeuron, channels: int | None = None) -> str:
        """A neuron reading the fixed-point residual stream directly: thresholds are exact grid points."""
        d = sn.levels
        theta = np.array([math.ceil(t * (1 << RESIDUAL_FRAC)) for t in ir.neuron_thresholds(d)], dtype=np.int64)
        c = self.cfg.dim if channels is None else channels
        return self.add(ir.Neuron(name, src, d, np.ones(c, np.int64), np.zeros(c, np.int64), 0,
                                  np.tile(theta, (c, 1)), sn.leak_shift))

    def dense(self, name: str, src: str, layer: ConvBN | nn.Module, in_scale: float):
        """A quantized linear layer (with its BN, if any) -> (ACC tensor, affine a, affine b)."""
        linear = layer.linear if isinstance(layer, ConvBN) else layer
        w_int, alpha = linear.quant.integer(linear.weight)
        acc = self.add(ir.Dense(name, src, w_int.numpy(), linear.quant.bits))
        a = alpha.numpy() * in_scale
        if isinstance(layer, ConvBN):
            s, t = _bn_affine(layer.bn)
            return acc, a * s, t
        bias = linear.bias.detach().double().numpy() if linear.bias is not None else np.zeros_like(a)
        return acc, a, bias

    def conv(self, name: str, src: str, layer: GridConvBN, in_scale: float):
        """A quantized k x k conv and its BN -> (ACC tensor, affine a, affine b)."""
        conv = layer.conv
        w_int, alpha = conv.quant.integer(conv.weight)
        acc = self.add(ir.Conv(name, src, w_int.numpy(), conv.quant.bits, *layer.grid, conv.stride[0],
                               conv.padding[0], conv.groups))
        s, t = _bn_affine(layer.bn)
        return acc, alpha.numpy() * in_scale * s, t

    def _accumulate(self, name: str, src: str, layer, in_scale: float | None):
        in_scale = 1.0 / self.cfg.levels if in_scale is None else in_scale
        if isinstance(layer, GridConvBN):
            return self.conv(name, src, layer, in_scale)
        return self.dense(name, src, layer, in_scale)

    def spiking(self, name: str, src: str, layer: ConvBN | GridConvBN, sn: SpikeNeuron,
                in_scale: float | None = None) -> str:
        acc, a, b = self._accumulate(name, src, layer, in_scale)
        return self.add(ir.AffineNeuron(f"{name}.sn", acc, sn.levels, a, b, sn.leak_shift))

    def residual_branch(self, name: str, res: str, src: str, layer: ConvBN | GridConvBN,
                        in_scale: float | None = None, scale: LayerScale | None = None) -> str:
        """``res + round(u * 256)`` for the branch's ``u = a * ACC + b``, times its layer scale if it has one."""
        acc, a, b = self._accumulate(name, src, layer, in_scale)
        if scale is not None:
            ls = scale.weight.detach().double().numpy()
            a, b = a * ls, b * ls
        c = self.add(ir.AffineRequant(f"{name}.rq", acc, a, b, RESIDUAL_FRAC, None))
        return self.add(ir.Add(f"{name}.add", res, c, RESIDUAL_WIDTH))

    def stream(self, name: str, acc: str, a: np.ndarray, b: np.ndarray) -> str:
        """A new residual stream (a stem or a downsampling): ``sat_16(round(u * 256))``."""
        return self.add(ir.AffineRequant(f"{name}.rq", acc, a, b, RESIDUAL_FRAC, RESIDUAL_WIDTH))

    def block(self, p: str, res: str, block: Block, dim: int) -> str:
        """A transformer block (attention and MLP, each a residual branch)."""
        cfg = self.cfg
        D = cfg.levels
        at = block.attn
        s_in = self.residual_neuron(f"{p}.attn.in", res, at.input_sn, dim)
        q = self.spiking(f"{p}.attn.q", s_in, at.q, at.q_sn)
        k = self.spiking(f"{p}.attn.k", s_in, at.k, at.k_sn)
        v = self.spiking(f"{p}.attn.v", s_in, at.v, at.v_sn)
        ones = np.ones(dim)
        if at.kind == "sdsa1":
            co = self.add(ir.CoSpike(f"{p}.attn.cospike", k, v))
            m = self.add(ir.AffineNeuron(f"{p}.attn.kv", co, 1, ones * (cfg.attn_scale / D ** 2),
                                         ones * 0.0, at.attn_sn.leak_shift))
            a_out = self.add(ir.Mask(f"{p}.attn.mask", q, m))
        else:
            acc = self.add(ir.LinearAttention(f"{p}.attn.qkv", q, k, v, cfg.heads))
            a_out = self.add(ir.AffineNeuron(f"{p}.attn.sn", acc, D, ones * (cfg.attn_scale / D ** 3),
                                             ones * 0.0, at.attn_sn.leak_shift))
        res = self.residual_branch(f"{p}.attn.proj", res, a_out, at.proj, scale=block.attn_layer_scale)

        mlp = block.mlp
        s_in = self.residual_neuron(f"{p}.mlp.in", res, mlp.input_sn, dim)
        h = self.spiking(f"{p}.mlp.fc1", s_in, mlp.fc1, mlp.hidden_sn)
        return self.residual_branch(f"{p}.mlp.fc2", res, h, mlp.fc2, scale=block.mlp_layer_scale)

    def conv_block(self, p: str, res: str, block: ConvBlock, dim: int) -> str:
        """A metaformer conv block: the SepConv branch (its depthwise output requantized to SEP_BITS-bit
        integers that feed the last pointwise conv), then the channel-conv branch."""
        sep = block.sep
        s_in = self.residual_neuron(f"{p}.sep.in", res, sep.input_sn, dim)
        h = self.spiking(f"{p}.sep.pw1", s_in, sep.pw1, sep.pw1_sn)
        acc, a, b = self.conv(f"{p}.sep.dw", h, sep.dw, 1.0 / self.cfg.levels)
        step = sep.dw_q.scale()
        q = self.add(ir.AffineRequant(f"{p}.sep.dw.rq", acc, a / step, b / step, 0, SEP_BITS))
        res = self.residual_branch(f"{p}.sep.pw2", res, q, sep.pw2, in_scale=step, scale=sep.scale)

        ch = block.channel
        s_in = self.residual_neuron(f"{p}.channel.in", res, ch.input_sn, dim)
        h = self.spiking(f"{p}.channel.conv1", s_in, ch.conv1, ch.hidden_sn)
        return self.residual_branch(f"{p}.channel.conv2", res, h, ch.conv2, scale=ch.scale)


def _flat_body(g: _Builder, model: QSDTransformer, pixel_max: int) -> str:
    cfg = model.cfg
    w_int, alpha = model.stem.quant.integer(model.stem.weight)
    acc = g.add(ir.PatchConv("stem", "input", w_int.numpy(), cfg.bits, cfg.timesteps))
    s, t = _bn_affine(model.stem_bn)
    a = alpha.numpy() / pixel_max * s
    b = t if model.pos is None else t[None, :] + model.pos.detach().double().numpy()   # [O] or [N, O]
    res = g.stream("stem", acc, a, b)
    for i, block in enumerate(model.blocks):
        res = g.block(f"block{i}", res, block, cfg.dim)
    return res


def _metaformer_body(g: _Builder, model: QSDTransformer, tokens: str, pixel_max: int) -> str:
    cfg = model.cfg
    res = tokens
    for i, stage in enumerate(model.stages):
        p = f"stage{i}"
        if i == 0:
            src, in_scale = tokens, 1.0 / pixel_max
        else:
            src = g.residual_neuron(f"{p}.down.in", res, stage.down_sn, cfg.dims[i - 1])
            in_scale = 1.0 / cfg.levels
        res = g.stream(f"{p}.down", *g.conv(f"{p}.down", src, stage.down, in_scale))
        for j, block in enumerate(stage.blocks):
            build = g.conv_block if stage.conv else g.block
            res = build(f"{p}.block{j}", res, block, cfg.dims[i])
    return res


def _spikformer_body(g: _Builder, model: QSDTransformer, tokens: str, pixel_max: int) -> str:
    cfg = model.cfg
    sps = model.sps
    src, in_scale = tokens, 1.0 / pixel_max
    last = len(sps.convs) - 1
    for i, conv in enumerate(sps.convs):
        if i < last:
            spikes = g.spiking(f"sps.conv{i}", src, conv, sps.sns[i], in_scale)
            src = g.add(ir.MaxPool(f"sps.pool{i}", spikes, *conv.out_grid, *SPS_POOL))
            in_scale = 1.0 / cfg.levels
        else:
            res = g.stream(f"sps.conv{i}", *g.conv(f"sps.conv{i}", src, conv, in_scale))
    s_in = g.residual_neuron("sps.rpe.in", res, sps.rpe_sn, cfg.width)
    res = g.residual_branch("sps.rpe", res, s_in, sps.rpe)
    for i, block in enumerate(model.blocks):
        res = g.block(f"block{i}", res, block, cfg.width)
    return res


@torch.no_grad()
def to_ir(model: QSDTransformer) -> ir.Graph:
    """Read a QSDTransformer (in eval mode) into an IR graph with float affine neurons and requants."""
    model.eval()
    cfg = model.cfg
    D = cfg.levels
    g = _Builder(model)
    pixel_max = 255 if cfg.input == "image" else 1
    in_type = ir.TensorType(cfg.input_shape(), 0, pixel_max)

    if cfg.arch == "flat":
        res = _flat_body(g, model, pixel_max)
    else:
        tokens = g.add(ir.Tokenize("input.tokens", "input", cfg.timesteps))
        body = _metaformer_body if cfg.arch == "metaformer" else _spikformer_body
        res = body(g, model, tokens, pixel_max)

    count = cfg.tokens * cfg.timesteps
    if model.head_sn is not None:       # the mean of the head neuron's spikes (levels / D)
        pooled = g.add(ir.SumPool("head.pool", g.residual_neuron("head.in", res, model.head_sn, cfg.width)))
        in_scale = 1.0 / (D * count)
    else:                               # the mean of the residual stream (units of 2^-RESIDUAL_FRAC)
        pooled = g.add(ir.SumPool("head.pool", res))
        in_scale = 1.0 / ((1 << RESIDUAL_FRAC) * count)
    acc, a, b = g.dense("head", pooled, model.head, in_scale)
    logits = g.add(ir.AffineRequant("logits", acc, a, b, None, None))
    meta = {"timesteps": cfg.timesteps, "levels": D, "classes": cfg.classes, "config": cfg.to_dict(),
            "residual": {"width": RESIDUAL_WIDTH, "frac": RESIDUAL_FRAC}}
    return ir.Graph("input", in_type, cfg.input, g.ops, logits, meta)
