"""Model statistics in NeuroBench's terms, measured on the integer golden model's traces.

- dense synaptic operations: every synapse of every layer, once per time step, whether its input spiked or not
  (for a k x k conv: every (input, output) pair its kernel connects, zero padding excluded);
- effective synaptic operations: only those whose input is non-zero (a spike of any level counts once);
  multiply-accumulates (MACs) where the input is a multi-bit number (uint8 pixels, the pooled head input),
  accumulates (ACs) where it is a spike;
- activation sparsity: the fraction of neuron outputs that are zero;
- energy: the spiking-Transformer papers' 45 nm convention, E_MAC = 4.6 pJ and E_AC = 0.9 pJ. An estimate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from . import golden
from . import ops as ir

E_MAC_PJ = 4.6
E_AC_PJ = 0.9


@dataclass
class LayerStats:
    name: str
    op: str
    output_shape: list[int]
    output_range: list[int]
    output_bits: int
    weight_shape: list[int] | None = None
    weight_bits: int | None = None
    weight_bytes: int = 0
    kind: str = ""                 # "MAC", "AC" or "" (no synapses)
    dense_ops: float = 0.0         # per inference
    effective_ops: float = 0.0     # per inference (mean over the samples)


def _nnz(x: np.ndarray, axes) -> np.ndarray:
    return (x != 0).sum(axis=axes)


def conv_reach(size: int, kernel: int, stride: int, padding: int) -> np.ndarray:
    """For each input position along one axis, how many output positions its kernel window covers."""
    out = ir.conv_out(size, kernel, stride, padding)
    pos = np.arange(size)[:, None] + padding - np.arange(out)[None, :] * stride     # tap index dy
    return ((pos >= 0) & (pos < kernel)).sum(axis=1)


def layer_stats(graph: ir.Graph, x: np.ndarray) -> tuple[list[LayerStats], float]:
    """Per-op statistics over the batch ``x`` (means per inference), and the activation sparsity."""
    types = ir.check(graph, integer=True)
    _, env = golden.run(graph, x, trace=True)
    rows: list[LayerStats] = []
    spikes_total = spikes_zero = 0
    for op in graph.ops:
        t = types[op.dst]
        row = LayerStats(op.name, type(op).__name__, list(t.shape), [int(t.lo), int(t.hi)], t.bits)
        if isinstance(op, (ir.PatchConv, ir.Dense)):
            row.weight_shape = list(op.weight.shape)
            row.weight_bits = op.bits
            row.weight_bytes = (op.weight.size * op.bits + 7) // 8
            src = env[op.src]
            fanout = op.weight.shape[0]
            fanin = int(np.prod(op.weight.shape[1:]))
            if isinstance(op, ir.PatchConv):
                steps = src.shape[1] if src.ndim == 5 else 1      # an image is convolved once
                tokens = t.shape[1]
                row.dense_ops = steps * tokens * fanin * fanout
                # every non-zero input pixel/event feeds fanout accumulators (patches do not overlap)
                row.effective_ops = float(_nnz(src, tuple(range(1, src.ndim))).mean()) * fanout
                row.kind = "MAC" if graph.input_kind == "image" else "AC"
            else:
                row.dense_ops = float(np.prod(types[op.src].shape)) * fanout
                row.effective_ops = float(_nnz(src, tuple(range(1, src.ndim))).mean()) * fanout
                row.kind = "AC" if types[op.src].hi <= graph.meta["levels"] else "MAC"
        elif isinstance(op, ir.Conv):
            row.weight_shape = list(op.weight.shape)
            row.weight_bits = op.bits
            row.weight_bytes = (op.weight.size * op.bits + 7) // 8
            src = env[op.src]                                                 # [B, T, H*W, C]
            producer = next((p for p in graph.ops if p.dst == op.src), None)
            once = isinstance(producer, ir.Tokenize) and graph.input_kind == "image"
            if once:                                   # an image's tokens are the same at every step
                src = src[:, :1]
            reach = np.outer(conv_reach(op.height, op.kernel, op.stride, op.padding),
                             conv_reach(op.width, op.kernel, op.stride, op.padding)).reshape(-1)
            per_group = op.weight.shape[0] // op.groups
            # an input at (y, x, c) reaches every output position its window covers, O / G channels each
            row.dense_ops = float(src.shape[1] * reach.sum() * src.shape[3] * per_group)
            row.effective_ops = float(((src != 0) * reach[None, None, :, None]).sum(axis=(1, 2, 3)).mean()
                                      * per_group)
            x = types[op.src]
            row.kind = "AC" if 0 <= x.lo and x.hi <= graph.meta["levels"] and not once else "MAC"
        elif isinstance(op, ir.LinearAttention):
            q, k, v = (env[s] for s in op.srcs)
            b, steps, n, c = q.shape
            d = c // op.heads
            kh, vh = ((z != 0).reshape(b, steps, n, op.heads, d).sum(-1) for z in (k, v))
            row.dense_ops = 2 * steps * n * c * d
            row.effective_ops = float((kh * vh).sum(axis=(1, 2, 3)).mean() + _nnz(q, (1, 2, 3)).mean() * d)
            row.kind = "AC"
        elif isinstance(op, ir.CoSpike):
            k, v = (env[s] for s in op.srcs)
            row.dense_ops = float(np.prod(types[op.k].shape))
            row.effective_ops = float(((k != 0) & (v != 0)).sum(axis=(1, 2, 3)).mean())
            row.kind = "AC"
        elif isinstance(op, ir.Neuron):
            out = env[op.dst]
            spikes_total += out.size
            spikes_zero += int((out == 0).sum())
        rows.append(row)
    return rows, (spikes_zero / spikes_total if spikes_total else 0.0)


def summarize(graph: ir.Graph, x: np.ndarray, parameters: int) -> dict:
    """The ``inspect`` report: layers, sizes, synaptic operations, sparsity and an energy estimate."""
    rows, sparsity = layer_stats(graph, x)
    macs = sum(r.effective_ops for r in rows if r.kind == "MAC")
    acs = sum(r.effective_ops for r in rows if r.kind == "AC")
    return {
        "input": {"kind": graph.input_kind, "shape": list(graph.input_type.shape)},
        "parameters": parameters,
        "weight_memory_bytes": int(sum(r.weight_bytes for r in rows)),
        "layers": [asdict(r) for r in rows],
        "samples": int(len(x)),
        "synaptic_ops": {
            "dense": float(sum(r.dense_ops for r in rows)),
            "effective": float(macs + acs),
            "effective_macs": float(macs),
            "effective_acs": float(acs),
        },
        "activation_sparsity": float(sparsity),
        "energy_estimate_uj": {"value": (macs * E_MAC_PJ + acs * E_AC_PJ) * 1e-6,
                               "note": f"estimate: E_MAC={E_MAC_PJ} pJ, E_AC={E_AC_PJ} pJ (45 nm convention)"},
    }
