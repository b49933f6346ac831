"""The last training stage's time limit, set from the machine's measured speed.

The quickstart must finish its final steps (export, evaluation, figures, the metric curve) inside
its budget. A fixed reserve for them has to fit the slowest machine, so a fast one finishes minutes
early (3m24s of the 5 minutes used on a 2-core AMD EPYC, 2026-12-06) and those minutes are lost to
training. The final steps are compute-bound on the same cores as training, so their duration
follows the training step time: :class:`SpeedReserveTimer` measures the step time and lets
training run until the predicted final steps just fit, never less than the fixed reserve allows.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from datetime import timedelta
from typing import Any, Callable

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Timer

from disdiff.pipeline.settings import STAGES, QuickstartSettings


def predicted_tail_seconds(seconds_per_step: float, tail_steps: float) -> float:
    """Seconds of the final steps on a machine that trains one step in ``seconds_per_step``.

    ``tail_steps`` is what the final steps cost in units of one training step, measured on a
    reference run (see :attr:`disdiff.pipeline.settings.QuickstartSettings.tail_step_equivalents`).
    """
    return float(seconds_per_step) * float(tail_steps)


class SpeedReserveTimer(Timer):
    """Lightning's :class:`Timer` whose duration grows with the measured speed of the machine.

    Training lasts at least ``min_seconds`` (what the fixed reserve leaves: the budget on any
    machine). Every ``every`` steps, once ``warmup_steps`` steps have run in this invocation, the
    step time (the median of the last ``windows`` windows' mean step times) predicts the final
    steps' seconds (:func:`predicted_tail_seconds`), and the duration becomes

        elapsed training time + seconds_left() - max(predicted final steps, min_reserve_seconds),

    but never less than ``min_seconds``. ``seconds_left`` is the pipeline's time left for this
    stage and everything after it. The median keeps a window that held a periodic training grid
    (~11 s every 1,000 steps) from stopping the stage at once: the first version took one window's
    mean and stopped a quickstart at the step-8,000 grid (2026-12-06). Before the first measurement
    the duration is ``min_seconds``, so a short or slow run trains exactly as with the fixed
    reserve. Under DDP, Lightning's Timer broadcasts rank 0's decision to stop, so every rank stops
    at the same step.
    """

    def __init__(self, min_seconds: float, seconds_left: Callable[[], float], tail_steps: float,
                 min_reserve_seconds: float = 0.0, warmup_steps: int = 200, every: int = 50, windows: int = 9,
                 now: Callable[[], float] = time.monotonic) -> None:
        super().__init__(duration=timedelta(seconds=float(min_seconds)), interval="step")
        self.min_seconds = float(min_seconds)
        self.seconds_left = seconds_left
        self.tail_steps = float(tail_steps)
        self.min_reserve_seconds = float(min_reserve_seconds)
        self.warmup_steps = max(int(warmup_steps), 1)
        self.every = max(int(every), 1)
        self.now = now  # the step-time window's clock (a test gives a fake one)
        self._steps_here = 0
        self._window_start: tuple[int, float] | None = None
        self._window_step_times: deque[float] = deque(maxlen=max(int(windows), 1))
        #: The last measured step time (seconds); None before the first window.
        self.seconds_per_step: float | None = None

    @property
    def state_key(self) -> str:
        # The same key as Lightning's own Timer, so a stage started under ``max_time`` resumes
        # with its training time counted (and the other way round).
        return "Timer"

    @property
    def duration_seconds(self) -> float:
        return float(self._duration)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        self._steps_here += 1
        now = self.now()
        if self._steps_here == self.warmup_steps:
            self._window_start = (self._steps_here, now)
        elif self._window_start is not None and self._steps_here - self._window_start[0] >= self.every:
            steps, started = self._window_start
            self._window_step_times.append((now - started) / (self._steps_here - steps))
            self.seconds_per_step = statistics.median(self._window_step_times)
            self._window_start = (self._steps_here, now)
            reserve = max(predicted_tail_seconds(self.seconds_per_step, self.tail_steps), self.min_reserve_seconds)
            self._duration = max(self.min_seconds, self.time_elapsed() + self.seconds_left() - reserve)
        super().on_train_batch_end(trainer, *args, **kwargs)


def speed_reserve_timer(settings: QuickstartSettings, stage: str, min_seconds: float,
                        seconds_left: Callable[[], float]) -> SpeedReserveTimer | None:
    """The quickstart's timer for ``stage``: stage 3 (the last) trains on into the final steps'
    reserve on a fast machine; None for the other stages, whose reserve is the later stages'
    shares, and when ``settings.speed_reserve`` is off (then Lightning's ``max_time`` applies).
    """
    if stage != STAGES[-1] or not settings.speed_reserve:
        return None
    return SpeedReserveTimer(min_seconds, seconds_left, settings.tail_step_equivalents,
                             min_reserve_seconds=60.0 * settings.overhead_minutes_min)
