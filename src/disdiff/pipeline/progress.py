"""One overall progress display for multi-stage pipelines: stage, step and time left."""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch.callbacks import TQDMProgressBar


def format_minutes(seconds: float) -> str:
    seconds = max(0.0, seconds)
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


class PipelineClock:
    """The pipeline's budget: which stage runs and when the whole run is due to end."""

    def __init__(self, total_seconds: float, stages: list[str]) -> None:
        self.deadline = time.monotonic() + total_seconds
        self.stages = stages
        self.current = ""

    def enter(self, stage: str) -> str:
        self.current = stage
        line = f"[{self.position()}] {stage}: about {format_minutes(self.seconds_left())} of the budget left"
        print(line, flush=True)
        return line

    def position(self) -> str:
        index = self.stages.index(self.current) + 1 if self.current in self.stages else 0
        return f"{index}/{len(self.stages)}"

    def seconds_left(self) -> float:
        return self.deadline - time.monotonic()


class PipelineProgressBar(TQDMProgressBar):
    """Lightning's progress bar, with the pipeline stage and the overall time left in its postfix."""

    def __init__(self, clock: PipelineClock, refresh_rate: int = 1) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.clock = clock

    def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        metrics["stage"] = f"{self.clock.position()} {self.clock.current}"
        metrics["left"] = format_minutes(self.clock.seconds_left())
        return metrics
