"""A penalty on correlation between units (opt-in ``unit_decorrelation_weight``, a deviation from the paper).

Why (docs/EXPERIMENTS.md, E5-E28 and the variance-explained table after E31): with the published
loss several units copy the same hue, because a copy still lowers L_r (the decoder renders the
hue with two sub-fields instead of one), and the disentangling loss removes copies only in some
seeds. The factors of a ground-truth grid are independent, so a disentangled code has
uncorrelated units; a copy is a pair of strongly correlated units. Penalising the units' batch
correlation makes copies cost, and leaves a spare unit nothing to gain from but a factor no other
unit holds, for example the object's geometry.

Definition, for codes ``z`` of shape ``(B, N, d)``: standardise every one of the ``N·d``
dimensions over the batch (``ẑ = (z − mean_b z) / sqrt(var_b z + ε)``), form the correlation
matrix ``C = ẑᵀẑ / B`` and average ``C_ij²`` over the pairs ``(i, j)`` of dimensions that belong
to *different* units. Within-unit correlations are free. 0 for uncorrelated units, 1 when every
dimension is a copy (up to sign) of every other unit's; for B independent draws of independent
units its expectation is about ``1 / B``.
"""

from __future__ import annotations

import torch

__all__ = ["cross_unit_correlation", "standardised_units"]


def standardised_units(z: torch.Tensor, what: str, min_samples: int, eps: float = 1e-6) -> torch.Tensor:
    """Codes ``(B, N, d)`` with every dimension standardised over the batch, after checking the shape.

    ``what`` names the penalty in the error; it needs ``min_samples`` samples and two units.
    """
    if z.dim() != 3:
        raise ValueError(f"codes must have shape (B, N, d), got {tuple(z.shape)}")
    B, N, _ = z.shape
    if B < min_samples or N < 2:
        raise ValueError(f"{what} needs at least {min_samples} samples and 2 units, got B={B}, N={N}")
    centred = z - z.mean(dim=0, keepdim=True)
    return centred / torch.sqrt(centred.square().mean(dim=0, keepdim=True) + eps)


def cross_unit_correlation(z: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean squared batch correlation between dimensions of different units (module docstring): a scalar."""
    standardised = standardised_units(z, "cross-unit correlation", 2, eps)
    B, N, d = standardised.shape
    flat = standardised.reshape(B, N * d)
    corr = flat.T @ flat / B
    unit = torch.arange(N * d, device=z.device) // d
    across = unit[:, None] != unit[None, :]
    return corr[across].square().mean()
