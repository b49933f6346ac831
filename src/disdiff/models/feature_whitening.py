"""ZCA whitening of an image encoder's features: running (the CNN's trunk, opt-in ``whiten_features``)
or fixed (the DPM head's frozen features, opt-in ``encoder_config.whiten_features`` with ``backbone: dpm``).

Why (docs/EXPERIMENTS.md, D5): the trunk's features already hold the object's shape and
orientation (a linear probe finds them), but in directions of small variance, while the hues
span the large ones. The units are linear read-outs of these features, so a read-out starts on the
hues and needs large weights, learned slowly, to take a geometric direction (an ill-conditioned
linear layer). Whitening the features first gives every direction unit variance.

Running whitening, for features ``h ∈ R^F``: running estimates ``μ`` and ``Σ`` (exponential moving
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

__all__ = ["RunningWhitening", "FixedWhitening", "zca_matrix"]


def zca_matrix(cov: torch.Tensor, eps: float) -> torch.Tensor:
    """``W = U diag((λ + ε·mean λ)^{−1/2}) Uᵀ`` for ``cov = U diag(λ) Uᵀ`` (negative λ from round-off
    clamped to 0), in float64: ``(h − μ)·W`` has covariance ≈ I where ``λ ≫ ε·mean λ``, and directions
    below that floor are damped rather than amplified (noise, or too few samples to estimate them)."""
    eigenvalues, eigenvectors = torch.linalg.eigh(cov.double())
    eigenvalues = eigenvalues.clamp_min(0)
    eigenvalues = eigenvalues + eps * eigenvalues.mean()
    return (eigenvectors * eigenvalues.rsqrt()) @ eigenvectors.T


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
        return zca_matrix(self.running_cov, self.eps)

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


class FixedWhitening(nn.Module):
    """``(B, F) → (B, F)``: ``(h − μ)·W`` with ``μ`` and ``W`` (:func:`zca_matrix`) fitted once by :meth:`fit`.

    For features that do not change during training (the frozen UNet's, read by the DPM head): their
    statistics can be estimated once, before the first step, and the head is then trained on a fixed
    input. Why (docs/EXPERIMENTS.md, D28): in the raw features the hues span ~86 % of the variance and
    scale and shape under 1 %, so a linear read-out learns a geometric direction ~100x slower than a hue
    (gradient descent on it moves each direction at a rate proportional to its variance). ``μ``, ``W``
    and ``fitted`` are buffers, saved in checkpoints; before :meth:`fit` the layer is the identity.
    """

    def __init__(self, num_features: int, eps: float = 0.1) -> None:
        super().__init__()
        if eps <= 0:
            raise ValueError(f"the whitening floor eps must be > 0, got {eps}")
        self.eps = float(eps)
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("matrix", torch.eye(num_features))
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def fit(self, count: float, feature_sum: torch.Tensor, outer_sum: torch.Tensor) -> None:
        """Fit from the moments of ``count`` feature vectors: ``Σ h`` and ``Σ h hᵀ`` (sums, so that
        they can be added over batches and devices before fitting)."""
        if count < 2:
            raise ValueError(f"fitting the whitening needs at least 2 feature vectors, got {count}")
        mean = feature_sum.double() / count
        cov = (outer_sum.double() - count * torch.outer(mean, mean)) / (count - 1)
        self.mean.copy_(mean.to(self.mean.dtype))
        self.matrix.copy_(zca_matrix(cov, self.eps).to(self.matrix.dtype))
        self.fitted.fill_(True)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.dim() != 2 or h.shape[1] != self.mean.numel():
            raise ValueError(f"expected features (B, {self.mean.numel()}), got {tuple(h.shape)}")
        return (h - self.mean.to(h.dtype)) @ self.matrix.to(h.dtype)
