"""The quickstart: the whole method on one dataset, with no configuration, within a time budget.

Steps, each skipped when its output is already complete (so an interrupted run resumes):

1. open and check the dataset (``shapes3d-synth`` by default, or ``--dataset``; bad input stops
   here, before anything is written) and draw its preview;
2. train the stages the plan names (:mod:`disdiff.pipeline.pretrained`): stage 3 alone from the
   packaged stage-1/2 checkpoints, or all three stages from scratch, each within its share of the
   budget (a stage in progress resumes from its ``last.ckpt`` exactly where it stopped); for an
   image encoder on frozen features, those features are computed for the exports in a second process
   on one thread while stage 3 trains (:mod:`disdiff.pipeline.background_features`), or, on one
   thread or with ``--background-features false``, just before stage 3 trains;
3. export the representations of the whole dataset and evaluate the final stage-3 checkpoint at
   the published settings (skipped, with the reason, for a dataset without factor labels);
4. draw the swap and traversal grids;
5. the metric curve: export and evaluate earlier stage-3 checkpoints as the budget allows;
6. write ``report.md`` and a self-contained ``report.html``.

The console shows one line per step (:mod:`disdiff.pipeline.progress`); everything else goes to
``<out>/quickstart.log``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig, OmegaConf

from disdiff.config import ConfigError, load_configs
from disdiff.pipeline.background_features import RestoreThreads, TrainOnChildFeatures, TrainOnFeatures
from disdiff.pipeline.console import Console, output_to_log
from disdiff.pipeline.curve import (dci_sample_fraction, merge_settings, parse_settings, select_curve_steps,
                                    step_checkpoints)
from disdiff.pipeline.dataset import QuickstartData, QuickstartError, prepare_dataset
from disdiff.pipeline.export_features import ExportFeatures
from disdiff.pipeline.layout import QuickstartLayout
from disdiff.pipeline.overrides import check_sets, group_sets
from disdiff.pipeline.pretrained import StagePlan, plan_stages
from disdiff.pipeline.progress import PipelineClock, StageLine, StageProgress, format_minutes
from disdiff.pipeline.quickstart_report import HEADLINE, CurvePoint, QuickstartSummary, build_report
from disdiff.pipeline.settings import STAGE_CONFIGS, STAGE_TITLES, STAGES, QuickstartSettings
from disdiff.pipeline.stage_timer import speed_reserve_timer
from disdiff.utils.checkpoints import latest_checkpoint
from disdiff.utils.io import atomic_write_json

__all__ = ["Quickstart", "QuickstartError", "QuickstartSettings"]

#: Seconds kept back for the report when deciding whether another curve point fits the budget.
REPORT_RESERVE_SECONDS = 15.0
#: Images for the unit-usage table: 10-12 s for the small model on 2 idle CPU threads. On the 120-minute
#: quickstart's seed 1 at step 3,400, 256 images gave every field RMS within 0.002 and every gain within
#: 0.004 of what 512 gave (docs/EXPERIMENTS.md, session 15).
UNIT_USAGE_IMAGES = 256
#: Images per batch of the export (and of the frozen features computed before stage 3).
EXPORT_BATCH_SIZE = 256


class Quickstart:
    def __init__(self, settings: QuickstartSettings, console: Console | None = None) -> None:
        self.settings = settings
        self.layout = QuickstartLayout(Path(settings.out))
        self.out = self.layout.out
        self.console = console
        self.timings: dict[str, float] = {}
        self.data: QuickstartData | None = None
        self.plan: StagePlan | None = None
        self.curve: list[CurvePoint] = []
        self.notes: list[str] = []
        # An encoder on frozen features (backbone: dpm) computes them once for all exports of the run.
        self.features = ExportFeatures(self.layout.feature_cache, settings.features_bf16)
        self.clock = PipelineClock(settings.minutes * 60.0, self.step_names(STAGES))

    # ----------------------------------------------------------------- helpers
    @staticmethod
    def step_names(trained: tuple[str, ...]) -> list[str]:
        return ["data", *trained[:-1], "features", *trained[-1:], "export", "evaluate", "figures", "units", "curve",
                "report"]

    def stage_dir(self, stage: str) -> Path:
        return self.layout.stage_dir(stage)

    def done_marker(self, stage: str) -> Path:
        return self.layout.done_marker(stage)

    def line(self, step: str, title: str | None = None) -> StageLine:
        return StageLine(self.console, self.clock, step, title or STAGE_TITLES.get(step, step))

    def _timed(self, name: str, func: Callable, *args: Any, **kwargs: Any) -> Any:
        start = time.monotonic()
        try:
            return func(*args, **kwargs)
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.monotonic() - start

    def stage_config(self, stage: str) -> DictConfig:
        s, data, plan = self.settings, self.data, self.plan
        assert data is not None and plan is not None
        dotlist = list((s.overrides or {}).get(stage, [])) + group_sets(s.sets).get(stage, [])
        config = load_configs(STAGE_CONFIGS[stage], dotlist)
        params = config.data.params
        params.dataset = data.spec
        params.dataset_options = OmegaConf.merge(params.get("dataset_options") or {}, data.options)
        params.val_size = data.val_size
        if s.data_dir is not None:
            params.data_dir = s.data_dir
        model = config.model.params
        if stage == "autoencoder":
            model.autoencoder_config.params.ddconfig.resolution = s.resolution
        elif stage == "ldm":
            from disdiff.models.autoencoder import latent_shape_of

            stage1 = OmegaConf.load(self.stage_dir("autoencoder") / "configs" / "config.yaml")
            model.first_stage_config = stage1.model.params.autoencoder_config
            model.first_stage_ckpt = str(latest_checkpoint(self.stage_dir("autoencoder") / "checkpoints"))
            model.unet_config.params.image_size = latent_shape_of(model.first_stage_config)[-1]
        elif stage == "disdiff":
            stage2 = plan.stage2_checkpoint or latest_checkpoint(self.stage_dir("ldm") / "checkpoints")
            model.ldm_ckpt = str(stage2)
            model.encoder_config.resolution = s.resolution
            model.num_units = data.units
        return config

    def stage_budget_minutes(self, stage: str) -> float:
        """Training minutes for ``stage``: its share, cut to what this invocation's clock has left
        after the later stages' shares and the final steps' reserve.

        So time an earlier step overran (rendering the dataset, the end-of-training checkpoint,
        validation and images) comes out of this stage instead of running past the deadline.
        Lightning's timer counts the training time of earlier invocations too (it is restored
        on resume), so a resumed stage still gets its whole share.
        """
        trained = self.plan.trained if self.plan is not None else STAGES
        shares = self.settings.stage_minutes(trained)
        later = sum(shares[s] for s in trained[trained.index(stage) + 1:])
        reserve = self.settings.overhead_minutes()
        available = self.clock.seconds_left() / 60.0 - later - reserve
        return max(min(shares[stage], available), 0.1 * shares[stage])

    # ------------------------------------------------------------------ checks
    def check_output_folder(self) -> None:
        """An output folder holds one run: refuse to continue one made with other settings."""
        path = self.layout.settings_file
        if not path.is_file():
            return
        try:
            previous = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        current = self.identity()
        old = previous.get("identity")
        if old is not None and old != current:
            changed = sorted(k for k in set(old) | set(current) if old.get(k) != current.get(k))
            raise QuickstartError(
                f"--out {self.out} holds a quickstart run with other settings ({', '.join(changed)}: "
                + "; ".join(f"{k} {old.get(k)!r} there, {current.get(k)!r} now" for k in changed)
                + "); choose another --out or delete that folder")

    def identity(self) -> dict[str, Any]:
        assert self.data is not None and self.plan is not None
        return {**self.settings.identity(), "dataset": self.data.spec, "units": self.data.units,
                "stages": self.plan.as_json()}

    # ------------------------------------------------------------------ steps
    def draw_preview(self) -> Path:
        from disdiff.data.preview import save_preview

        preview = self.layout.figures / "dataset_preview.png"
        line = self.line("data", f"data {self.data.label}")
        line.update(f"{self.data.num_images} images at {self.settings.resolution}x{self.settings.resolution}")
        self.data.dataset.images_uint8([0])  # renders (or reuses) shapes3d-synth's on-disk cache
        if not preview.is_file():
            save_preview(self.data.dataset, preview, seed=self.settings.seed, name=self.data.label)
        line.done(f"{self.data.num_images} images at {self.settings.resolution}x{self.settings.resolution}, "
                  f"{self._factor_text()}, {self.data.units} units")
        return preview

    def _factor_text(self) -> str:
        if not self.data.is_factor_grid:
            return "no factor labels"
        sizes = self.data.dataset.factor_sizes
        return f"{len(sizes)} factors ({'x'.join(str(s) for s in sizes)})"

    def train_stage(self, stage: str) -> None:
        from disdiff.training.run import RunDirectory, train

        line = self.line(stage)
        if self.done_marker(stage).is_file():
            line.done(f"already trained, {self.layout.read_done(stage).get('global_step', '?')} steps (skipped)")
            return
        run = RunDirectory(self.stage_dir(stage))
        resume = latest_checkpoint(run.checkpoint_dir)
        resume = resume if resume.is_file() else None
        config = self.stage_config(stage)
        minutes = self.stage_budget_minutes(stage)
        training_seconds = round((minutes - self.settings.stage_tail_minutes(minutes)) * 60)
        line.update(f"{'resuming from ' + resume.name if resume else 'starting'}, "
                    f"{format_minutes(training_seconds)} of training")
        callbacks: list = [StageProgress(line)]
        if stage == "disdiff" and self.settings.curve_points > 1:
            # Checkpoints spread over the stage's time, whatever its speed, for the metric curve.
            from disdiff.training.callbacks import BudgetCheckpoints

            points = self.settings.curve_points
            every = int((config.get("lightning") or {}).get("checkpoint", {}).get("every_n_train_steps", 0) or 0)
            callbacks.append(BudgetCheckpoints(run.checkpoint_dir, [k / points for k in range(1, points)], every))
        trainer_overrides: dict[str, Any] = {"accelerator": "cpu", "devices": 1}
        threads = torch.get_num_threads()
        seconds_left = self.clock.seconds_left
        reader: TrainOnFeatures | None = None
        if stage == "disdiff" and self.features.job is None and self.settings.child_features_in_training:
            # Computed here before stage 3 (one thread, or no features process): read them from step 0.
            reader = TrainOnFeatures(lambda module: self.features.cache.held(module.encoder))
            callbacks.append(reader)
        elif stage == "disdiff" and self.features.child_running:
            # One thread is the features child's until it is done; the final steps wait for it.
            torch.set_num_threads(threads - 1)
            child = self.features.job
            callbacks.append(RestoreThreads(child, threads))
            if self.settings.child_features_in_training:
                reader = TrainOnChildFeatures(child, lambda module: self.features.child_features(
                    module.encoder, self.dataset_key, self.data.num_images))
                callbacks.append(reader)
            seconds_left = lambda: self.clock.seconds_left() - child.seconds_left()  # noqa: E731
        timer = speed_reserve_timer(self.settings, stage, training_seconds, seconds_left)
        if timer is not None:
            callbacks.append(timer)
        else:
            trainer_overrides["max_time"] = {"seconds": training_seconds}
        try:
            trainer = train(
                config, run, seed=self.settings.seed, resume_ckpt=resume, overwrite=resume is None and run.holds_run(),
                trainer_overrides=trainer_overrides,
                extra_callbacks=callbacks,
                argv=["disdiff", "quickstart", f"--stage={stage}"],
            )
        finally:
            torch.set_num_threads(threads)
        atomic_write_json(self.done_marker(stage), {
            "global_step": int(trainer.global_step), "budget_minutes": minutes,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            # Lightning's timer holds the training time of all invocations (it is restored on resume).
            "training_seconds": round(float(_timer_elapsed(trainer)), 1),
            **({"seconds_per_step": timer.seconds_per_step, "fixed_reserve_training_seconds": training_seconds}
               if timer is not None and timer.seconds_per_step is not None else {}),
            **({"child_features_from_step": reader.attached_at} if reader is not None and reader.attached_at is not None
               else {}),
        })
        if reader is not None and reader.attached_at is not None:
            source = "the features process's file" if isinstance(reader, TrainOnChildFeatures) else \
                "those computed before it for the exports"
            self.notes.append(f"From step {reader.attached_at} on, stage 3 read its images' frozen features from "
                              f"{source} instead of computing them (`--child-features-in-training false` keeps "
                              "computing them).")

    def precompute_frozen_features(self) -> None:
        """Before stage 3 trains: the frozen features of every image, for an image encoder that is a
        head on frozen networks (``backbone: dpm``), into the run's feature cache for the exports.

        Nothing stage 3 trains changes them, and computing them is most of the final export (5m35s of
        the 7m10s of final steps on a 2-core AMD EPYC, docs/EXPERIMENTS.md M17). Here their time comes
        out of stage 3's training budget, where the clock measures it, instead of out of the fixed
        reserve for the final steps, which a machine that slow overran by 1m21s.
        """
        from disdiff.config import instantiate_from_config

        line = self.line("features", "frozen features")
        if self.done_marker(STAGES[-1]).is_file():
            line.done("stage 3 already trained: the export computes them (skipped)")
            return
        module = instantiate_from_config(self.stage_config(STAGES[-1]).model)
        encoder = module.encoder
        if not hasattr(encoder, "code_from_features"):
            line.done("none (the image encoder reads the images themselves)")
            return
        module.eval()
        if self.settings.background_features and torch.get_num_threads() >= 2:
            self.features.start_child(self.data.num_images, {
                "model_config": OmegaConf.to_container(self.stage_config(STAGES[-1]).model, resolve=True),
                "dataset_spec": self.data.spec, "dataset_options": dict(self.data.options),
                "data_dir": self.settings.data_dir, "dataset_key": self.dataset_key, "threads": 1,
                "batch_size": EXPORT_BATCH_SIZE})
            line.done(f"{self.data.num_images} images in a second process (1 thread) while stage 3 trains")
            return
        start = time.monotonic()
        note = self.features.compute_now(encoder, self.data.dataset, EXPORT_BATCH_SIZE,
                                         on_batch=lambda done, total: line.update(f"{done} of {total} images"))
        precision = "bf16 autocast" if self.features.cache.used_bf16 else "float32"
        line.done(f"{self.data.num_images} images in {format_minutes(time.monotonic() - start)} ({precision}), "
                  "kept for the exports")
        self.notes.extend([note] if note else [])

    @property
    def dataset_key(self) -> str:
        from disdiff.evaluation.export import dataset_cache_key

        return dataset_cache_key(self.data.spec, self.data.options, self.settings.data_dir)

    def final_step(self) -> int:
        return int(self.layout.read_done("disdiff")["global_step"])

    def export(self, step: int, checkpoint: Path | None = None) -> Path:
        """Representations of the whole dataset by the stage-3 checkpoint of ``step`` (kept if already written)."""
        from disdiff.api import DisDiff
        from disdiff.evaluation.export import export_representations, save_representations

        path = self.layout.representations_file(step)
        if not path.is_file():
            note = self.features.collect(self.data.num_images)
            self.notes.extend([note] if note else [])
            model = DisDiff.load(checkpoint or self.stage_dir("disdiff"))
            if model.global_step != step:
                raise RuntimeError(f"{checkpoint or self.stage_dir('disdiff')} holds step {model.global_step}, not {step}")
            latents = export_representations(model, self.data.dataset, batch_size=EXPORT_BATCH_SIZE, progress=False,
                                             feature_cache=self.features.cache, dataset_key=self.dataset_key)
            self.features.drop_file()
            save_representations(path, latents, step, self.data.spec, self.data.dataset)
        return path

    def evaluate(self, representations: Path, step: int, settings: dict[str, dict[str, Any]]) -> dict:
        """The metrics record of one representations file (recomputed unless current)."""
        from disdiff.evaluation import runs
        from disdiff.evaluation.protocol import DatasetInfo

        info = DatasetInfo.of(self.data.dataset, label=self.data.spec)
        options = {"metrics": None, "settings": settings, "reduction": None, "seed": 0, "num_units": None}
        out_json = self.layout.metrics_file(step)
        if not runs.is_current(out_json, runs.expected_record(info, options)):
            job = runs.Job(representations, out_json, step)
            # The threads training used (--threads, else torch's choice): more BLAS threads than free
            # cores make the metrics' solvers many times slower on a shared machine.
            result = runs.run_jobs([job], info, options, processes=1, threads=torch.get_num_threads())[0]
            if not result.ok:
                raise RuntimeError(f"quickstart: evaluating step {step} failed: {result.message}")
        runs.refresh_outputs(self.layout.metrics, self.stage_dir("disdiff").name)
        return json.loads(out_json.read_text())

    def export_and_evaluate_final(self) -> None:
        step = self.final_step()
        cached = self.layout.representations_file(step).is_file() and self.layout.metrics_file(step).is_file()
        line = self.line("export")
        line.update(f"step {step}: encoding {self.data.num_images} images")
        start = time.monotonic()
        path = self._timed("export", self.export, step)
        export_seconds = time.monotonic() - start
        line.done(f"step {step}: {self.data.num_images} images in {format_minutes(export_seconds)}")
        line = self.line("evaluate")
        line.update(f"step {step}: FactorVAE, DCI, MIG, beta-VAE and the probe")
        start = time.monotonic()
        record = self._timed("evaluate", self.evaluate, path, step, self._settings(final=True))
        head = record.get("headline", {})
        line.done(f"step {step}: " + ", ".join(f"{k} {head[k]:.3f}" for k in HEADLINE if isinstance(head.get(k), float))
                  + f" in {format_minutes(time.monotonic() - start)}")
        self.curve.append(CurvePoint(step, final=True, export_seconds=export_seconds,
                                     evaluate_seconds=time.monotonic() - start, measured=not cached))

    def _settings(self, final: bool) -> dict[str, dict[str, Any]]:
        user = parse_settings(self.settings.metrics_settings)
        return user if final else merge_settings(user, parse_settings(self.settings.curve_settings))

    def figures(self) -> dict[str, Path]:
        from disdiff.api import DisDiff
        from disdiff.inference.figures import pca_codes, pick_sources, swap_figures, traverse_figure
        from disdiff.utils.images import save_png

        line = self.line("figures")
        figures = self.layout.figures
        paths = {"swap": figures / "swap.png", "swap_partial": figures / "swap_partial.png",
                 "traverse": figures / "traverse.png"}
        if all(p.is_file() for p in paths.values()):
            line.done("already drawn (skipped)")
            return paths
        s, dataset = self.settings, self.data.dataset
        model = DisDiff.load(self.stage_dir("disdiff"))
        line.update(f"swap grids ({s.figure_steps} DDIM steps)")
        indices = pick_sources(len(dataset), 8, s.seed)
        grids = swap_figures(model, dataset, indices, indices[0], s.figure_steps, 1.0, s.seed)
        save_png(grids["full"], paths["swap"])
        save_png(grids["partial"], paths["swap_partial"])
        line.update("traversal grid")
        exported = self.layout.representations_file(model.global_step)
        if exported.is_file():
            import numpy as np

            with np.load(exported) as npz:
                codes = np.asarray(npz["latents"], dtype=np.float32)
        else:
            codes = pca_codes(model, dataset, 2000, s.seed)
        values = [-2.0, -1.0, 0.0, 1.0, 2.0]
        save_png(traverse_figure(model, dataset, 0, codes, values, s.figure_steps, 0.0, s.seed), paths["traverse"])
        line.done("swap, partial swap and traversal grids drawn")
        return paths

    def unit_usage(self) -> None:
        """``disdiff units`` on the final checkpoint, for the report: which units the decoder uses."""
        from disdiff.api import DisDiff
        from disdiff.inference.unit_usage import measure_unit_usage

        line = self.line("units", "unit usage")
        step = self.final_step()
        path = self.layout.units_file(step)
        if path.is_file():
            line.done("already measured (skipped)")
            return
        line.update(f"step {step}: field size and gain of each unit on {UNIT_USAGE_IMAGES} images")
        model = DisDiff.load(self.stage_dir("disdiff"))
        usage = measure_unit_usage(model.module, self.data.dataset, UNIT_USAGE_IMAGES, seed=self.settings.seed)
        atomic_write_json(path, {"global_step": model.global_step, "ema": model.uses_ema, **usage.record()})
        live = sum(1 for row in usage.rows() if row["field_share"] >= 0.1)
        line.done(f"step {step}: {live} of {len(usage.field_rms)} units with a field of at least 10% of the largest")

    def metric_curve(self) -> None:
        """Export and evaluate earlier stage-3 checkpoints (cheaper settings) while the budget allows."""
        line = self.line("curve", "metric curve")
        final = self.final_step()
        available = step_checkpoints(self.stage_dir("disdiff") / "checkpoints")
        chosen = [s for s in select_curve_steps([*available, final], self.settings.curve_points) if s != final]
        if not chosen:
            line.done("no earlier checkpoint to evaluate")
            return
        # Time of one more point, until an earlier one has been measured: the final checkpoint's export, and
        # its evaluation scaled to the cheaper settings (dci_sample_fraction); without the frozen features'
        # one-off computation, if the final export did it for every checkpoint.
        fraction = dci_sample_fraction(self._settings(final=False), self._settings(final=True))
        estimate = sum(p.export_seconds + fraction * p.evaluate_seconds for p in self.curve if p.final and p.measured)
        if not self.features.precomputed:
            estimate = max(0.0, estimate - self.features.cache.fill_seconds)
        done = 0
        for index, step in enumerate(chosen):
            cached = self.layout.metrics_file(step).is_file()
            if not cached and self.clock.seconds_left() - REPORT_RESERVE_SECONDS < estimate:
                skipped = chosen[index:]
                self.notes.append(f"The metric curve left out the checkpoints of step(s) {', '.join(map(str, skipped))}: "
                                  f"evaluating each takes about {format_minutes(estimate)}, more than the budget had left.")
                break
            line.update(f"step {step} ({index + 1} of {len(chosen)})")
            if cached:  # evaluated by an earlier invocation
                self.curve.append(CurvePoint(step, final=False, measured=False))
                done += 1
                continue
            start = time.monotonic()
            path = self._timed("curve", self.export, step, available[step])
            export_seconds = time.monotonic() - start
            start = time.monotonic()
            self._timed("curve", self.evaluate, path, step, self._settings(final=False))
            # The codes of an earlier checkpoint are only needed for its metrics (and take
            # 480,000 x N x d floats: 369 MB for shapes3d-synth with 6 units of 32).
            path.unlink(missing_ok=True)
            point = CurvePoint(step, final=False, export_seconds=export_seconds, evaluate_seconds=time.monotonic() - start)
            self.curve.append(point)
            estimate = point.export_seconds + point.evaluate_seconds
            done += 1
        line.done(f"{done} earlier checkpoint(s) evaluated" + (f", {len(chosen) - done} left out for time"
                                                               if done < len(chosen) else ""))

    def report(self) -> tuple[Path, Path]:
        summary = QuickstartSummary(settings=self.settings, layout=self.layout, data=self.data, plan=self.plan,
                                    timings=dict(self.timings), curve=sorted(self.curve, key=lambda p: p.step),
                                    notes=list(self.notes))
        return build_report(summary)

    # -------------------------------------------------------------------- run
    def prepare(self) -> None:
        """Open and check the dataset, plan the stages, check the output folder: nothing is written."""
        self.data = prepare_dataset(self.settings)
        self.plan = plan_stages(self.settings, self.data.canonical)
        if self.settings.sets:
            try:
                check_sets(self.settings.sets, self.plan.trained)
            except ConfigError as exc:
                raise QuickstartError(str(exc)) from exc
        self.clock.steps = self.step_names(self.plan.trained)
        self.check_output_folder()

    def run(self) -> tuple[Path, Path]:
        started = time.monotonic()
        if self.console is None:
            self.console = Console(interval=self.settings.line_interval)
        self.prepare()  # bad input stops here, before anything is written
        self.out.mkdir(parents=True, exist_ok=True)
        try:
            return self._run_steps(started)
        finally:
            self.features.stop()  # a failed run leaves no child computing for nobody
            self.console.close_line()  # a stage line left open by an error ends before the error is printed

    def _run_steps(self, started: float) -> tuple[Path, Path]:
        with output_to_log(self.layout.log_file):
            atomic_write_json(self.layout.settings_file, {"identity": self.identity(),
                                                          "settings": self.settings.as_json(),
                                                          "dataset": self.data.dataset.describe()})
            if self.plan.notice:
                self.notes.append(self.plan.notice[0].upper() + self.plan.notice[1:] + ".")
                self.line("data", "notice").done(self.plan.notice)
            self._timed("data", self.draw_preview)
            for stage in self.plan.trained:
                if stage == STAGES[-1] and self.data.is_factor_grid:  # only the metrics need the export
                    self._timed("features", self.precompute_frozen_features)
                self._timed(stage, self.train_stage, stage)
            if self.data.is_factor_grid:
                self.export_and_evaluate_final()
            else:
                why = f"{self.data.label} has no factor labels, so FactorVAE, DCI, MIG and beta-VAE are undefined"
                self.line("export").done(f"skipped: {why}")
                self.line("evaluate").done("skipped (no factor labels)")
            self._timed("figures", self.figures)
            self._timed("units", self.unit_usage)  # needs no factor labels (η² only where there are some)
            if self.data.is_factor_grid:
                self.metric_curve()
            else:
                self.line("curve", "metric curve").done("skipped (no factor labels)")
            paths = self._timed("report", self.report)
            self.line("report").done(f"{paths[0]} and {paths[1]}, "
                                     f"{format_minutes(time.monotonic() - started)} in all")
        return paths


def _timer_elapsed(trainer: Any) -> float:
    from lightning.pytorch.callbacks import Timer

    timers = [cb for cb in trainer.callbacks if isinstance(cb, Timer)]
    return timers[0].time_elapsed("train") if timers else float("nan")
