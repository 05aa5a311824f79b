"""The integer IR (numpy only): typed operations on named tensors, the checker, the golden model and metrics.

- :mod:`compiler.ir.ops`: the operations, their type rules and :func:`check` (re-exported here, so that
  ``ir.Dense``, ``ir.check`` read as the IR's own names);
- :mod:`compiler.ir.golden`: executes an integer graph bit for bit as ``docs/semantics.md`` defines it;
- :mod:`compiler.ir.metrics`: synaptic operations, sparsity and the energy estimate of a graph on inputs.

The frontend produces this IR, the passes rewrite it, the hardware layer maps it; it imports none of them.
"""

from .ops import (INT_LIMIT, MAX_MULT_BITS, MULT_BITS, Add, AffineNeuron, AffineRequant, Conv, CoSpike, Dense, Graph,
                  IRError, LinearAttention, Mask, MaxPool, Neuron, Op, PatchConv, Requant, SumPool, TensorType,
                  Tokenize, check, conv_out, infer_types, membrane_range, neuron_input_range, neuron_thresholds)

__all__ = ["INT_LIMIT", "MAX_MULT_BITS", "MULT_BITS", "Add", "AffineNeuron", "AffineRequant", "Conv", "CoSpike",
           "Dense", "Graph", "IRError", "LinearAttention", "Mask", "MaxPool", "Neuron", "Op", "PatchConv", "Requant",
           "SumPool", "TensorType", "Tokenize", "check", "conv_out", "infer_types", "membrane_range",
           "neuron_input_range", "neuron_thresholds"]
