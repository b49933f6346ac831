"""Where a quickstart run keeps its files (one output folder, ``--out``)::

    <out>/quickstart.json                 settings, dataset and stage plan of the run
    <out>/quickstart.log                  everything but the stage lines (Lightning, warnings, steps' output)
    <out>/stage{1,2,3}_<stage>/           one training run directory per trained stage (DONE.json when finished)
    <out>/stage3_disdiff/representations/ exported codes of the evaluated checkpoints
    <out>/stage3_disdiff/metrics/         one metrics JSON per evaluated checkpoint
    <out>/stage3_disdiff/units/           which units the decoder uses (``disdiff units``), final checkpoint
    <out>/feature-cache/                  stage 3's frozen features from the background process (deleted once read)
    <out>/figures/                        dataset preview, swap and traversal grids, loss and metric plots
    <out>/report.md, report.html
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from disdiff.pipeline.settings import STAGES


@dataclass(frozen=True)
class QuickstartLayout:
    out: Path

    def stage_dir(self, stage: str) -> Path:
        return self.out / f"stage{STAGES.index(stage) + 1}_{stage}"

    def done_marker(self, stage: str) -> Path:
        return self.stage_dir(stage) / "DONE.json"

    def read_done(self, stage: str) -> dict[str, Any]:
        """The stage's DONE record (steps, budget, training time), empty if it has not finished."""
        try:
            return json.loads(self.done_marker(stage).read_text())
        except (OSError, ValueError):
            return {}

    @property
    def settings_file(self) -> Path:
        return self.out / "quickstart.json"

    @property
    def log_file(self) -> Path:
        return self.out / "quickstart.log"

    @property
    def figures(self) -> Path:
        return self.out / "figures"

    @property
    def representations(self) -> Path:
        return self.stage_dir("disdiff") / "representations"

    @property
    def metrics(self) -> Path:
        return self.stage_dir("disdiff") / "metrics"

    def representations_file(self, step: int) -> Path:
        return self.representations / f"step={step:08d}.npz"

    def metrics_file(self, step: int) -> Path:
        return self.metrics / f"step={step:08d}.json"

    @property
    def units(self) -> Path:
        return self.stage_dir("disdiff") / "units"

    @property
    def feature_cache(self) -> Path:
        return self.out / "feature-cache"

    def units_file(self, step: int) -> Path:
        return self.units / f"step={step:08d}.json"
