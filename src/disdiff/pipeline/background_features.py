"""The exports' frozen features computed in a second process while stage 3 trains.

Why: with ``edge_source: reconstruction`` the frozen features of shapes3d-synth's 480,000 images (the
stage-1 encoding and decoding, the UNet encoder half) took 9m44s-10m28s of a 30-minute quickstart on
2 cores before stage 3 could start (docs/EXPERIMENTS.md, M23), although no training step needs them:
only the exports after training do. So the features take one core in a child process while training
runs on the others, and training gets its thread back when the child is done. On a 2-core AMD EPYC a
step is 1.39x slower on one thread than on two, and the features take 1,038 s beside training against
667 s first on two threads; for a 25-minute stage 3 that predicts 36 % more steps (docs/EXPERIMENTS.md
D57, ``benchmarks/bench_background_features.py``). In the default quickstart, seed 0, it gave 1,750 steps
against 1,188 with the features first, and DCI 0.521 against 0.431 (docs/EXPERIMENTS.md, D60).

The child is a fresh interpreter (``python -m disdiff.pipeline.background_features JOB.json``), not a
``multiprocessing`` one: it shares no torch state with the parent and does not re-import the
caller's ``__main__``. It writes the features atomically to the cache file the parent's
:class:`disdiff.evaluation.export.FrozenFeatureCache` then memory-maps (same folder, dataset key and
feature digest), so the exports read exactly what the child computed, and it counts its progress
in ``progress.txt`` for the parent's estimate of its time left. If the child fails, the parent
computes the features itself at the first export, as without this job.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import lightning.pytorch as pl

__all__ = ["BackgroundFeatures", "RestoreThreads", "TrainOnChildFeatures", "compute_feature_file"]

JOB_FILE, PROGRESS_FILE, LOG_FILE = "job.json", "progress.txt", "child.log"


def compute_feature_file(job: dict[str, Any], progress_file: Path | None = None) -> None:
    """The child's work: build the stage-3 model of ``job["model_config"]`` (its frozen networks are all
    the features need), open the dataset and fill ``job["directory"]``'s feature cache for it on
    ``job["threads"]`` threads. After every batch ``progress_file`` gets the number of images done."""
    import torch
    from omegaconf import OmegaConf

    from disdiff.config import instantiate_from_config
    from disdiff.data.registry import load_dataset
    from disdiff.evaluation.export import FrozenFeatureCache

    torch.set_num_threads(int(job["threads"]))
    module = instantiate_from_config(OmegaConf.create(job["model_config"])).eval()
    spec = str(job["dataset_spec"])
    dataset = load_dataset(Path(spec) if Path(spec).is_absolute() else spec, data_dir=job.get("data_dir"),
                           **job["dataset_options"])

    def count(done: int, _total: int) -> None:
        if progress_file is not None:
            progress_file.write_text(str(int(done)))

    FrozenFeatureCache(job["directory"], bf16=job["bf16"]).features(
        module.encoder, dataset, int(job["batch_size"]), progress=False, dataset_key=job["dataset_key"],
        on_batch=count)


class BackgroundFeatures:
    """The child process of :func:`compute_feature_file` for ``job`` (its folder is ``job["directory"]``)."""

    def __init__(self, num_images: int, job: dict[str, Any]) -> None:
        self.num_images = int(num_images)
        self.folder = Path(job["directory"])
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / JOB_FILE).write_text(json.dumps(job))
        self.progress_file = self.folder / PROGRESS_FILE
        self.progress_file.unlink(missing_ok=True)
        self.log_file = self.folder / LOG_FILE
        with open(self.log_file, "w") as log:
            self.process = subprocess.Popen([sys.executable, "-m", __name__, str(self.folder / JOB_FILE)],
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.started = time.monotonic()
        self.finished: float | None = None

    @property
    def running(self) -> bool:
        if self.finished is None and self.process.poll() is not None:
            self.finished = time.monotonic()
        return self.finished is None

    @property
    def seconds(self) -> float:
        """How long the child ran (so far, while it runs)."""
        return (time.monotonic() if self.running else self.finished) - self.started

    def images_done(self) -> int:
        try:
            return int(self.progress_file.read_text() or 0)
        except (OSError, ValueError):  # not written yet, or caught mid-write
            return 0

    def seconds_left(self) -> float:
        """The child's remaining time at its rate so far (0 once done; 0 before its first batch, when
        there is no rate yet: a stage that ends that early is short anyway)."""
        if not self.running:
            return 0.0
        done = self.images_done()
        return self.seconds * (self.num_images - done) / done if done > 0 else 0.0

    def stop(self) -> None:
        """End the child if it still runs (its file is written atomically, so nothing half-written stays)."""
        if self.running:
            self.process.terminate()
            self.process.wait()

    def wait(self) -> bool:
        """Wait for the child; True if it wrote the features."""
        self.process.wait()
        return not self.running and self.process.returncode == 0


class RestoreThreads(pl.Callback):
    """Gives training ``threads`` torch threads again once ``job`` is done (checked before every step)."""

    def __init__(self, job: BackgroundFeatures, threads: int) -> None:
        self.job, self.threads = job, int(threads)
        self.restored = False

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        if not self.restored and not self.job.running:
            import torch

            torch.set_num_threads(self.threads)
            self.restored = True


class TrainOnFeatures(pl.Callback):
    """Training reads its images' frozen features from an array of every image's features instead of
    computing them every step, from the first step at which :meth:`ready` is true (checked before every
    step until then; here at once).

    ``open_features(module)`` gives the ``(M, F)`` features of every image for ``module``'s encoder (row
    i = dataset image i), or None when there are none to read (another encoder's, or none computed);
    training then goes on computing them. Why: with ``edge_source: reconstruction`` the features of the
    batch's images (the first stage's decoding, the UNet encoder half) are ~10 % of the small step
    (docs/EXPERIMENTS.md, D65), and the quickstart computes them all for the exports anyway. They are the
    exports' features: under a bf16 autocast where the quickstart's ``--features-bf16`` resolves to it,
    so from that step on the head trains on those rather than on float32 ones (about 3 % relative error
    per image, and a gradient within cosine 0.98-0.997 of the float32 one, D65). ``attached_at`` is the
    global step of the first batch that read them (None: none did).
    """

    def __init__(self, open_features: Callable[[Any], Any]) -> None:
        self.open_features = open_features
        self.checked = False
        self.attached_at: int | None = None

    def ready(self) -> bool:
        return True

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, *args: Any, **kwargs: Any) -> None:
        if self.checked or not self.ready():
            return
        self.checked = True
        features = self.open_features(pl_module)
        if features is None:
            return
        import numpy as np
        import torch

        def lookup(index: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(np.asarray(features[index.cpu().numpy()], dtype=np.float32))

        pl_module.x0_feature_lookup = lookup
        self.attached_at = int(trainer.global_step)

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        pl_module.x0_feature_lookup = None  # the features go with the first export


class TrainOnChildFeatures(TrainOnFeatures):
    """:class:`TrainOnFeatures` on the file of the features process ``job``, once it is done."""

    def __init__(self, job: BackgroundFeatures, open_features: Callable[[Any], Any]) -> None:
        super().__init__(open_features)
        self.job = job

    def ready(self) -> bool:
        return not self.job.running


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m disdiff.pipeline.background_features JOB.json", file=sys.stderr)
        return 2
    job_file = Path(argv[0])
    job = json.loads(job_file.read_text())
    compute_feature_file(job, job_file.parent / PROGRESS_FILE)
    print(f"features of {job['dataset_spec']} written to {job['directory']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
