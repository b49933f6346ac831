"""Representations of a whole dataset for the metrics: encode every image, in canonical order.

Library side of ``disdiff export`` (the command adds argument parsing), used by the quickstart too.
The model is anything with ``encode(images, batch_size)`` returning a (B, N, d) tensor and
``num_units``/``unit_dim`` (:class:`disdiff.api.DisDiff`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from disdiff.utils.io import atomic_save_npz


def run_dataset_spec(run_dir: Path | None) -> tuple[str | None, dict[str, Any], str | None]:
    """(dataset name, options, data_dir) a run was trained on, from its saved config (if any)."""
    if run_dir is None:
        return None, {}, None
    path = Path(run_dir) / "configs" / "config.yaml"
    if not path.is_file():
        return None, {}, None
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    params = ((config or {}).get("data") or {}).get("params") or {}
    name = params.get("dataset")
    return (str(name) if name is not None else None, dict(params.get("dataset_options") or {}), params.get("data_dir"))


def export_representations(model: Any, dataset: Any, batch_size: int = 256, progress: bool = True) -> np.ndarray:
    """Latents (M, N, d) float32 of every dataset image, row i = canonical image i."""
    from tqdm.auto import tqdm

    M = len(dataset)
    out = np.empty((M, model.num_units, model.unit_dim), dtype=np.float32)
    starts = range(0, M, int(batch_size))
    for start in tqdm(starts, desc="export", unit="batch", disable=not progress, file=sys.stderr):
        idx = np.arange(start, min(start + int(batch_size), M))
        z = model.encode(dataset.images(idx), batch_size=len(idx))
        out[idx] = z.detach().cpu().numpy().astype(np.float32)
    return out


def save_representations(path: str | Path, latents: np.ndarray, step: int, dataset_name: str, dataset: Any) -> Path:
    """Write the npz ``disdiff evaluate`` reads (atomically): latents, step, dataset name and factor sizes."""
    path = Path(path)
    atomic_save_npz(path, latents=latents, global_step=np.int64(step), dataset=np.str_(dataset_name),
                    factor_sizes=np.asarray(dataset.factor_sizes, dtype=np.int64))
    return path
