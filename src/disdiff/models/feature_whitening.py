"""Running ZCA whitening of the image encoder's trunk features (opt-in ``whiten_features``).

Why (docs/EXPERIMENTS.md, D5): the trunk's features already hold the object's shape and
orientation (a linear probe finds them), but in directions of small variance, while the hues
span the large ones. The units are linear read-outs of these features, so a read-out starts on the
hues and needs large weights, learned slowly, to take a geometric direction (an ill-conditioned
linear layer). Whitening the features first gives every direction unit variance.

Definition, for features ``h ∈ R^F``: running estimates ``μ`` and ``Σ`` (exponential moving
averages over training batches with weight ``momentum``, no gradient), and the output
``ĥ = (h − μ) · W`` with ``W = U diag((λ + ε·mean λ)^{−1/2}) Uᵀ`` from ``Σ = U diag(λ) Uᵀ``. The
statistics are buffers (saved in checkpoints); in eval mode they are fixed, as BatchNorm's are.
Before the first batch ``μ = 0`` and ``Σ = I``, so the layer starts as the identity. The
whitening matrix is a preconditioner: gradients pass through ``h`` and the read-out, not through
``μ`` or ``W``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["RunningWhitening"]


class RunningWhitening(nn.Module):
    """``(B, F) → (B, F)``: features whitened with running statistics (module docstring)."""

    def __init__(self, num_features: int, momentum: float = 0.02, eps: float = 1e-3) -> None:
        super().__init__()
        if not 0.0 < momentum <= 1.0 or eps <= 0:
            raise ValueError(f"momentum must be in (0, 1] and eps > 0, got {momentum}, {eps}")
        self.momentum, self.eps = float(momentum), float(eps)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_cov", torch.eye(num_features))

    def whitening_matrix(self) -> torch.Tensor:
        cov = self.running_cov.double()
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)
        eigenvalues = eigenvalues.clamp_min(0) + self.eps * eigenvalues.clamp_min(0).mean()
        return (eigenvectors * eigenvalues.rsqrt()) @ eigenvectors.T

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.dim() != 2 or h.shape[1] != self.running_mean.numel():
            raise ValueError(f"expected features (B, {self.running_mean.numel()}), got {tuple(h.shape)}")
        if self.training and h.shape[0] > 1:
            with torch.no_grad():
                x = h.detach().to(self.running_cov.dtype)
                mean = x.mean(0)
                centred = x - mean
                cov = centred.T @ centred / (x.shape[0] - 1)
                self.running_mean.lerp_(mean, self.momentum)
                self.running_cov.lerp_(cov, self.momentum)
        matrix = self.whitening_matrix().to(h.dtype)
        return (h - self.running_mean.to(h.dtype)) @ matrix
