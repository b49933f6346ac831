"""Checkpoint files: written atomically, read without running pickled code."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from disdiff.config import ConfigError
from disdiff.utils.io import atomic_save_with


def load_checkpoint_file(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load(weights_only=True)``: an untrusted file can hold tensors and plain containers only.

    Raises ConfigError (naming the file) when the file is missing, truncated, or holds anything
    other than weights and plain data.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint file not found: {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle refusal, truncated zip, ...
        raise ConfigError(
            f"cannot load checkpoint {path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
            "(checkpoints are loaded with weights_only=True; files holding arbitrary Python objects are refused)"
        ) from exc
    if not isinstance(checkpoint, dict):
        raise ConfigError(f"checkpoint {path} does not hold a dict of weights (found {type(checkpoint).__name__})")
    return checkpoint


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
