"""A penalty on statistical dependence between units (opt-in ``unit_dependence_weight``, a deviation from the paper).

Why (docs/EXPERIMENTS.md, E34-E35 and session 7): spare units copy a hue. A penalty on *linear*
correlation (``unit_decorrelation_weight``) does not remove the copies: the units then hold
different non-monotone functions of the same hue, or rotated mixtures of two hues, which are
uncorrelated but dependent. The factors of a ground-truth grid are independent, so a disentangled
code has independent units; a kernel dependence measure sees any function of another unit's
factor, so a copy pays whatever form it takes.

Definition, for codes ``z`` of shape ``(B, N, d)``: standardise every dimension over the batch;
for each unit k form the Gaussian Gram matrix ``K_k[i, j] = exp(−‖ẑ_ik − ẑ_jk‖² / m_k)`` with
``m_k`` the median of the off-diagonal squared distances (the median heuristic; held constant in
the gradient), centre it, ``K̃ = H K H`` with ``H = I − 11ᵀ/B``, and score a pair of units by
kernel CKA, the normalised HSIC (Gretton et al. 2005; Kornblith et al. 2019):

    CKA(k, l) = ⟨K̃_k, K̃_l⟩_F / (‖K̃_k‖_F ‖K̃_l‖_F).

The penalty is the mean of CKA over the ``N(N−1)/2`` pairs of different units. It is 1 for units
that are the same up to scale and shift, near 1 for any strictly monotone copy, clearly above the
independent level for non-monotone copies (``u`` and ``u²``), and for B independent draws of
independent units about ``1 / B``-ish (its bias at finite B).
"""

from __future__ import annotations

import torch

from disdiff.models.unit_decorrelation import standardised_units

__all__ = ["cross_unit_dependence", "unit_pair_cka"]


def _centred_gram(unit_codes: torch.Tensor) -> torch.Tensor:
    """Centred Gaussian Gram matrix ``H K H`` of ``(B, d)`` standardised codes, median-heuristic bandwidth."""
    sq_dist = torch.cdist(unit_codes, unit_codes).square()
    B = sq_dist.shape[0]
    off_diagonal = sq_dist[~torch.eye(B, dtype=torch.bool, device=sq_dist.device)]
    bandwidth = off_diagonal.detach().median().clamp_min(1e-6)  # a constant: the gradient moves codes, not the scale
    gram = torch.exp(-sq_dist / bandwidth)
    return gram - gram.mean(dim=0, keepdim=True) - gram.mean(dim=1, keepdim=True) + gram.mean()


def unit_pair_cka(z: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The ``(N, N)`` matrix of kernel CKA between units (module docstring); its diagonal is 1."""
    standardised = standardised_units(z, "cross-unit dependence", 3, eps)
    grams = torch.stack([_centred_gram(standardised[:, k]) for k in range(z.shape[1])]).flatten(1)  # (N, B·B)
    hsic = grams @ grams.T
    norms = torch.sqrt(hsic.diagonal().clamp_min(eps * eps))
    return hsic / (norms[:, None] * norms[None, :])


def cross_unit_dependence(z: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean kernel CKA over pairs of different units (module docstring): a scalar in [0, 1]."""
    cka = unit_pair_cka(z, eps)
    N = cka.shape[0]
    upper = torch.triu(torch.ones(N, N, dtype=torch.bool, device=cka.device), diagonal=1)
    return cka[upper].mean()
