"""The integer golden model: executes an integer IR graph with int64 numpy arithmetic only.

Every tensor carries a leading batch axis here (``[B, T, N, C]``). ``run`` returns the logits and, on
request, every op's output (and every neuron's membrane) so that hardware can be compared layer by layer.
"""

from __future__ import annotations

import numpy as np

from . import ops as ir


def _sat(x: np.ndarray, width: int) -> np.ndarray:
    return np.clip(x, -(1 << (width - 1)), (1 << (width - 1)) - 1)


def patch_conv(x: np.ndarray, op: ir.PatchConv) -> np.ndarray:
    """x: [B, C, H, W] (image) or [B, T, C, H, W] (events) -> ACC [B, T, N, O]."""
    frames = x[:, None] if x.ndim == 4 else x
    b, t, c, h, w = frames.shape
    p = op.weight.shape[-1]
    patches = frames.reshape(b, t, c, h // p, p, w // p, p).transpose(0, 1, 3, 5, 2, 4, 6)
    patches = patches.reshape(b, t, (h // p) * (w // p), c * p * p).astype(np.int64)
    acc = patches @ op.weight.reshape(op.weight.shape[0], -1).T
    return np.broadcast_to(acc, (b, op.timesteps, *acc.shape[2:])).copy() if t == 1 else acc


def tokenize(x: np.ndarray, op: ir.Tokenize) -> np.ndarray:
    """x: [B, C, H, W] (image, repeated over the steps) or [B, T, C, H, W] (events) -> [B, T, H*W, C]."""
    frames = x[:, None] if x.ndim == 4 else x
    b, t, c, h, w = frames.shape
    tokens = frames.reshape(b, t, c, h * w).transpose(0, 1, 3, 2).astype(np.int64)
    return np.broadcast_to(tokens, (b, op.timesteps, h * w, c)).copy() if t == 1 else tokens


def _padded_grid(x: np.ndarray, height: int, width: int, padding: int) -> np.ndarray:
    """[B, T, H*W, C] -> [B, T, H + 2p, W + 2p, C], token n = y * W + x at row y + p, column x + p, zeros around."""
    b, t, _, c = x.shape
    grid = np.zeros((b, t, height + 2 * padding, width + 2 * padding, c), dtype=np.int64)
    grid[:, :, padding:padding + height, padding:padding + width] = x.reshape(b, t, height, width, c)
    return grid


def _window(grid: np.ndarray, dy: int, dx: int, stride: int, ho: int, wo: int) -> np.ndarray:
    """The inputs that kernel tap (dy, dx) meets at every output position: [B, T, Ho, Wo, C]."""
    return grid[:, :, dy:dy + stride * (ho - 1) + 1:stride, dx:dx + stride * (wo - 1) + 1:stride]


def conv(x: np.ndarray, op: ir.Conv) -> np.ndarray:
    """x: [B, T, H*W, C] -> ACC [B, T, Ho*Wo, O]: a sum over the kernel taps of integer matrix products."""
    b, t, _, c = x.shape
    o, cg, k, _ = op.weight.shape
    g = op.groups
    ho, wo = op.out_height, op.out_width
    grid = _padded_grid(x.astype(np.int64), op.height, op.width, op.padding)
    weight = op.weight.astype(np.int64).reshape(g, o // g, cg, k, k)
    acc = np.zeros((b, t, ho, wo, g, o // g), dtype=np.int64)
    for dy in range(k):
        for dx in range(k):
            win = _window(grid, dy, dx, op.stride, ho, wo).reshape(b, t, ho, wo, g, cg)
            tap = weight[:, :, :, dy, dx]                                   # [G, O/G, C/G]
            if g == 1:
                acc[..., 0, :] += win[..., 0, :] @ tap[0].T
            elif cg == 1 and o == g:                                        # depthwise, one output per channel
                acc[..., 0] += win[..., 0] * tap[:, 0, 0]
            else:
                acc += np.einsum("bthwgc,goc->bthwgo", win, tap)
    return acc.reshape(b, t, ho * wo, o)


def max_pool(x: np.ndarray, op: ir.MaxPool) -> np.ndarray:
    """x: [B, T, H*W, C] (non-negative) -> [B, T, Ho*Wo, C]; the zero padding never exceeds a real input."""
    b, t, _, c = x.shape
    ho, wo = op.out_height, op.out_width
    grid = _padded_grid(x.astype(np.int64), op.height, op.width, op.padding)
    out = np.zeros((b, t, ho, wo, c), dtype=np.int64)
    for dy in range(op.kernel):
        for dx in range(op.kernel):
            np.maximum(out, _window(grid, dy, dx, op.stride, ho, wo), out=out)
    return out.reshape(b, t, ho * wo, c)


def dense(x: np.ndarray, op: ir.Dense) -> np.ndarray:
    return x.astype(np.int64) @ op.weight.T


def requant(x: np.ndarray, op: ir.Requant) -> np.ndarray:
    half = (1 << op.shift) >> 1
    y = (x * op.mult + op.bias + half) >> op.shift
    return y if op.saturate is None else _sat(y, op.saturate)


def neuron(x: np.ndarray, op: ir.Neuron) -> tuple[np.ndarray, np.ndarray]:
    """x: [B, T, N, O] -> (levels [B, T, N, O], membrane H before reset [B, T, N, O])."""
    inp = op.sign * (x << op.frac) + op.bias
    v = np.zeros_like(inp[:, 0])
    levels = np.empty_like(inp)
    membrane = np.empty_like(inp)
    for t in range(inp.shape[1]):
        h = v - (v >> op.leak_shift) + inp[:, t]
        lvl = np.zeros_like(h)
        for k in range(op.theta.shape[1]):             # the count of thresholds reached
            lvl += h >= op.theta[:, k]
        levels[:, t] = lvl
        membrane[:, t] = h
        v = np.where(lvl == 0, h, 0)
    return levels, membrane


def linear_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, heads: int) -> np.ndarray:
    b, t, n, c = q.shape
    d = c // heads
    qh, kh, vh = (z.reshape(b, t, n, heads, d).transpose(0, 1, 3, 2, 4) for z in (q, k, v))
    kv = kh.transpose(0, 1, 2, 4, 3) @ vh                # [B, T, H, d, d]
    return (qh @ kv).transpose(0, 1, 3, 2, 4).reshape(b, t, n, c)


def run(graph: ir.Graph, x: np.ndarray, trace: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Execute ``graph`` on a batch ``x`` (uint8); return (logits [B, K] int64, tensors by name)."""
    env: dict[str, np.ndarray] = {graph.input_name: np.asarray(x).astype(np.int64)}
    extra: dict[str, np.ndarray] = {}
    for op in graph.ops:
        ins = [env[s] for s in op.srcs]
        if isinstance(op, ir.PatchConv):
            out = patch_conv(ins[0], op)
        elif isinstance(op, ir.Tokenize):
            out = tokenize(ins[0], op)
        elif isinstance(op, ir.Conv):
            out = conv(ins[0], op)
        elif isinstance(op, ir.MaxPool):
            out = max_pool(ins[0], op)
        elif isinstance(op, ir.Dense):
            out = dense(ins[0], op)
        elif isinstance(op, ir.Requant):
            out = requant(ins[0], op)
        elif isinstance(op, ir.Add):
            out = _sat(ins[0] + ins[1], op.width)
        elif isinstance(op, ir.Neuron):
            out, membrane = neuron(ins[0], op)
            if trace:
                extra[f"{op.name}.membrane"] = membrane
        elif isinstance(op, ir.CoSpike):
            out = (ins[0] * ins[1]).sum(axis=2, keepdims=True)
        elif isinstance(op, ir.Mask):
            out = ins[0] * ins[1]
        elif isinstance(op, ir.LinearAttention):
            out = linear_attention(*ins, op.heads)
        elif isinstance(op, ir.SumPool):
            out = ins[0].sum(axis=(1, 2))
        else:
            raise ir.IRError(f"{op.name}: the golden model cannot execute {type(op).__name__}")
        env[op.dst] = out
    logits = env[graph.output]
    return logits, ({**env, **extra} if trace else {})


def predict(graph: ir.Graph, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Integer logits for a batch, computed in chunks."""
    return np.concatenate([run(graph, x[i:i + batch_size])[0] for i in range(0, len(x), batch_size)])
