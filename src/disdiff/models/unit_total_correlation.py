"""A total-correlation penalty between units, estimated by a discriminator (opt-in ``unit_tc_weight``,
a deviation from the paper, after FactorVAE: Kim & Mnih 2018, "Disentangling by Factorising").

Why (docs/EXPERIMENTS.md, E43-E44, D10): spare units copy a hue. The kernel dependence penalty of
:mod:`disdiff.models.unit_dependence` sees linear copies in a batch of 32, but not two different
many-to-one functions of a ten-valued hue, so such "twins" survive. A discriminator trained over
the whole run sees the joint distribution of the units far better than one batch does.

Definitions, for codes ``z`` of shape ``(B, N, d)``, every dimension standardised over the batch:

* ``permute_units(z)``: every unit is permuted across the batch by its own random permutation
  (Kim & Mnih, Algorithm 1), which turns samples of the joint ``q(z)`` into samples of the product of
  its marginals ``Π_k q(z^k)``.
* the discriminator ``D`` (an MLP on the flat code) outputs a logit, trained by logistic regression
  to tell ``z`` (label 1) from ``permute_units(z)`` (label 0), both without gradient to the encoder:
  ``L_D = ½ [softplus(−D(z)) + softplus(D(perm z))]`` averaged over the batch.
* at the optimum ``D(z) = log q(z) − log Π_k q(z^k)``, so the total correlation
  ``TC(z) = KL(q(z) ‖ Π_k q(z^k)) ≈ mean_b D(z_b)``; that estimate, computed with ``D``'s weights held
  constant, is the penalty whose gradient reaches the encoder only.

Independent units give ``TC ≈ 0`` (the discriminator cannot do better than chance); copies, monotone
or not, give a large TC once the discriminator has learned them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from disdiff.models.unit_decorrelation import standardised_units
from disdiff.utils.random import draw

__all__ = ["TotalCorrelationDiscriminator", "permute_units", "total_correlation_losses"]


def permute_units(z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(B, N, d)`` codes with every unit's rows shuffled by its own permutation (samples of Π_k q(z^k))."""
    B, N = z.shape[:2]
    order = torch.stack([draw(torch.randperm, B, generator=generator, device=z.device) for _ in range(N)], dim=1)
    index = order.view(B, N, *([1] * (z.dim() - 2))).expand_as(z)
    return torch.gather(z, 0, index)


class TotalCorrelationDiscriminator(nn.Module):
    """MLP ``(B, N·d) → (B,)`` logits: joint code (1) against unit-permuted code (0)."""

    def __init__(self, code_dim: int, hidden: int = 256, layers: int = 3) -> None:
        super().__init__()
        if code_dim < 2 or hidden < 1 or layers < 1:
            raise ValueError(f"discriminator needs code_dim >= 2, hidden >= 1 and layers >= 1, got {code_dim}, {hidden}, {layers}")
        blocks: list[nn.Module] = []
        width = code_dim
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
            width = hidden
        blocks.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*blocks)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return self.net(code.flatten(1)).squeeze(-1)


def total_correlation_losses(
    z: torch.Tensor, discriminator: TotalCorrelationDiscriminator, generator: torch.Generator | None = None,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tc, discriminator_loss)`` for ``(B, N, d)`` codes (module docstring).

    ``tc`` (the penalty) has gradient to ``z`` only, ``discriminator_loss`` to the discriminator only,
    so both can be added to one loss and minimised by one optimizer.
    """
    standardised = standardised_units(z, "total correlation", 2, eps)
    frozen = {name: p.detach() for name, p in discriminator.named_parameters()}
    tc = functional_call(discriminator, frozen, (standardised,)).mean()
    joint = standardised.detach()
    logits_joint = discriminator(joint)
    logits_product = discriminator(permute_units(joint, generator))
    discriminator_loss = 0.5 * (F.softplus(-logits_joint).mean() + F.softplus(logits_product).mean())
    return tc, discriminator_loss
