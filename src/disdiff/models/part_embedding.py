"""Orthogonal part ("factor") embeddings of the DisDiff units (spec section 4.4).

A trainable square matrix ``W`` (``dim × dim``, ``dim = time_embed_dim / 2``, initialised
N(0, 1)) defines ``Q = exp(W − Wᵀ)``. ``W − Wᵀ`` is skew-symmetric, so ``Q`` is orthogonal and its
first ``N`` rows ``p_0 … p_{N−1}`` are orthonormal codes, one per unit. The matrix exponential is
``torch.linalg.matrix_exp``.

The released checkpoints were trained with a Padé implementation that actually returned
``exp(−(W − Wᵀ)) = exp(W − Wᵀ)ᵀ``; ``released_convention=True`` reproduces that (``exp(Wᵀ − W)``)
so that released weights give the same codes. For training from scratch both are equivalent.

The non-orthogonal variant (``orthogonal=False``) is a plain learned ``nn.Embedding(N, dim)``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["PartEmbedding"]


class PartEmbedding(nn.Module):
    """``forward() -> (N, dim)``: the part code of every unit (row k is unit k)."""

    def __init__(self, num_units: int, dim: int, orthogonal: bool = True, released_convention: bool = False) -> None:
        super().__init__()
        if orthogonal and num_units > dim:
            raise ValueError(f"orthogonal part embedding needs num_units <= dim, got {num_units} > {dim}")
        self.num_units = int(num_units)
        self.dim = int(dim)
        self.orthogonal = bool(orthogonal)
        self.released_convention = bool(released_convention)
        if self.orthogonal:
            # W ~ N(0, 1), as the published nn.Embedding(dim, dim) initialisation.
            self.weight = nn.Parameter(torch.randn(self.dim, self.dim))
        else:
            self.weight = nn.Parameter(torch.randn(self.num_units, self.dim))

    def skew(self) -> torch.Tensor:
        """``A = W − Wᵀ`` (or ``Wᵀ − W`` with the released convention)."""
        a = self.weight - self.weight.t()
        return -a if self.released_convention else a

    def rotation(self) -> torch.Tensor:
        """The orthogonal matrix ``Q = exp(A)``."""
        if not self.orthogonal:
            raise RuntimeError("the non-orthogonal part embedding has no rotation matrix")
        return torch.linalg.matrix_exp(self.skew())

    def forward(self) -> torch.Tensor:
        if not self.orthogonal:
            return self.weight
        return self.rotation()[: self.num_units]

    def extra_repr(self) -> str:
        return (
            f"num_units={self.num_units}, dim={self.dim}, orthogonal={self.orthogonal}, "
            f"released_convention={self.released_convention}"
        )
