"""Lightning's checkpoint IO for disdiff runs: written atomically, read without running pickled code.

Reading, the step of a file and the resume point live in :mod:`disdiff.utils.checkpoints`
(re-exported here for the training code).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from disdiff.utils.checkpoints import STEP_FILE, checkpoint_step, latest_checkpoint, load_checkpoint_file
from disdiff.utils.io import atomic_save_with

__all__ = ["AtomicCheckpointIO", "STEP_FILE", "checkpoint_step", "latest_checkpoint", "load_checkpoint_file"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that never leaves a half-written file and loads safely.

    A checkpoint is written to a temporary file in the same folder and renamed over the target,
    so a kill or a full disk during the write leaves the previous checkpoint intact.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
        atomic_save_with(path, lambda tmp: torch.save(checkpoint, tmp))

    def load_checkpoint(
        self, path: Any, map_location: Optional[Callable] = lambda storage, loc: storage, weights_only: Optional[bool] = None
    ) -> dict[str, Any]:
        return load_checkpoint_file(path, map_location=map_location)
