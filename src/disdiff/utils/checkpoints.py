"""Checkpoint files on disk: read without running pickled code, and find a run's resume point.

Plain torch and file-system code, with no Lightning in it, so that every layer (models, inference,
the API, the pipeline) can read checkpoints without importing the training layer.
"""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from disdiff.config import ConfigError

log = logging.getLogger(__name__)

STEP_FILE = re.compile(r"^step=(\d+)\.ckpt$")


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
    except pickle.UnpicklingError as exc:
        found = re.search(r"[Uu]nsupported(?: global:)? GLOBAL ([\w.]+)", str(exc))
        what = f" (it refers to {found.group(1)})" if found else ""
        raise ConfigError(
            f"refusing checkpoint {path}: it holds Python objects other than tensors and plain data{what}; "
            "checkpoints are loaded with torch.load(weights_only=True), so an untrusted file cannot run code"
        ) from exc
    except Exception as exc:  # truncated zip, not a torch file, ...
        raise ConfigError(
            f"cannot load checkpoint {path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
            "(checkpoints are loaded with weights_only=True; the file may be truncated or not a checkpoint)"
        ) from exc
    if not isinstance(checkpoint, dict):
        raise ConfigError(f"checkpoint {path} does not hold a dict of weights (found {type(checkpoint).__name__})")
    return checkpoint


def checkpoint_step(path: str | Path) -> int:
    """``global_step`` stored in a checkpoint (read lazily through a memory map)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        checkpoint = load_checkpoint_file(path)
    return int(checkpoint.get("global_step", 0)) if isinstance(checkpoint, dict) else 0


def latest_checkpoint(checkpoint_dir: str | Path) -> Path:
    """The resume point of a run: ``last.ckpt``, unless a ``step=N.ckpt`` holds a later step.

    Every save writes ``step=N.ckpt`` first and ``last.ckpt`` second; a run killed between the two
    leaves ``last.ckpt`` one save behind. Returns ``<dir>/last.ckpt`` when nothing is saved yet.
    """
    checkpoint_dir = Path(checkpoint_dir)
    last = checkpoint_dir / "last.ckpt"
    steps = [(int(m.group(1)), p) for p in checkpoint_dir.glob("step=*.ckpt") if (m := STEP_FILE.match(p.name))]
    if not steps:
        return last
    newest_step, newest = max(steps)
    if not last.is_file():
        return newest
    last_step = checkpoint_step(last)
    if newest_step > last_step:
        log.warning("%s (step %d) is older than %s: the previous run stopped while checkpointing; resuming from %s",
                    last, last_step, newest.name, newest.name)
        return newest
    return last
