"""Compile quantized spike-driven Transformers (QSD-Transformer style) from PyTorch to FPGA hardware.

Data flows one way: ``model.pt -> IR (ir.py) -> golden model (golden.py) | lowering -> hardware``.
"""

from importlib import metadata as _metadata

try:
    __version__: str = _metadata.version("qsd-fpga")
except _metadata.PackageNotFoundError:          # a source tree that was never installed
    __version__ = "0+unknown"
