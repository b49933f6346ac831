"""What a quickstart run is asked to do: :class:`QuickstartSettings` and the stages' configs.

Plain data, imported by every other module of the pipeline (and by none of them in return).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STAGES = ("autoencoder", "ldm", "disdiff")
STAGE_TITLES = {"autoencoder": "stage 1 autoencoder", "ldm": "stage 2 LDM", "disdiff": "stage 3 DisDiff"}
# Each stage: the small model config, then the quickstart's data and trainer block.
STAGE_CONFIGS = {
    "autoencoder": ["autoencoder/shapes3d-synth-vq-f4-small.yaml", "quickstart/autoencoder-run.yaml"],
    "ldm": ["ldm/shapes3d-synth-vq-small.yaml", "quickstart/ldm-run.yaml"],
    "disdiff": ["disdiff/shapes3d-synth-vq-small-dis.yaml", "quickstart/disdiff-run.yaml"],
}
DEFAULT_DATASET = "shapes3d-synth"
#: The small networks halve the image twice (autoencoder, f = 4) and the latents twice (UNet).
RESOLUTION_MULTIPLE = 16
#: Settings of the cheaper evaluation of the metric curve's intermediate checkpoints: DCI's
#: gradient-boosted trees are most of the evaluation time and scale with the number of points.
CURVE_SETTINGS = ("dci.num_train=2000", "dci.num_test=1000")


@dataclass
class QuickstartSettings:
    out: Path
    minutes: float = 30.0
    seed: int = 0
    #: A dataset name the loaders know or a path (bring-your-own .npz/.h5, Cars3D or CelebA folder).
    dataset: str = DEFAULT_DATASET
    data_dir: str | None = None  # folder of the named real datasets (default: $DISDIFF_DATA)
    resolution: int = 32
    factor_sizes: list[int] | None = None  # None: the dataset's full grid (480,000 images for shapes3d-synth)
    units: int | None = None  # N; None: the number of factors + 2 (8 for a dataset without factors)
    #: Train stages 1 and 2 too, even where packaged checkpoints exist.
    from_scratch: bool = False
    #: Folder of packaged stage-1/2 checkpoints; None: $DISDIFF_PRETRAINED_DIR, else the package's own.
    pretrained_dir: Path | None = None
    # Shares of the training budget when all three stages train; what is left after
    # the overhead (``overhead_minutes()``) is split this way. With packaged stages 1-2, stage 3 gets all of it.
    shares: tuple[float, float, float] = (0.2, 0.3, 0.5)
    #: Export, evaluation (the metric curve included), figures and report: this fraction of the
    #: budget, at most ``overhead_minutes_max``. What they take hardly grows with the budget: on 2
    #: idle cores 1m22s for the final checkpoint (export, metrics, figures) and ~42 s per earlier
    #: curve point, 3m30s in all (30-minute quickstarts of 2026-12-01); 7m51s on one shared thread
    #: (the 120-minute run of 2026-12-04). The curve leaves points out when time runs short.
    overhead_fraction: float = 0.25
    overhead_minutes_max: float = 5.0
    #: Stage 3 may train on into that reserve when the machine is fast enough
    #: (:class:`disdiff.pipeline.stage_timer.SpeedReserveTimer`): the final steps are predicted as
    #: ``tail_step_equivalents`` training steps, at the step time measured during stage 3. Since the
    #: frozen DPM features are ready before the exports (computed before or beside stage 3), the
    #: final steps are the heads' export, the evaluation, figures, unit usage, three curve points and
    #: the report: 147 s after 0.407 s steps on a 2-core AMD EPYC (361 steps' worth; docs/EXPERIMENTS.md
    #: M18, 2026-12-06). 550 is 1.5 times that one measurement. The final steps' time hardly follows the
    #: step's when a config makes the step cheaper: 200-211 s after 0.512-0.552 s steps (M26), and 470
    #: steps' worth (M27, after 0.421-0.427 s steps) left too little for the metric curve, which dropped
    #: one or two of its three earlier checkpoints (docs/EXPERIMENTS.md M27); so 550 stays. (Before, the
    #: final export computed the features: 1,217-1,424 steps' worth, and 1,700 was the setting.) The
    #: reserve never falls below ``overhead_minutes_min`` nor rises above the fixed one.
    speed_reserve: bool = True
    #: The frozen features of the exports (and of training once it reads them:
    #: ``child_features_in_training``) under a bf16 autocast: ``"auto"`` where the CPU has native bf16
    #: (:func:`disdiff.utils.precision.resolve_bf16`). On a 2-core AMD EPYC the
    #: 480,000 images' features took 380-466 s in float32 and 191-227 s in bf16, and one checkpoint's
    #: codes scored the same metrics to the third decimal (docs/EXPERIMENTS.md D36, D36b), so about three
    #: minutes more of the 30 go to stage 3. ``False`` keeps every number float32.
    features_bf16: bool | str = "auto"
    #: Compute those features in a second process on one thread while stage 3 trains on the others
    #: (:mod:`disdiff.pipeline.background_features`), instead of before stage 3; only with two or more
    #: torch threads. With ``edge_source: reconstruction`` they took 9m44s-10m28s of a 30-minute
    #: quickstart on 2 cores before stage 3 (docs/EXPERIMENTS.md M23).
    background_features: bool = True
    #: Once that process is done, stage 3 reads its images' frozen features from the process's file
    #: instead of computing them each step (:class:`disdiff.pipeline.background_features.TrainOnChildFeatures`):
    #: ~10 % of the small step (docs/EXPERIMENTS.md D65). Without that process (one thread, or
    #: ``background_features`` off) the features are computed before stage 3 and read from step 0. They
    #: are the exports' features, so under ``features_bf16`` the head trains on bf16-autocast features
    #: from then on. ``False``: always computed.
    child_features_in_training: bool = True
    tail_step_equivalents: float = 550.0
    overhead_minutes_min: float = 2.0
    # Part of each stage's share left for what runs after its training time is up (the last
    # validation, checkpoint and image grids; 31 s after a 12.75-minute stage-3 share), at most
    # ``stage_tail_minutes_max``.
    stage_tail_fraction: float = 0.05
    stage_tail_minutes_max: float = 1.0
    #: Stage-3 checkpoints evaluated for the metric curve, the final one included (1: final only).
    curve_points: int = 4
    curve_settings: list[str] = field(default_factory=lambda: list(CURVE_SETTINGS))
    overrides: dict[str, list[str]] | None = None  # extra dotlist overrides per stage
    #: The user's ``--set STAGE:KEY=VALUE`` values (:mod:`disdiff.pipeline.overrides`), merged after
    #: ``overrides``; part of the run's identity and listed in the report.
    sets: list[str] = field(default_factory=list)
    metrics_settings: list[str] | None = None  # e.g. ["dci.num_train=1000"] for tiny test runs
    figure_steps: int = 50
    #: Seconds between the stage lines printed when the console is not a terminal (a terminal
    #: gets one line per stage, rewritten in place).
    line_interval: float = 30.0

    def overhead_minutes(self) -> float:
        """Minutes set aside for export, evaluation, figures and report."""
        return min(self.minutes * self.overhead_fraction, self.overhead_minutes_max)

    def training_minutes(self) -> float:
        return self.minutes - self.overhead_minutes()

    def stage_tail_minutes(self, stage_minutes: float) -> float:
        """Minutes of a stage's budget left for its last validation, checkpoint and grids."""
        return min(stage_minutes * self.stage_tail_fraction, self.stage_tail_minutes_max)

    def stage_minutes(self, stages: tuple[str, ...] = STAGES) -> dict[str, float]:
        """Training minutes of each stage that trains: the budget's shares, renormalised over ``stages``."""
        shares = {stage: share for stage, share in zip(STAGES, self.shares) if stage in stages}
        total = sum(shares.values())
        return {stage: self.training_minutes() * share / total for stage, share in shares.items()}

    def identity(self) -> dict[str, Any]:
        """The settings that define the run's results; an output folder holds one run of each."""
        identity = {"dataset": self.dataset, "resolution": self.resolution, "factor_sizes": self.factor_sizes,
                    "units": self.units, "seed": self.seed, "from_scratch": self.from_scratch}
        if self.sets:  # absent when empty: folders of runs made before --set existed stay continuable
            identity["sets"] = list(self.sets)
        return identity

    def as_json(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(self).items()}
