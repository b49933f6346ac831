"""One EMA update per training batch, also in checkpoints saved during that batch.

The EMA steps after every training batch (``LitEma`` semantics, spec 1.3), in the module's
``on_train_batch_end``. Lightning runs the callbacks' ``on_train_batch_end`` first, and the
periodic ModelCheckpoint saves there, so a checkpoint of step k used to hold the EMA of step k-1:
a run resumed from it skipped one EMA update for good. Here the update is *pending* from the start
of a batch and is applied at the first of (a) a checkpoint saved during the batch (into the
checkpoint too) and (b) ``on_train_batch_end``. The sequence of EMA updates, and so the weights,
are those of the module without checkpoints.
"""

from __future__ import annotations

from typing import Any

from torch import nn


class BatchEMAUpdate:
    """Mixin for a LightningModule with ``self.ema`` (an :class:`~disdiff.diffusion.ema.EMA` or None).

    The module defines :meth:`ema_target` (the network the EMA shadows) and, if it overrides the
    hooks below, calls these versions too.
    """

    _ema_pending: bool = False

    def ema_target(self) -> nn.Module:  # pragma: no cover - defined by the module
        raise NotImplementedError

    def apply_pending_ema_update(self) -> bool:
        """Apply this batch's EMA update if it has not been applied yet; True if it was applied now."""
        if not self._ema_pending or getattr(self, "ema", None) is None:
            return False
        self._ema_pending = False
        self.ema.update(self.ema_target())
        return True

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> Any:
        self._ema_pending = getattr(self, "ema", None) is not None
        return None

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.apply_pending_ema_update()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The state dict in ``checkpoint`` was taken before this hook: put the updated EMA in it.
        if self.apply_pending_ema_update():
            for key, value in self.ema.state_dict(prefix="ema.").items():
                checkpoint["state_dict"][key] = value.detach().clone()
