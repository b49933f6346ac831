"""``disdiff train``'s progress bar: Lightning's bar, whose total and ETA end where the run will end.

Lightning sizes the bar by the epoch (14,992 batches of shapes3d-synth at batch 32), so a run that
``--max-minutes`` stops after 10 minutes used to show an ETA of hours. Here the bar's total is the
number of batches this epoch will really run: the epoch's batches, capped by what ``max_steps``
leaves and by what the time budget leaves at the measured speed. tqdm's ETA then reads the time
to the end of the run.
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Timer, TQDMProgressBar


def remaining_batches(trainer: pl.Trainer, batches_done: int, seconds_per_batch: float | None,
                      steps_per_batch: float) -> float:
    """Batches left in this epoch once ``batches_done`` of it are done: the least of the epoch's
    rest, what ``max_steps`` allows and what the time budget allows at ``seconds_per_batch``."""
    left = [float(trainer.num_training_batches) - batches_done]
    if trainer.max_steps is not None and trainer.max_steps > 0:
        left.append((trainer.max_steps - trainer.global_step) / max(steps_per_batch, 1e-9))
    timer = next((cb for cb in trainer.callbacks if isinstance(cb, Timer)), None)
    seconds_left = timer.time_remaining() if timer is not None else None
    if seconds_left is not None and seconds_per_batch:
        left.append(max(seconds_left, 0.0) / seconds_per_batch)
    return max(0.0, min(left))


class BudgetProgressBar(TQDMProgressBar):
    """TQDMProgressBar with the total of :func:`remaining_batches` (recomputed as the speed is measured)."""

    def __init__(self, refresh_rate: int = 1) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self._start: tuple[float, int, int] | None = None  # (time, batches, global step) at the first update

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._start = None
        if trainer.fit_loop.epoch_loop.batch_progress.current.ready > 0:
            # Resumed mid-epoch: Lightning does not call on_train_epoch_start again, so without this
            # the bar would count from 0 and show the restored batches as done in the first second.
            self._begin_epoch(trainer)

    def _rates(self, trainer: pl.Trainer) -> tuple[float | None, float]:
        """(seconds per batch, optimizer steps per batch) measured since this fit's first batch."""
        now = time.monotonic()
        batches = trainer.fit_loop.epoch_loop.batch_progress.total.processed  # over all epochs
        if self._start is None:
            self._start = (now, batches, trainer.global_step)
        start_time, start_batches, start_step = self._start
        counted = batches - start_batches
        if counted <= 0:
            # Before any measurement: one step per batch per optimizer stepped by hand (two for the
            # autoencoder's generator and discriminator), one per accumulation otherwise.
            manual = not trainer.lightning_module.automatic_optimization
            return None, float(len(trainer.optimizers)) if manual else 1.0 / trainer.accumulate_grad_batches
        return (now - start_time) / counted, max(trainer.global_step - start_step, 0) / counted

    def _total(self, trainer: pl.Trainer, batches_done: int) -> int | None:
        seconds_per_batch, steps_per_batch = self._rates(trainer)
        left = remaining_batches(trainer, batches_done, seconds_per_batch, steps_per_batch)
        return None if math.isinf(left) else batches_done + math.ceil(left)

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        # Lightning's version shows the epoch's size first; here the bar starts with the right total.
        if getattr(self, "_leave", False):
            self.train_progress_bar = self.init_train_tqdm()
        self._begin_epoch(trainer)

    def _begin_epoch(self, trainer: pl.Trainer) -> None:
        """Restart the bar for the current epoch, counting from the batches already done in it."""
        bar = self.train_progress_bar
        done = trainer.fit_loop.epoch_loop.batch_progress.current.ready  # > 0 when resumed mid-epoch
        bar.reset(total=self._total(trainer, done))
        bar.initial = done
        bar.set_description(f"Epoch {trainer.current_epoch}")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        bar = self.train_progress_bar
        if bar is not None and not bar.disable:
            bar.total = self._total(trainer, batch_idx + 1)
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
