"""Re-initialise units that copy earlier units (opt-in ``unit_reset``, a deviation from the paper).

Why (docs/EXPERIMENTS.md, E21-E27 and E37-E39): with one dimension per unit, spare units copy a hue
early in training, when every unit sees the same large hue residual. Once made, a copy is stuck:
L_r gives it no gradient (the information is already in the code), and the disentangling loss
pushes the copies symmetrically (each is told to react to the hue when it is the sampled unit and
not to when a twin is), so its pushes cancel. A unit whose code is re-drawn *after* the first
units hold the hues meets a residual made of what no unit holds yet, for example the object's
geometry.

Procedure, every ``every`` optimizer steps up to step ``until``: over the codes of the last few
training batches, measure each unit's :func:`unit_redundancy` given the units before it; every unit
above ``threshold`` gets its rows of the encoder's output layer re-drawn from that layer's default
initialisation (``U(±1/√fan_in)``) and their AdamW first moments zeroed (the second moments are
kept, so the first updates have the usual size). Units are ordered, as nested dropout orders them:
of two copies the later one is reset. The draw depends only on the step and the unit, and rank 0's
decision is broadcast, so every process of a multi-device run resets the same rows to the same values.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

__all__ = ["unit_redundancy", "reinitialise_unit_rows", "UnitReset"]

log = logging.getLogger(__name__)


def unit_redundancy(codes: torch.Tensor, degree: int = 3, eps: float = 1e-8) -> torch.Tensor:
    """``(N,)``: for unit j, the R² of its dimensions regressed on a polynomial of units ``0..j−1``.

    ``codes`` is ``(M, N, d)``. Features: an intercept and, for every dimension of every earlier
    unit (standardised over the M rows), its powers 1..``degree``, so that a monotone or
    U-shaped copy counts as a copy. ``R² = 1 − Σ residual² / Σ (centred target)²``, summed over the
    unit's d dimensions; unit 0 and constant units score 0. With F features and M rows an unrelated
    unit still scores about F/M by chance, so keep M well above ``degree · d · N``.
    """
    if codes.dim() != 3:
        raise ValueError(f"codes must have shape (M, N, d), got {tuple(codes.shape)}")
    M, N, d = codes.shape
    x = codes.detach().double()
    x = (x - x.mean(0)) / (x.std(0, unbiased=False) + eps)
    out = torch.zeros(N, dtype=codes.dtype)
    for j in range(1, N):
        target = x[:, j]
        total = target.square().sum()
        if total <= eps:
            continue
        earlier = x[:, :j].reshape(M, j * d)
        earlier = earlier[:, earlier.square().sum(0) > eps]  # constant units add nothing (and upset lstsq)
        features = torch.cat([torch.ones(M, 1, dtype=x.dtype)] + [earlier**p for p in range(1, degree + 1)], dim=1)
        solution = torch.linalg.lstsq(features, target).solution
        residual = target - features @ solution
        out[j] = float(1.0 - residual.square().sum() / total)
    return out


@torch.no_grad()
def reinitialise_unit_rows(layer: nn.Linear, unit: int, unit_dim: int, generator: torch.Generator,
                           optimizer: torch.optim.Optimizer | None = None) -> None:
    """Re-draw output rows ``[unit·d, (unit+1)·d)`` of ``layer`` as ``nn.Linear`` initialises them
    (``U(±1/√fan_in)`` for weights and bias) and zero their AdamW first moments in ``optimizer``."""
    rows = slice(unit * unit_dim, (unit + 1) * unit_dim)
    bound = 1.0 / layer.in_features**0.5
    for param in (layer.weight, layer.bias):
        if param is None:
            continue
        fresh = (torch.rand(param[rows].shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound
        param[rows] = fresh.to(param)
        state = optimizer.state.get(param) if optimizer is not None else None
        if state and "exp_avg" in state:
            state["exp_avg"][rows] = 0


class UnitReset(pl.Callback):
    """Lightning callback of the ``unit_reset: [every, threshold, until]`` switch (module docstring).

    Reads the detached codes the module leaves in ``last_codes`` (``(B, N, d)``) after each
    training step and keeps the last ``buffer_batches`` batches of them.
    """

    def __init__(self, every: int, threshold: float, until: int, buffer_batches: int = 8) -> None:
        self.every, self.threshold, self.until = int(every), float(threshold), int(until)
        self.codes: deque[torch.Tensor] = deque(maxlen=buffer_batches)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        codes = getattr(pl_module, "last_codes", None)
        if codes is None:
            return
        self.codes.append(codes.float().cpu())
        step = trainer.global_step
        if step == 0 or step % self.every or step > self.until:
            return
        redundancy = unit_redundancy(torch.cat(list(self.codes)))
        units = [j for j in range(redundancy.numel()) if redundancy[j] > self.threshold]
        units = trainer.strategy.broadcast(units, src=0)
        encoder = pl_module.encoder
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        for unit in units:
            generator = torch.Generator().manual_seed(1_000_003 * step + unit)
            reinitialise_unit_rows(encoder.fc, unit, encoder.unit_dim, generator, optimizer)
        if units:
            self.codes.clear()  # the buffered codes describe the old units
        log.info("unit_reset at step %d: redundancy %s, reset units %s", step,
                 [round(float(r), 3) for r in redundancy], units)
        pl_module.log("train/unit_resets", float(len(units)), on_step=True, on_epoch=False, batch_size=1)
