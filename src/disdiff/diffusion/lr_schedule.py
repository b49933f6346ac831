"""Learning-rate multiplier: linear warm-up, then constant (spec section 1.5).

Equivalent to the original ``LambdaLinearScheduler`` with one cycle of (practically) infinite
length, ``f_min = f_max``.
"""

from __future__ import annotations

from typing import Callable

__all__ = ["linear_warmup", "stepped_up"]


def linear_warmup(warmup_steps: int, f_start: float = 1e-6, f_max: float = 1.0) -> Callable[[int], float]:
    """Return ``f(n)`` for ``torch.optim.lr_scheduler.LambdaLR`` (stepped once per optimiser step).

    ``f(n) = f_start + (f_max − f_start)·n/warmup_steps`` for ``n < warmup_steps``, else ``f_max``.
    With ``warmup_steps = 0`` the multiplier is ``f_max`` from the first step.
    """
    warmup_steps = int(warmup_steps)
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    f_start = float(f_start)
    f_max = float(f_max)

    def multiplier(n: int) -> float:
        if n < warmup_steps:
            return f_start + (f_max - f_start) * n / warmup_steps
        return f_max

    return multiplier


def stepped_up(multiplier: Callable[[int], float], from_step: int, factor: float) -> Callable[[int], float]:
    """Return ``g(n) = multiplier(n)·factor`` for ``n >= from_step``, else ``multiplier(n)``.

    One parameter group's lr raised (or lowered) by a constant factor from an optimiser step on,
    on top of the shared warm-up.
    """
    from_step = int(from_step)
    factor = float(factor)

    def stepped(n: int) -> float:
        return multiplier(n) * (factor if n >= from_step else 1.0)

    return stepped
