"""A standard-normal prior on the DisDiff code (opt-in ``code_kl_weight``, a deviation from the paper).

The published encoder is deterministic; nothing in L_r penalises two units that hold the same
factor, so the reconstruction loss alone makes redundant units (docs/EXPERIMENTS.md, E1, E8). A
diagonal Gaussian code with a KL term to ``N(0, I)`` makes every dimension pay for what it carries,
as in a beta-VAE: a unit that copies a factor another unit already supplies saves almost no L_r
but still pays its KL, and a non-isotropic posterior breaks the rotational symmetry between units.
"""

from __future__ import annotations

import torch

from disdiff.utils.random import draw

__all__ = ["gaussian_kl", "reparameterize"]


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-sample ``KL(N(mean, diag exp(logvar)) || N(0, I))`` in nats.

    ``KL = ½ Σ_j (μ_j² + σ_j² − log σ_j² − 1)``, summed over every dimension but the first (batch)
    one; returns shape ``(B,)``. Zero exactly when ``mean = 0`` and ``logvar = 0``.
    """
    if mean.shape != logvar.shape:
        raise ValueError(f"mean and logvar must have the same shape, got {tuple(mean.shape)} and {tuple(logvar.shape)}")
    per_dim = 0.5 * (mean.square() + logvar.exp() - logvar - 1.0)
    return per_dim.flatten(1).sum(1)


def reparameterize(mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A draw ``μ + σ·ε``, ``ε ~ N(0, I)`` (from ``generator`` when given), differentiable in μ and log σ²."""
    eps = draw(torch.randn, mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + torch.exp(0.5 * logvar) * eps
