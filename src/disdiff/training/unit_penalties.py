"""The opt-in penalties on the units' codes and fields (deviations from the paper), assembled in one place.

Each is off at weight 0 (the published behaviour) and needs a batch large enough to score:

* ``unit_decorrelation_weight`` × mean squared cross-unit correlation (``unit_correlation``), B ≥ 2;
* ``unit_dependence_weight`` × mean pairwise kernel CKA (``unit_dependence``), B ≥ 3;
* ``field_alignment_weight`` × mean squared cosine between two units' shift fields on the same sample
  (``field_alignment``), any B;
* ``unit_tc_weight`` × the discriminator's total-correlation estimate (``unit_tc``), plus the
  discriminator's own loss (``tc_discriminator_loss``, at weight 1: it trains the discriminator
  only), B ≥ 2.

The logged names are ``train/<key>``.
"""

from __future__ import annotations

import torch

from disdiff.models.field_alignment import cross_unit_field_alignment
from disdiff.models.unit_decorrelation import cross_unit_correlation
from disdiff.models.unit_dependence import cross_unit_dependence
from disdiff.models.unit_total_correlation import TotalCorrelationDiscriminator, total_correlation_losses
from disdiff.training.deviations import Deviations

__all__ = ["unit_penalty_terms", "LOGGED_TERMS"]

#: Keys of :func:`unit_penalty_terms`'s terms, in logging order.
LOGGED_TERMS = ("unit_correlation", "unit_dependence", "field_alignment", "unit_tc", "tc_discriminator_loss")


def unit_penalty_terms(
    z: torch.Tensor, deviations: Deviations, discriminator: TotalCorrelationDiscriminator | None,
    generator: torch.Generator | None = None, fields: torch.Tensor | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """``(terms, added loss)`` for codes ``z`` ``(B, N, d)`` and the units' shift fields ``(B, N, …)``
    (needed only by the field alignment): the terms that apply, and the weighted sum to add to the loss
    (``None`` when no term applies)."""
    B = z.shape[0]
    terms: dict[str, torch.Tensor] = {}
    added: list[torch.Tensor] = []
    if deviations.unit_decorrelation_weight > 0 and B > 1:
        terms["unit_correlation"] = cross_unit_correlation(z)
        added.append(deviations.unit_decorrelation_weight * terms["unit_correlation"])
    if deviations.unit_dependence_weight > 0 and B > 2:
        terms["unit_dependence"] = cross_unit_dependence(z)
        added.append(deviations.unit_dependence_weight * terms["unit_dependence"])
    if deviations.field_alignment_weight > 0:
        if fields is None:
            raise ValueError("field_alignment_weight > 0 needs the units' shift fields")
        terms["field_alignment"] = cross_unit_field_alignment(fields)
        added.append(deviations.field_alignment_weight * terms["field_alignment"])
    if discriminator is not None and B > 1:
        tc, discriminator_loss = total_correlation_losses(z, discriminator, generator)
        terms["unit_tc"], terms["tc_discriminator_loss"] = tc, discriminator_loss
        # The two parts reach disjoint parameters (encoder; discriminator), so one sum trains both.
        added.append(deviations.unit_tc_weight * tc + discriminator_loss)
    return terms, (sum(added) if added else None)
