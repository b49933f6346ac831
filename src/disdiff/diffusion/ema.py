"""Exponential moving average of model parameters (``LitEma`` semantics, spec section 1.3).

The shadow copies are *buffers* of this module, so a LightningModule that owns an :class:`EMA`
saves them in its checkpoints and restores them on resume together with the update counter.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import torch
from torch import nn

__all__ = ["EMA"]


def _shadow_name(param_name: str) -> str:
    # Buffer names cannot contain "."; "__" keeps the mapping readable and (in practice) injective.
    return param_name.replace(".", "__")


class EMA(nn.Module):
    """Shadow of the parameters of ``model`` that require grad **at construction time**.

    At the n-th call of :meth:`update` (n = 1, 2, …) the decay is
    ``d_n = min(decay, (1 + n)/(10 + n))`` if ``use_warmup`` else ``decay``, and every shadow is
    updated as ``s ← s − (1 − d_n)·(s − θ)``.

    Buffers: ``decay`` (float32 scalar), ``num_updates`` (int64 scalar, counts updates; −1 when the
    warm-up is off, as in ``LitEma``) and one buffer per shadowed parameter.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, use_warmup: bool = True) -> None:
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.register_buffer("decay", torch.tensor(float(decay), dtype=torch.float32))
        self.register_buffer("num_updates", torch.tensor(0 if use_warmup else -1, dtype=torch.int64))
        self.param_to_shadow: dict[str, str] = {}
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            s_name = _shadow_name(name)
            if s_name in self.param_to_shadow.values():
                raise ValueError(f"EMA: parameter names collide after renaming ({name!r})")
            self.param_to_shadow[name] = s_name
            self.register_buffer(s_name, p.detach().clone())
        self.collected_params: list[torch.Tensor] | None = None

    # -- core ---------------------------------------------------------------------------------
    def current_decay(self) -> float:
        """The decay the next :meth:`update` will use (after incrementing the counter)."""
        d = float(self.decay)
        n = int(self.num_updates)
        if n >= 0:
            n += 1
            d = min(d, (1.0 + n) / (10.0 + n))
        return d

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards the current parameters of ``model``."""
        d = self.current_decay()
        if int(self.num_updates) >= 0:
            self.num_updates += 1
        one_minus = 1.0 - d
        params = dict(model.named_parameters())
        for name, s_name in self.param_to_shadow.items():
            if name not in params:
                raise KeyError(f"EMA: model has no parameter {name!r}")
            shadow = getattr(self, s_name)
            p = params[name]
            shadow.sub_(one_minus * (shadow - p.detach().to(shadow)))

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the shadowed parameters of ``model`` with their EMA values."""
        params = dict(model.named_parameters())
        for name, s_name in self.param_to_shadow.items():
            if name not in params:
                raise KeyError(f"EMA: model has no parameter {name!r}")
            params[name].data.copy_(getattr(self, s_name))

    def shadow_state_dict(self) -> dict[str, torch.Tensor]:
        """``{parameter name: EMA value}`` for every shadowed parameter."""
        return {name: getattr(self, s_name) for name, s_name in self.param_to_shadow.items()}

    # -- temporary swap -----------------------------------------------------------------------
    def store(self, parameters: Iterable[torch.Tensor]) -> None:
        """Save copies of ``parameters`` (e.g. the live weights) for a later :meth:`restore`."""
        self.collected_params = [p.detach().clone() for p in parameters]

    @torch.no_grad()
    def restore(self, parameters: Iterable[torch.Tensor]) -> None:
        """Copy the tensors saved by :meth:`store` back into ``parameters``."""
        if self.collected_params is None:
            raise RuntimeError("EMA.restore called without a preceding store")
        params = list(parameters)
        if len(params) != len(self.collected_params):
            raise ValueError("EMA.restore: parameter list differs from the stored one")
        for saved, p in zip(self.collected_params, params):
            p.data.copy_(saved)
        self.collected_params = None

    @contextmanager
    def average_parameters(self, model: nn.Module) -> Iterator[nn.Module]:
        """Context manager: ``model`` holds the EMA weights inside, its live weights afterwards."""
        params = list(model.parameters())
        self.store(params)
        self.copy_to(model)
        try:
            yield model
        finally:
            self.restore(params)
