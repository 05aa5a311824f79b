"""The PyTorch side: the model family with its quantization-aware training, datasets, checkpoints, and the
reading of a trained model into the IR (:func:`compiler.frontend.to_ir.to_ir`).

This is the only part of the project that imports torch.
"""
