"""The quickstart: the whole method on the built-in dataset, with no download and no configuration.

Steps, each skipped when its output is already complete (so an interrupted run resumes):

1. render ``shapes3d-synth`` and draw its factor preview;
2. train stage 1 (VQ autoencoder), stage 2 (latent diffusion) and stage 3 (DisDiff) with the small
   CPU configs, each within its share of the time budget (a stage in progress resumes from its
   ``last.ckpt``, and Lightning restores how much of its time it has already used);
3. export the representations of the whole dataset, evaluate the four paper metrics;
4. draw the swap and traversal grids;
5. write ``report.md`` and a self-contained ``report.html``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from disdiff.config import load_configs
from disdiff.pipeline.progress import PipelineClock, PipelineProgressBar, format_minutes
from disdiff.utils.checkpoints import latest_checkpoint
from disdiff.utils.io import atomic_write_json

log = logging.getLogger(__name__)

STAGES = ("autoencoder", "ldm", "disdiff")
# Each stage: the small model config, then the quickstart's data and trainer block.
STAGE_CONFIGS = {
    "autoencoder": ["autoencoder/shapes3d-synth-vq-f4-small.yaml", "quickstart/autoencoder-run.yaml"],
    "ldm": ["ldm/shapes3d-synth-vq-small.yaml", "quickstart/ldm-run.yaml"],
    "disdiff": ["disdiff/shapes3d-synth-vq-small-dis.yaml", "quickstart/disdiff-run.yaml"],
}
STEP_NAMES = ["data", *STAGES, "export", "evaluate", "figures", "report"]


@dataclass
class QuickstartSettings:
    out: Path
    minutes: float = 30.0
    seed: int = 0
    resolution: int = 32
    factor_sizes: list[int] | None = None  # None: the full Shapes3D-sized grid (480,000 images)
    # Shares of the training budget; what is left after ``overhead_minutes`` is split this way.
    shares: tuple[float, float, float] = (0.2, 0.3, 0.5)
    overhead_fraction: float = 0.15  # export + evaluation + figures, as a fraction of the budget
    # Part of each stage's share left for what runs after its training time is up (the last
    # validation, checkpoint and image grids): 31 s of a 12.75-minute stage-3 share in a 30-minute run.
    stage_tail_fraction: float = 0.05
    overrides: dict[str, list[str]] | None = None  # extra dotlist overrides per stage
    metrics_settings: list[str] | None = None  # e.g. ["dci.num_train=1000"] for tiny test runs
    figure_steps: int = 50

    def stage_minutes(self) -> dict[str, float]:
        training = self.minutes * (1.0 - self.overhead_fraction)
        total = sum(self.shares)
        return {stage: training * share / total for stage, share in zip(STAGES, self.shares)}

    def dataset_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"resolution": self.resolution}
        if self.factor_sizes is not None:
            options["factor_sizes"] = list(self.factor_sizes)
        return options


class Quickstart:
    def __init__(self, settings: QuickstartSettings) -> None:
        self.settings = settings
        self.out = Path(settings.out)
        self.clock = PipelineClock(settings.minutes * 60.0, STEP_NAMES)
        self.timings: dict[str, float] = {}

    # ----------------------------------------------------------------- helpers
    def stage_dir(self, stage: str) -> Path:
        return self.out / f"stage{STAGES.index(stage) + 1}_{stage}"

    def done_marker(self, stage: str) -> Path:
        return self.stage_dir(stage) / "DONE.json"

    def _timed(self, name: str, func, *args, **kwargs):
        self.clock.enter(name)
        start = time.monotonic()
        result = func(*args, **kwargs)
        self.timings[name] = self.timings.get(name, 0.0) + time.monotonic() - start
        return result

    def stage_config(self, stage: str) -> DictConfig:
        s = self.settings
        overrides = list((s.overrides or {}).get(stage, []))
        config = load_configs(STAGE_CONFIGS[stage], overrides)
        config.data.params.dataset_options = OmegaConf.merge(
            config.data.params.get("dataset_options") or {}, s.dataset_options()
        )
        if s.factor_sizes is not None:  # a reduced grid: hold out at most a tenth of it
            num_images = int(np.prod(s.factor_sizes))
            config.data.params.val_size = max(1, min(int(config.data.params.get("val_size", 256)), num_images // 10))
        params = config.model.params
        if stage == "autoencoder":
            params.autoencoder_config.params.ddconfig.resolution = s.resolution
        elif stage == "ldm":
            from disdiff.models.autoencoder import latent_shape_of

            stage1 = OmegaConf.load(self.stage_dir("autoencoder") / "configs" / "config.yaml")
            params.first_stage_config = stage1.model.params.autoencoder_config
            params.first_stage_ckpt = str(latest_checkpoint(self.stage_dir("autoencoder") / "checkpoints"))
            params.unet_config.params.image_size = latent_shape_of(params.first_stage_config)[-1]
        elif stage == "disdiff":
            params.ldm_ckpt = str(latest_checkpoint(self.stage_dir("ldm") / "checkpoints"))
            params.encoder_config.resolution = s.resolution
        return config

    # ------------------------------------------------------------------ steps
    def render(self) -> Path:
        from disdiff.data.preview import save_preview
        from disdiff.data.registry import load_dataset

        preview = self.out / "figures" / "dataset_preview.png"
        dataset = load_dataset("shapes3d-synth", **self.settings.dataset_options())
        dataset.images_uint8([0])  # renders (or reuses) the on-disk cache
        if not preview.is_file():
            save_preview(dataset, preview, seed=self.settings.seed, name="shapes3d-synth")
        return preview

    def stage_budget_minutes(self, stage: str) -> float:
        """Training minutes for ``stage``: its share, cut to what this invocation's clock has left
        after the later stages' shares and the final steps' reserve.

        So time an earlier step overran (rendering the dataset, the end-of-training checkpoint,
        validation and images) comes out of this stage instead of running past the deadline.
        Lightning's timer counts the training time of earlier invocations too (it is restored
        on resume), so a resumed stage still gets its whole share.
        """
        shares = self.settings.stage_minutes()
        later = sum(shares[s] for s in STAGES[STAGES.index(stage) + 1:])
        reserve = self.settings.minutes * self.settings.overhead_fraction
        available = self.clock.seconds_left() / 60.0 - later - reserve
        return max(min(shares[stage], available), 0.1 * shares[stage])

    def train_stage(self, stage: str) -> None:
        from disdiff.training.run import RunDirectory, train

        if self.done_marker(stage).is_file():
            print(f"  {stage}: already trained, skipping ({self.stage_dir(stage)})", flush=True)
            return
        run = RunDirectory(self.stage_dir(stage))
        resume = latest_checkpoint(run.checkpoint_dir)
        resume = resume if resume.is_file() else None
        if resume is not None:
            print(f"  {stage}: resuming from {resume}", flush=True)
        config = self.stage_config(stage)
        minutes = self.stage_budget_minutes(stage)
        training_seconds = round(minutes * 60 * (1.0 - self.settings.stage_tail_fraction))
        trainer = train(
            config, run, seed=self.settings.seed, resume_ckpt=resume, overwrite=resume is None and run.holds_run(),
            trainer_overrides={"max_time": {"seconds": training_seconds}, "accelerator": "cpu", "devices": 1},
            extra_callbacks=[PipelineProgressBar(self.clock)],
            argv=["disdiff", "quickstart", f"--stage={stage}"],
        )
        atomic_write_json(self.done_marker(stage), {
            "global_step": int(trainer.global_step), "budget_minutes": minutes,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            # Lightning's timer holds the training time of all invocations (it is restored on resume).
            "training_seconds": round(float(_timer_elapsed(trainer)), 1),
        })

    def export(self) -> Path:
        from disdiff.cli.main import main

        run = self.stage_dir("disdiff")
        step = json.loads(self.done_marker("disdiff").read_text())["global_step"]
        path = run / "representations" / f"step={step:08d}.npz"
        if not path.is_file():
            _check(main(["export", str(run), "--out", str(path)]), "export")
        return path

    def evaluate(self, representations: Path) -> Path:
        from disdiff.cli.main import main

        run = self.stage_dir("disdiff")
        args = ["evaluate", str(run)]
        for setting in self.settings.metrics_settings or []:
            args += ["--set", setting]
        _check(main(args), "evaluate")
        return run / "metrics"

    def figures(self) -> dict[str, Path]:
        from disdiff.cli.main import main

        run = self.stage_dir("disdiff")
        figures = self.out / "figures"
        steps = str(self.settings.figure_steps)
        swap = figures / "swap.png"
        partial = figures / "swap_partial.png"
        traverse = figures / "traverse.png"
        if not (swap.is_file() and partial.is_file()):
            _check(main(["swap", str(run), "--mode", "both", "--steps", steps, "--seed", str(self.settings.seed),
                         "--out", str(swap)]), "swap")
        if not traverse.is_file():
            representations = sorted((run / "representations").glob("step=*.npz"))
            extra = ["--latents", str(representations[-1])] if representations else []
            _check(main(["traverse", str(run), "--steps", steps, "--seed", str(self.settings.seed), "--out", str(traverse),
                         *extra]), "traverse")
        return {"swap": swap, "swap_partial": partial, "traverse": traverse}

    def report(self) -> tuple[Path, Path]:
        from disdiff.pipeline.quickstart_report import build_report

        return build_report(self)

    # -------------------------------------------------------------------- run
    def run(self) -> tuple[Path, Path]:
        self.out.mkdir(parents=True, exist_ok=True)
        settings_path = self.out / "quickstart.json"
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(self.settings).items()}
        atomic_write_json(settings_path, settings)
        started = time.monotonic()
        self._timed("data", self.render)
        for stage in STAGES:
            self._timed(stage, self.train_stage, stage)
        representations = self._timed("export", self.export)
        self._timed("evaluate", self.evaluate, representations)
        self._timed("figures", self.figures)
        paths = self._timed("report", self.report)
        print(f"quickstart finished in {format_minutes(time.monotonic() - started)}: {paths[0]} and {paths[1]}", flush=True)
        return paths


def _timer_elapsed(trainer: Any) -> float:
    from lightning.pytorch.callbacks import Timer

    timers = [cb for cb in trainer.callbacks if isinstance(cb, Timer)]
    return timers[0].time_elapsed("train") if timers else float("nan")


def _check(code: int, what: str) -> None:
    if code:
        raise RuntimeError(f"quickstart: the {what} step failed with exit code {code}")
