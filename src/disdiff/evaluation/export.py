"""Representations of a whole dataset for the metrics: encode every image, in canonical order.

Library side of ``disdiff export`` (the command adds argument parsing), used by the quickstart too.
The model is anything with ``encode(images, batch_size)`` returning a (B, N, d) tensor and
``num_units``/``unit_dim`` (:class:`disdiff.api.DisDiff`).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from disdiff.utils.io import atomic_save_npz, atomic_save_with

if TYPE_CHECKING:
    from disdiff.utils.precision import Bf16Setting


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


def dataset_cache_key(name: str, options: dict[str, Any], data_dir: str | Path | None = None) -> str:
    """A short digest naming a dataset, its options and (if given) the folder it is read from, in a
    feature-cache file name: the same dataset name read from two ``--data-dir`` folders gets two keys.
    Without ``data_dir`` the key is what it was before that argument existed (old cache files stay valid)."""
    spec: dict[str, Any] = {"dataset": str(name), "options": options}
    if data_dir is not None:
        spec["data_dir"] = str(Path(data_dir).expanduser().resolve())
    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


class FrozenFeatureCache:
    """The frozen features of one dataset's images, kept for the next export.

    For an image encoder that is a trained head on frozen networks' features
    (:class:`disdiff.models.dpm_feature_encoder.DPMFeatureEncoder`), every checkpoint of a run shares
    the features; only the head differs. The first export through this cache computes and keeps them
    (M x F float32 in memory: 1.0 GB for shapes3d-synth's 480,000 images and 544 features), later
    exports run only the heads. The cache holds one dataset and one feature digest at a time;
    ``fill_seconds`` is what computing the features took (the one-off part of the first export).

    With a ``directory`` (``disdiff export --feature-cache DIR``) and a ``dataset_key``, the features
    are also kept on disk as ``DIR/features-<dataset key>-<feature digest>-<M>.npy`` (float32, written
    atomically) and memory-mapped by later processes, so that exporting many checkpoints of one run,
    or of several runs on the same stage 2, computes them once. The file name carries the dataset's name
    and options, its size and a digest of every frozen weight, so a file is not picked up for other
    frozen networks, dataset options or data folder (:func:`dataset_cache_key`).

    ``bf16`` (``True``, ``False`` or ``"auto"``, :func:`disdiff.utils.precision.resolve_bf16`)
    computes the features under a bfloat16 autocast; they are kept as float32 and the heads still run
    in float32. On a 2-core AMD EPYC with native bf16 that is 1.9x the float32 throughput, with a
    relative error of 0.5% in the features, and the codes of a trained head then score the same
    metrics to the third decimal (docs/EXPERIMENTS.md D36, D36b). Training reads such a file only in
    the quickstart, once its features process is done (``child_features_in_training``, D65); ``disdiff
    train`` never does, so its numerics are the published ones. bf16 features are kept apart from float32 ones
    (in memory and on disk: ``-bf16`` in the file name); ``used_bf16`` says which the last call gave.
    """

    def __init__(self, directory: str | Path | None = None, bf16: Bf16Setting = False) -> None:
        from disdiff.utils.precision import check_bf16_setting  # imports torch: not at module import

        self.directory = Path(directory) if directory is not None else None
        self.bf16 = check_bf16_setting(bf16, "bf16")
        self._key: tuple[int, str, bool] | None = None
        self._features: np.ndarray | None = None
        self.fill_seconds = 0.0
        self.loaded_from: Path | None = None

    @property
    def used_bf16(self) -> bool:
        """Whether the features the cache holds were computed under the bf16 autocast."""
        return self._key is not None and self._key[2]

    def file_for(self, dataset_key: str, fingerprint: str, num_images: int, bf16: bool = False) -> Path | None:
        """The on-disk file of one dataset's features under one digest (None without a directory)."""
        if self.directory is None:
            return None
        precision = "-bf16" if bf16 else ""
        return self.directory / f"features-{dataset_key}-{fingerprint[:16]}{precision}-{int(num_images)}.npy"

    def features(self, encoder: Any, dataset: Any, batch_size: int, progress: bool,
                 dataset_key: str | None = None, on_batch: Callable[[int, int], None] | None = None) -> np.ndarray:
        """``(M, F)`` features of every image of ``dataset`` by ``encoder.features`` (computed once per digest).

        ``on_batch(done, M)`` is called after every computed batch (a pipeline's progress line)."""
        from disdiff.utils.precision import resolve_bf16

        fingerprint = encoder.features_fingerprint()
        bf16 = resolve_bf16(self.bf16, next(encoder.parameters()).device)
        key = (id(dataset), fingerprint, bf16)
        if self._key == key and self._features is not None:
            return self._features
        self._key, self._features, self.loaded_from = None, None, None  # free the old array first
        M = len(dataset)
        path = self.file_for(dataset_key, fingerprint, M, bf16) if dataset_key is not None else None
        if path is not None and path.is_file():
            features = self.read_file(path, M)
            self._key, self._features, self.loaded_from, self.fill_seconds = key, features, path, 0.0
            return features
        start = time.monotonic()
        features = self._compute(encoder, dataset, batch_size, progress, on_batch, bf16)
        self.fill_seconds = time.monotonic() - start
        if path is not None:
            atomic_save_with(path, lambda tmp: np.save(tmp, features), suffix=".tmp.npy")
        self._key, self._features = key, features
        return features

    def held(self, encoder: Any) -> np.ndarray | None:
        """The features this cache holds if they are ``encoder``'s (same digest and precision), else None.

        Never computes anything, unlike :meth:`features`."""
        from disdiff.utils.precision import resolve_bf16

        if self._key is None or self._features is None:
            return None
        bf16 = resolve_bf16(self.bf16, next(encoder.parameters()).device)
        return self._features if self._key[1:] == (encoder.features_fingerprint(), bf16) else None

    @staticmethod
    def read_file(path: Path, num_images: int) -> np.ndarray:
        """A features file memory-mapped, checked to hold float32 ``(num_images, F)``; OSError otherwise."""
        try:
            features = np.load(path, mmap_mode="r")
        except (ValueError, EOFError) as exc:  # not an .npy file, or a truncated one
            raise OSError(f"feature cache {path}: cannot be read ({exc}); delete the file to recompute it") from exc
        if features.ndim != 2 or features.shape[0] != num_images or features.dtype != np.float32:
            raise OSError(f"feature cache {path}: holds {features.dtype} {features.shape}, expected float32 "
                          f"({num_images}, F); delete the file to recompute it")
        return features

    @staticmethod
    def _compute(encoder: Any, dataset: Any, batch_size: int, progress: bool,
                 on_batch: Callable[[int, int], None] | None = None, bf16: bool = False) -> np.ndarray:
        import torch
        from tqdm.auto import tqdm

        device = next(encoder.parameters()).device
        M, out = len(dataset), None
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            for begin in tqdm(range(0, M, int(batch_size)), desc="features", unit="batch", disable=not progress,
                              file=sys.stderr):
                idx = np.arange(begin, min(begin + int(batch_size), M))
                feats = encoder.features(torch.as_tensor(dataset.images(idx), device=device)).float().cpu().numpy()
                if out is None:
                    out = np.empty((M, feats.shape[1]), dtype=np.float32)
                out[idx] = feats
                if on_batch is not None:
                    on_batch(int(idx[-1]) + 1, M)
        return out


def export_representations(model: Any, dataset: Any, batch_size: int = 256, progress: bool = True,
                           feature_cache: FrozenFeatureCache | None = None,
                           dataset_key: str | None = None) -> np.ndarray:
    """Latents (M, N, d) float32 of every dataset image, row i = canonical image i.

    With ``feature_cache``, an encoder that has ``code_from_features`` (a head on frozen features)
    reads its features from the cache and runs only its head; any other encoder ignores the cache.
    ``dataset_key`` (:func:`dataset_cache_key`) lets a cache with a directory keep them on disk.
    """
    from tqdm.auto import tqdm

    M = len(dataset)
    out = np.empty((M, model.num_units, model.unit_dim), dtype=np.float32)
    encoder = getattr(getattr(model, "module", None), "encoder", None)
    if feature_cache is not None and hasattr(encoder, "code_from_features"):
        import torch

        model.module.eval()
        features = feature_cache.features(encoder, dataset, batch_size, progress, dataset_key)
        device = next(encoder.parameters()).device
        with torch.no_grad():
            for start in range(0, M, int(batch_size)):
                idx = slice(start, min(start + int(batch_size), M))
                # torch.tensor copies: the features may be a read-only memory map of the disk cache.
                code = encoder.code_from_features(torch.tensor(features[idx], device=device))
                out[idx] = code.reshape(-1, model.num_units, model.unit_dim).cpu().numpy()
        return out
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
