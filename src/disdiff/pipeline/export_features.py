"""Where the quickstart's exports get the frozen features of every image, and how long the file lives.

An image encoder that is a head on frozen networks (``backbone: dpm``) needs the same frozen features
of the whole dataset for every export of a run. They are computed once, in one of three places:

- in a child process on one thread while stage 3 trains (:mod:`disdiff.pipeline.background_features`),
  into a file in the run's ``feature-cache`` folder that the first export waits for and memory-maps;
- here, just before stage 3 trains (one thread, or ``--background-features false``), kept in memory;
- by the first export, when neither happened (stage 3 trained by an earlier invocation, or the child
  failed).

The folder is deleted as soon as an export holds the features (2.9 GB for shapes3d-synth with edge
features); a failed run ends its child.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

from disdiff.evaluation.export import FrozenFeatureCache
from disdiff.pipeline.background_features import BackgroundFeatures
from disdiff.pipeline.progress import format_minutes

__all__ = ["ExportFeatures"]


class ExportFeatures:
    """The frozen-feature cache of one quickstart run, and the child process that may fill it.

    ``folder`` is the run's feature-cache folder (the child's file, job and log); ``bf16`` the
    ``--features-bf16`` setting. Methods that have something to tell the report return it as a sentence.
    """

    def __init__(self, folder: Path, bf16: Any) -> None:
        self.folder = Path(folder)
        self.cache = FrozenFeatureCache(bf16=bf16)
        #: True once the features were computed (or are being computed) before any export, so no
        #: export's time includes their one-off computation.
        self.precomputed = False
        #: The child process computing them while stage 3 trains.
        self.job: BackgroundFeatures | None = None

    @property
    def child_running(self) -> bool:
        return self.job is not None and self.job.running

    def compute_now(self, encoder: Any, dataset: Any, batch_size: int,
                    on_batch: Callable[[int, int], None] | None = None) -> str | None:
        """Compute the features here (kept in memory for the exports); a note if under bf16."""
        self.cache.features(encoder, dataset, batch_size, progress=False, on_batch=on_batch)
        self.precomputed = True
        if self.cache.used_bf16:
            return ("The exports' frozen features were computed under a bf16 autocast (the heads in float32; "
                    "training is not affected): `--features-bf16 false` keeps them float32.")
        return None

    def start_child(self, num_images: int, job: dict[str, Any]) -> None:
        """Start the child on ``job`` (:func:`disdiff.pipeline.background_features.compute_feature_file`'s
        fields but ``directory`` and ``bf16``, which are this object's)."""
        self.cache.directory = self.folder
        self.job = BackgroundFeatures(num_images, {**job, "directory": str(self.folder), "bf16": self.cache.bf16})
        self.precomputed = True

    def child_features(self, encoder: Any, dataset_key: str, num_images: int) -> np.ndarray | None:
        """The child's features of every image for ``encoder``, memory-mapped, once it has written them
        successfully; None while it runs, if it failed, or if its file is not for ``encoder``."""
        from disdiff.utils.precision import resolve_bf16

        if self.job is None or self.job.running or self.job.process.returncode != 0:
            return None
        bf16 = resolve_bf16(self.cache.bf16, next(encoder.parameters()).device)
        path = self.cache.file_for(dataset_key, encoder.features_fingerprint(), num_images, bf16)
        if path is None or not path.is_file():
            return None
        try:
            return self.cache.read_file(path, num_images)
        except OSError:  # training goes on computing them; the export reports the file's fault
            return None

    def collect(self, num_images: int) -> str | None:
        """Before an export: wait for the child; if it failed, the export computes the features itself.
        Returns the report's note about the child, if one ran in this invocation."""
        job, self.job = self.job, None
        if job is None:
            if self.folder.is_dir():  # an earlier invocation's child: its file, if it finished
                self.cache.directory = self.folder
            return None
        if job.wait():
            return (f"The exports' frozen features were computed in a second process on one thread while stage 3 "
                    f"trained ({num_images} images in {format_minutes(job.seconds)}).")
        self.precomputed = False
        self.cache.directory = None  # computed by the export, kept in memory as without the child
        return (f"The frozen-features process failed (exit code {job.process.returncode}, see {job.log_file}); "
                "the final export computed them.")

    def drop_file(self) -> None:
        """Delete the folder once an export has the features: the cache keeps the file memory-mapped for
        the other exports (or holds them in memory); the child's job and log files go with it."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def stop(self) -> None:
        """End the child if it still runs (a failed run leaves no child computing for nobody)."""
        if self.job is not None:
            self.job.stop()
