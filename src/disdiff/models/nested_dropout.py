"""Nested dropout over the units (opt-in ``nested_unit_dropout``, a deviation from the paper).

In the published L_r every unit's field is always added, ``Σ_k G_k``, and the units are
interchangeable: they start alike, follow the same residual and all learn the factor that lowers
L_r most (docs/EXPERIMENTS.md, E1, E5, E19: five of six one-dimensional units take the floor hue).
Nested dropout (Rippel et al., 2014, "Learning ordered representations with nested dropout")
breaks that symmetry: a sample keeps only the first ``K`` units, so unit 0 must do the most on its
own, unit 1 the most given unit 0, and so on; a unit copying an earlier unit's factor gains nothing
in any truncation, since whenever it is kept the unit it copies is kept too.
"""

from __future__ import annotations

import torch

__all__ = ["nested_unit_mask", "reconstruction_unit_mask"]


def nested_unit_mask(
    batch_size: int,
    num_units: int,
    probability: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Float ``(B, N)`` mask: row b keeps units ``0 … K_b − 1``.

    With probability ``probability`` a sample is truncated at ``K_b ~ U{1, …, N}``; otherwise
    (and always when ``probability`` is 0) all ``N`` units are kept. Unit k is therefore kept with
    probability ``1 − probability · k / N``.
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"nested dropout probability must be in [0, 1], got {probability}")
    gen_device = generator.device if generator is not None else device
    u = torch.rand(batch_size, generator=generator, device=gen_device)
    cut = torch.randint(1, num_units + 1, (batch_size,), generator=generator, device=gen_device)
    keep = torch.where(u < probability, cut, torch.full_like(cut, num_units))
    units = torch.arange(num_units, device=gen_device)
    return (units[None, :] < keep[:, None]).to(device=device, dtype=torch.float32)


def reconstruction_unit_mask(
    batch_size: int,
    num_units: int,
    active_units: int,
    nested_probability: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor | None:
    """Which units' fields enter L_r: float ``(B, N)``, or ``None`` for all of them (the paper).

    Units ``active_units …  N − 1`` are off (opt-in ``progressive_units``); among the active ones
    a sample is truncated by :func:`nested_unit_mask` with ``nested_probability``.
    """
    if not 1 <= active_units <= num_units:
        raise ValueError(f"active_units must be in [1, {num_units}], got {active_units}")
    if nested_probability == 0 and active_units == num_units:
        return None
    mask = torch.zeros(batch_size, num_units, device=device)
    mask[:, :active_units] = (nested_unit_mask(batch_size, active_units, nested_probability, generator, device)
                              if nested_probability > 0 else 1.0)
    return mask
