"""Compile quantized spike-driven Transformers (QSD-Transformer style) from PyTorch to FPGA hardware.

Data flows one way: ``model.pt -> IR (ir.py) -> golden model (golden.py) | lowering -> hardware``.
"""
