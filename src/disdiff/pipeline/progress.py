"""The quickstart's progress: the overall clock, one console line per stage, and the Lightning
callback that keeps a training stage's line current.

A training stage's line reads, e.g.::

    [4/9] stage 3 DisDiff: step 412, 6m51s left in stage | loss_dis 0.00131 loss_rec 0.102 | 19m02s left overall

Other steps show what they are doing (``[6/9] evaluate: step 1400 (published settings) | ...``).
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ProgressBar, Timer

from disdiff.pipeline.console import Console


def format_minutes(seconds: float) -> str:
    seconds = max(0.0, seconds)
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


class PipelineClock:
    """The pipeline's budget: which step runs and when the whole run is due to end."""

    def __init__(self, total_seconds: float, steps: list[str]) -> None:
        self.deadline = time.monotonic() + total_seconds
        self.steps = list(steps)

    def seconds_left(self) -> float:
        return self.deadline - time.monotonic()

    def position(self, step: str) -> str:
        index = self.steps.index(step) + 1 if step in self.steps else 0
        return f"{index}/{len(self.steps)}"


class StageLine:
    """The console line of one pipeline step: ``[i/n] title: detail | time left overall``."""

    def __init__(self, console: Console, clock: PipelineClock, step: str, title: str) -> None:
        self.console = console
        self.clock = clock
        self.step = step
        self.title = title

    def text(self, detail: str) -> str:
        return (f"[{self.clock.position(self.step)}] {self.title}: {detail} | "
                f"{format_minutes(self.clock.seconds_left())} left overall")

    def update(self, detail: str) -> None:
        """Show ``detail`` (throttled off a terminal)."""
        self.console.show(self.text(detail))

    def done(self, detail: str) -> None:
        """The step's last line."""
        self.console.show(self.text(detail), final=True)


def _loss_text(metrics: dict[str, Any]) -> str:
    """``loss_dis 0.00131 loss_rec 0.102``: the losses the module shows in its progress bar, 3 significant digits."""
    parts = []
    for key in sorted(metrics):
        if "loss" not in key or key.endswith("_epoch"):  # the epoch means repeat the step values' story
            continue
        value = metrics[key]
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            name = key.removeprefix("train/").removesuffix("_step")
            parts.append(f"{name} {number:.3g}")
    return " ".join(parts)


class StageProgress(ProgressBar):
    """Lightning progress "bar" of a quickstart training stage: its :class:`StageLine` instead of tqdm.

    Steps done are the optimizer steps (``global_step``); the time left is the stage's training
    time left by Lightning's Timer (its ``max_time``); the losses are those logged with
    ``prog_bar=True``.
    """

    def __init__(self, line: StageLine) -> None:
        super().__init__()
        self.line = line
        self._enabled = True

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def detail(self, trainer: pl.Trainer, final: bool = False) -> str:
        timer = next((cb for cb in trainer.callbacks if isinstance(cb, Timer)), None)
        if final:
            head = f"done, {trainer.global_step} steps"
            if timer is not None:
                head += f" in {format_minutes(timer.time_elapsed())} of training"
        else:
            head = f"step {trainer.global_step}"
            left = timer.time_remaining() if timer is not None else None
            if left is not None:
                head += f", {format_minutes(left)} left in stage"
        losses = _loss_text(trainer.progress_bar_metrics)
        return f"{head} | {losses}" if losses else head

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._enabled:
            self.line.update(self.detail(trainer))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._enabled:
            self.line.update(self.detail(trainer))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._enabled:
            self.line.done(self.detail(trainer, final=True))
