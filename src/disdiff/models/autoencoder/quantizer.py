"""Vector quantiser with a straight-through estimator (spec section 2.2)."""

from __future__ import annotations

import torch
from torch import nn


class VectorQuantizer(nn.Module):
    """Snap each spatial vector of a (B, e_dim, H, W) tensor to its nearest codebook entry.

    * Codebook ``embedding.weight`` of shape (n_e, e_dim), initialised Uniform(-1/n_e, 1/n_e)
      (the published setting); ``init_range=r`` initialises Uniform(-r, r) instead.
    * Assignment by squared L2 distance (ties go to the lowest index).
    * Straight-through estimator ``z_q = z + sg[z_q - z]``.
    * Codebook loss, ``legacy=True`` (the published configs):
      ``mean((sg[z_q] - z)^2) + beta * mean((z_q - sg[z])^2)``;
      ``legacy=False`` puts beta on the commitment term instead.
    """

    def __init__(self, n_e: int, e_dim: int, beta: float = 0.25, legacy: bool = True, init_range: float | None = None):
        super().__init__()
        self.n_e = int(n_e)
        self.e_dim = int(e_dim)
        self.beta = float(beta)
        self.legacy = bool(legacy)
        self.embedding = nn.Embedding(self.n_e, self.e_dim)
        r = 1.0 / self.n_e if init_range is None else float(init_range)
        nn.init.uniform_(self.embedding.weight, -r, r)

    def nearest_indices(self, z: torch.Tensor) -> torch.Tensor:
        """Indices (B, H, W) of the nearest codebook entries of z (B, e_dim, H, W)."""
        if z.shape[1] != self.e_dim:
            raise ValueError(f"quantiser expects {self.e_dim} channels, got tensor of shape {tuple(z.shape)}")
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.e_dim)
        codebook = self.embedding.weight
        dist = (
            flat.pow(2).sum(dim=1, keepdim=True)
            + codebook.pow(2).sum(dim=1)[None, :]
            - 2.0 * flat @ codebook.t()
        )
        b, _, h, w = z.shape
        return dist.argmin(dim=1).reshape(b, h, w)

    def get_codebook_entry(self, indices: torch.Tensor) -> torch.Tensor:
        """Codebook vectors for indices (B, H, W), as a (B, e_dim, H, W) tensor."""
        return self.embedding(indices).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(z_q (straight-through), codebook_loss (scalar), indices (B, H, W))``."""
        indices = self.nearest_indices(z.detach())
        z_q = self.get_codebook_entry(indices)
        codebook_term = torch.mean((z_q - z.detach()) ** 2)
        commit_term = torch.mean((z_q.detach() - z) ** 2)
        if self.legacy:
            loss = commit_term + self.beta * codebook_term
        else:
            loss = self.beta * commit_term + codebook_term
        z_q = z + (z_q - z).detach()
        return z_q, loss, indices
