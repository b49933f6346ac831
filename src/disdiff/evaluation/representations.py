"""Representation files: loading, validation, and the per-unit PCA reduction of the paper.

A representations file is an ``.npz`` with

* ``latents``: float (M, N, d), one row per dataset image **in the dataset's canonical order**,
  N latent units of size d (a 2-d (M, D) array is read as D units of size 1, or as N units of
  size D/N with ``num_units=N``);
* ``global_step`` (int, optional): the training step; the original's files call it
  ``num_samples``.

Every problem raises :class:`RepresentationError` naming the file: a missing key, a wrong shape,
NaN/inf values (with the first bad row), or a row count that differs from the dataset size (a
mismatch would silently pair representations with the wrong factors, so it is always an error).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from disdiff.data.base import DatasetError

STEP_PATTERN = re.compile(r"step=(\d+)")
REDUCTIONS = ("pca", "none")


class RepresentationError(DatasetError):
    """A representations file is missing, malformed, or does not fit the dataset."""


@dataclass
class Representations:
    latents: np.ndarray  # (M, N, d)
    step: int | None
    path: Path

    @property
    def num_rows(self) -> int:
        return int(self.latents.shape[0])

    @property
    def num_units(self) -> int:
        return int(self.latents.shape[1])

    @property
    def unit_size(self) -> int:
        return int(self.latents.shape[2])


def step_from_name(path: str | Path) -> int | None:
    match = STEP_PATTERN.search(Path(path).name)
    return int(match.group(1)) if match else None


def read_step(path: str | Path) -> int | None:
    """The training step of a representations file: from its name (``step=N``), else its contents."""
    step = step_from_name(path)
    if step is not None:
        return step
    try:
        with np.load(path) as data:
            for key in ("global_step", "num_samples", "step"):
                if key in data.files:
                    return int(np.asarray(data[key]).reshape(-1)[0])
    except (OSError, ValueError, EOFError) as exc:
        raise RepresentationError(f"{path}: cannot read representations file ({exc})") from exc
    return None


def check_finite(latents: np.ndarray, path: str | Path) -> None:
    """Raise naming the first row with a NaN or inf value."""
    flat = latents.reshape(latents.shape[0], -1)
    chunk = 65536
    for start in range(0, flat.shape[0], chunk):
        block = flat[start:start + chunk]
        bad = ~np.isfinite(block).all(axis=1)
        if bad.any():
            row = start + int(np.flatnonzero(bad)[0])
            count = int((~np.isfinite(flat).all(axis=1)).sum())
            raise RepresentationError(f"{path}: latents contain NaN or inf values: first bad row {row} "
                                      f"({count} bad row(s) of {flat.shape[0]})")


def shape_latents(latents: np.ndarray, path: str | Path, num_units: int | None = None) -> np.ndarray:
    """Bring latents to (M, N, d); a 2-d array is split into ``num_units`` units (default: one per column)."""
    latents = np.asarray(latents)
    if latents.ndim == 2:
        total = latents.shape[1]
        n = total if num_units is None else int(num_units)
        if n <= 0 or total % n:
            raise RepresentationError(f"{path}: latents have {total} columns, not divisible into {num_units} units")
        latents = latents.reshape(latents.shape[0], n, total // n)
    elif latents.ndim == 3:
        if num_units is not None and latents.shape[1] != int(num_units):
            if latents.shape[1] * latents.shape[2] % int(num_units):
                raise RepresentationError(f"{path}: latents {latents.shape} cannot be split into {num_units} units "
                                          f"(N*d = {latents.shape[1] * latents.shape[2]})")
            latents = latents.reshape(latents.shape[0], int(num_units), -1)
    else:
        raise RepresentationError(f"{path}: 'latents' must have shape (M, N, d) (or (M, D)), got {latents.shape}")
    if latents.shape[0] == 0 or latents.shape[1] == 0 or latents.shape[2] == 0:
        raise RepresentationError(f"{path}: 'latents' is empty, shape {latents.shape}")
    if not np.issubdtype(latents.dtype, np.number) or np.issubdtype(latents.dtype, np.complexfloating):
        raise RepresentationError(f"{path}: 'latents' must be real numbers, got dtype {latents.dtype}")
    return latents


def load_representations(path: str | Path, num_units: int | None = None) -> Representations:
    """Read and validate (shape, finiteness) one representations file."""
    path = Path(path)
    if not path.is_file():
        raise RepresentationError(f"{path}: representations file not found")
    try:
        with np.load(path) as data:
            if "latents" not in data.files:
                raise RepresentationError(f"{path}: no 'latents' array (found {sorted(data.files)}); expected "
                                          "'latents' of shape (M, N, d) in the dataset's canonical order")
            latents = data["latents"]
            step = None
            for key in ("global_step", "num_samples", "step"):
                if key in data.files:
                    step = int(np.asarray(data[key]).reshape(-1)[0])
                    break
    except RepresentationError:
        raise
    except (OSError, ValueError, EOFError, KeyError) as exc:
        raise RepresentationError(f"{path}: cannot read representations file ({type(exc).__name__}: {exc})") from exc
    name_step = step_from_name(path)
    latents = shape_latents(latents, path, num_units)
    check_finite(latents, path)
    return Representations(latents=latents, step=name_step if name_step is not None else step, path=path)


def check_matches_dataset(reps: Representations, num_images: int, dataset_label: str) -> None:
    if reps.num_rows != int(num_images):
        raise RepresentationError(
            f"{reps.path}: latents have {reps.num_rows} rows but dataset {dataset_label} has {num_images} images; "
            "row i must be the representation of image i in canonical order (export the whole dataset, unshuffled, "
            "with the same factor sizes)")


def reduce_units(latents: np.ndarray, reduction: str = "pca") -> np.ndarray:
    """(M, N, d) -> representation matrix.

    ``"pca"`` (the paper's protocol, default): for each unit, fit ``sklearn PCA(n_components=1)``
    on all M vectors of that unit and keep the projection on the first component, giving (M, N).
    ``"none"``: keep every dimension, (M, N*d).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    m, n, d = latents.shape
    if reduction == "none":
        return np.asarray(latents, dtype=np.float64).reshape(m, n * d)
    from sklearn.decomposition import PCA

    out = np.empty((m, n), dtype=np.float64)
    for k in range(n):
        unit = np.asarray(latents[:, k, :], dtype=np.float64)
        if np.ptp(unit, axis=0).max() == 0.0:
            out[:, k] = 0.0  # a constant unit carries nothing; PCA would divide by zero variance
            continue
        out[:, k] = PCA(n_components=1).fit_transform(unit)[:, 0]
    return out
