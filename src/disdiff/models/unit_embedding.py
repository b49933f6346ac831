"""The shift decoder's embedding of one unit's code, ``r_k = repre_embed(z^k)``.

Published (spec 4.4): ``Linear(d, E)``, no activation. With ``d = 1`` (the small config) that puts
every code value on one line of the embedding space, ``r = w·z + b``, and the decoder's FiLM layers
must build any non-monotone or finely resolved response to the value themselves. A learned hue unit
places six of its ten levels within 0.8 standard deviations (docs/EXPERIMENTS.md, D10), a categorical
factor such as shape has no natural order, and a copy of a unit at a larger scale spreads those close
values apart, one way L_r can pay for copies.

Opt-in (``unit_fourier_features = F > 0``, a deviation from the paper): the code is first lifted to
fixed Fourier features and then mapped linearly,

    φ(z) = [z, sin(ω_j z), cos(ω_j z)]_{j = 0..F−1},   ω_j = (π/2)·2^j   (periods 4, 2, 1, 0.5, …),
    r = Linear(d·(1 + 2F), E)(φ(z)),

applied to each of the ``d`` dimensions, so nearby values of a unit can get distant embeddings from
the first step (as positional encodings do for coordinates). ``F = 0`` is the published layer, with
its state-dict keys.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["FourierUnitEmbedding", "unit_embedding"]


class FourierUnitEmbedding(nn.Module):
    """``(..., d) -> (..., E)``: ``Linear(φ(z))`` with φ of the module docstring (``F`` frequencies)."""

    def __init__(self, unit_dim: int, out_dim: int, num_frequencies: int) -> None:
        super().__init__()
        if num_frequencies < 1:
            raise ValueError(f"num_frequencies must be >= 1, got {num_frequencies}")
        frequencies = (math.pi / 2) * 2.0 ** torch.arange(num_frequencies, dtype=torch.float32)
        self.register_buffer("frequencies", frequencies, persistent=False)  # fixed: not trained, not saved
        self.linear = nn.Linear(unit_dim * (1 + 2 * num_frequencies), out_dim)

    def features(self, z: torch.Tensor) -> torch.Tensor:
        """φ(z): ``(..., d) -> (..., d·(1 + 2F))``."""
        angles = (z[..., None] * self.frequencies.to(z.dtype)).flatten(-2)  # (..., d·F)
        return torch.cat([z, angles.sin(), angles.cos()], dim=-1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(z))


def unit_embedding(unit_dim: int, out_dim: int, fourier_features: int = 0) -> nn.Module:
    """The published ``Linear(d, E)`` for ``fourier_features = 0``, else :class:`FourierUnitEmbedding`."""
    if fourier_features < 0:
        raise ValueError(f"unit_fourier_features must be >= 0, got {fourier_features}")
    if fourier_features == 0:
        return nn.Linear(unit_dim, out_dim)
    return FourierUnitEmbedding(unit_dim, out_dim, fourier_features)
