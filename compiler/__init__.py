"""Compile quantized spike-driven Transformers (QSD-Transformer style) from PyTorch to FPGA hardware.

Data flows one way: ``model.pt -> IR (ir.py) -> golden model (golden.py) | lowering -> hardware``.

The Python API (``docs/api.md``, :mod:`compiler.api`) is here too: ``compiler.load``, ``compiler.lower``,
``compiler.predict``, ``compiler.estimate``... are loaded on first use, so that ``import compiler.ir`` imports
neither the flows nor PyTorch.
"""

from importlib import metadata as _metadata

try:
    __version__: str = _metadata.version("qsd-fpga")
except _metadata.PackageNotFoundError:          # a source tree that was never installed
    __version__ = "0+unknown"

#: The names of :mod:`compiler.api`, re-exported here on first use.
_API = ("Model", "Lowered", "Report", "UserError", "load", "samples", "lower", "predict", "estimate", "simulate",
        "build", "export", "plot", "load_report")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from . import api                           # deferred: the API imports the flows (and so the hardware)
        return getattr(api, name)
    raise AttributeError(f"module 'compiler' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
