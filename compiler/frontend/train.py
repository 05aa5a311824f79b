"""Quantization-aware training of a QSDTransformer, and BN calibration for untrained (``--epochs 0``) models."""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..errors import UserError
from .config import ModelConfig
from .data import Split
from ..ir import conv_out
from .model import SEP_EXPANSION, SPS_POOL, QSDTransformer


def _activations_per_step(cfg: ModelConfig) -> float:
    """About how many values one sample's forward pass makes per time step: ``(8 + 2 * mlp_ratio) * dim`` per
    token and block (plus one block's worth for the stem and head), a conv block's SepConv adding ``4 * dim``
    more; the spikformer stem's convs a few per token and channel of their grids."""
    per_block = 8 + 2 * cfg.mlp_ratio
    if cfg.arch == "flat":
        return cfg.tokens * cfg.dim * per_block * (cfg.depth + 1)
    if cfg.arch == "metaformer":
        return sum(h * w * dim * (per_block + (4 * SEP_EXPANSION if i < cfg.conv_stages else 0)) * (depth + 1)
                   for i, ((h, w), dim, depth) in enumerate(zip(cfg.grids(), cfg.dims, cfg.depths)))
    side, stem = cfg.image_size, 0.0
    for dim in cfg.dims:
        stem += 4 * side * side * dim
        side = conv_out(side, *SPS_POOL)
    return stem + cfg.tokens * cfg.width * per_block * (cfg.depths[0] + 2)


def training_bytes(cfg: ModelConfig, batch_size: int) -> int:
    """About how much memory training ``cfg`` takes: 16 bytes per parameter (weights, gradients, two AdamW
    moments; counted on the meta device, nothing allocated) and, per sample of a batch, the float32
    activations autograd keeps (:func:`_activations_per_step` per time step, three times over for the
    quantizers' and neurons' intermediates)."""
    with torch.device("meta"):
        params = sum(p.numel() for p in QSDTransformer(cfg).parameters())
    per_sample = 3 * 4 * cfg.timesteps * _activations_per_step(cfg)
    return int(16 * params + batch_size * per_sample)


def check_memory(cfg: ModelConfig, batch_size: int) -> None:
    """UserError, with the figures, if training ``cfg`` would need more memory than the machine has."""
    need = training_bytes(cfg, batch_size)
    have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if need > have:
        raise UserError(f"training this configuration needs about {need / 2**30:,.1f} GiB at batch size "
                        f"{batch_size}, this machine has {have / 2**30:,.1f} GiB; choose a smaller model "
                        f"(dim, depth, tokens, time steps) or --batch-size")


@torch.no_grad()
def calibrate(model: QSDTransformer, data: Split, batches: int = 4, batch_size: int = 64) -> None:
    """Set every BatchNorm's running statistics to the exact average over a few batches."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    for i in range(min(batches, (len(data.x) + batch_size - 1) // batch_size)):
        model(torch.from_numpy(data.x[i * batch_size:(i + 1) * batch_size]))
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.1
    model.eval()


def train(cfg: ModelConfig, data: Split, epochs: int, seed: int = 0, batch_size: int = 64,
          lr: float = 5e-3, progress: bool | None = True, dataset: str | None = None,
          held_out: Split | None = None, history: list | None = None) -> QSDTransformer:
    """Train from scratch with AdamW and a cosine schedule; ``epochs == 0`` only calibrates BN.

    ``progress``: True a bar on stderr when it is a terminal (nothing otherwise), ``"always"`` (any other truthy
    value but True) also one line per epoch when stderr is a file or a pipe, False nothing. ``history``: a list that
    gets one dict per epoch (:func:`epoch_record`'s keys): ``epoch``, ``loss`` (the mean over the epoch's
    samples), ``train_accuracy`` (of the epoch's batches, in training mode), ``held_out_accuracy`` (of the
    float model on ``held_out`` at the epoch's end, BN running statistics; None without ``held_out``), ``lr``
    (the learning rate of the epoch's last step) and ``seconds``."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = QSDTransformer(cfg, dataset)
    if epochs == 0:
        calibrate(model, data)
        return model
    x_all = torch.from_numpy(data.x)
    y_all = torch.from_numpy(data.y)
    steps = epochs * ((len(x_all) + batch_size - 1) // batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    loss_fn = nn.CrossEntropyLoss()
    # progress True: a bar on a terminal, nothing when stderr is a file or a pipe; "always": the bar on a
    # terminal, and one line per epoch when stderr is a file or a pipe (a log reads lines, not a redrawn bar)
    tty = sys.stderr.isatty()
    lines = bool(progress) and progress is not True and not tty
    bar = tqdm(total=epochs, desc="train", unit="epoch", disable=not (progress and tty), leave=False,
               file=sys.stderr)
    for epoch in range(epochs):
        t0 = time.monotonic()
        model.train()
        order = torch.randperm(len(x_all), generator=gen)
        correct = seen = 0
        loss_sum = 0.0
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            logits = model(x_all[idx])
            loss = loss_fn(logits, y_all[idx])
            opt.zero_grad()
            loss.backward()
            step_lr = opt.param_groups[0]["lr"]
            opt.step()
            sched.step()
            correct += int((logits.argmax(1) == y_all[idx]).sum())
            seen += len(idx)
            loss_sum += float(loss.item()) * len(idx)
        record = epoch_record(epoch + 1, loss_sum / seen, correct / seen, step_lr, 0.0)
        if held_out is not None:
            record["held_out_accuracy"] = float((predict(model, held_out.x).argmax(1) == held_out.y).mean())
        record["seconds"] = time.monotonic() - t0
        if history is not None:
            history.append(record)
        bar.update(1)
        shown = {"loss": f"{record['loss']:.3f}", "train_acc": f"{record['train_accuracy']:.3f}"}
        if record["held_out_accuracy"] is not None:
            shown["held_out_acc"] = f"{record['held_out_accuracy']:.3f}"
        bar.set_postfix(shown)
        if lines:
            sys.stderr.write(f"train: epoch {epoch + 1}/{epochs} " + " ".join(f"{k} {v}" for k, v in shown.items())
                             + f" lr {record['lr']:.2e} ({record['seconds']:.1f} s)\n")
            sys.stderr.flush()
    bar.close()
    calibrate(model, data, batches=8)
    return model


def epoch_record(epoch: int, loss: float, train_accuracy: float | None, lr: float, seconds: float,
                 held_out_accuracy: float | None = None) -> dict:
    """One epoch of a training history: plain numbers (a checkpoint loads with ``weights_only=True``)."""
    return {"epoch": int(epoch), "loss": float(loss),
            "train_accuracy": None if train_accuracy is None else float(train_accuracy),
            "held_out_accuracy": None if held_out_accuracy is None else float(held_out_accuracy),
            "lr": float(lr), "seconds": float(seconds)}


@torch.no_grad()
def predict(model: QSDTransformer, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Float model logits for a uint8 batch."""
    model.eval()
    out = [model(torch.from_numpy(x[i:i + batch_size])) for i in range(0, len(x), batch_size)]
    return torch.cat(out).double().numpy()
