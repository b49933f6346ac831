"""Training timesteps: the published uniform draw, and an opt-in focus on low noise levels.

Published (DDPM, and DisDiff's stage 3): ``t ~ U{0, …, T−1}`` for every sample.

Focus (``focus = (t_max, fraction)``, a deviation used by stage 3's ``timestep_focus``): each
sample independently takes ``t ~ U{0, …, t_max−1}`` with probability ``fraction`` and the uniform
draw otherwise, so the marginal is the mixture

    p(t) = fraction · 1[t < t_max] / t_max + (1 − fraction) / T.

Why (docs/EXPERIMENTS.md, D3): with a perfect code the object's geometry saves the most L_r
relative to the hues at small t (orientation saves 0.9x what the wall hue saves at t < 100, 0.2x at
t = 400-500), so more small-t samples raise the geometry's share of the training signal.
"""

from __future__ import annotations

import torch

from disdiff.utils.random import draw


def _randint(high: int, n: int, generator: torch.Generator | None, device) -> torch.Tensor:
    return draw(torch.randint, 0, high, (n,), generator=generator, device=device)


def sample_timesteps(
    n: int,
    num_timesteps: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    focus: tuple[int, float] | None = None,
) -> torch.Tensor:
    """``n`` int64 timesteps (module docstring); without ``focus`` exactly one ``torch.randint``
    call, as published (the same draws from the same generator)."""
    if focus is None:
        return _randint(num_timesteps, n, generator, device)
    t_max, fraction = focus
    if not 1 <= t_max <= num_timesteps or not 0.0 <= fraction <= 1.0:
        raise ValueError(f"focus must be (t_max in [1, {num_timesteps}], fraction in [0, 1]), got {focus}")
    uniform = _randint(num_timesteps, n, generator, device)
    low = _randint(t_max, n, generator, device)
    u = draw(torch.rand, n, generator=generator, device=device)
    return torch.where(u < fraction, low, uniform)
