"""Random draws that are reproducible on any device.

A ``torch.Generator`` lives on one device and can only fill tensors there. Every seeded draw of
the project therefore samples on the generator's device and moves the result to where it is
used; without a generator it samples from the global RNG directly on the target device. Keeping
this in one place keeps the draws (and the published stage-3 arithmetic) identical everywhere.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["draw"]


def draw(sampler: Callable[..., torch.Tensor], *args, generator: torch.Generator | None = None,
         device: torch.device | str | None = None, **kwargs) -> torch.Tensor:
    """``sampler(*args, **kwargs)`` (``torch.randn``, ``torch.rand``, ``torch.randint``) on ``device``.

    With ``generator`` the draw is made on ``generator.device`` from it, then moved to ``device``.
    """
    if generator is None:
        return sampler(*args, device=device, **kwargs)
    return sampler(*args, generator=generator, device=generator.device, **kwargs).to(device)
