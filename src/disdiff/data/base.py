"""The ground-truth dataset interface every other layer stands on.

A ground-truth dataset is a finite grid of images, one per combination of discrete factor
values (for CelebA: one per image, with attributes). Images are stored in a *canonical order*:
row-major over the factors in ``factor_names`` order, the last factor varying fastest, unless a
dataset documents otherwise. ``index_of`` and ``factors_of`` convert between the two views.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np
import torch


class DatasetError(ValueError):
    """A dataset file is missing, malformed, or does not match the expected format."""


def as_rng(rng: np.random.RandomState | np.random.Generator | int | None) -> np.random.RandomState:
    """Accept a seed or a RandomState (disentanglement_lib's convention) and return a RandomState."""
    if isinstance(rng, np.random.RandomState):
        return rng
    if isinstance(rng, np.random.Generator):
        return np.random.RandomState(rng.integers(0, 2**31 - 1))
    return np.random.RandomState(rng)


class GroundTruthDataset(ABC, torch.utils.data.Dataset):
    """A dataset with discrete ground-truth factors of variation.

    Subclasses provide ``factor_names``, ``factor_sizes``, ``image_shape`` (H, W, C) and
    ``_read_images(indices)`` returning uint8 (n, H, W, C) in index order. Everything else,
    including the index arithmetic, is shared here.

    Items (``dataset[i]``) are ``(image, factors)``: a float32 CHW tensor in [-1, 1] and an
    int64 tensor of factor classes.
    """

    factor_names: tuple[str, ...]
    factor_sizes: tuple[int, ...]
    image_shape: tuple[int, int, int]  # (H, W, C)
    #: Human-readable origin, e.g. the file path it is read from.
    source: str = ""
    #: False for datasets that are a plain image collection (CelebA: one pseudo-factor "image"),
    #: on which factor-based metrics are meaningless.
    is_factor_grid: bool = True

    # ------------------------------------------------------------------ storage
    @abstractmethod
    def _read_images(self, indices: np.ndarray) -> np.ndarray:
        """uint8 array (n, H, W, C) of the images at canonical ``indices`` (in that order)."""

    # ------------------------------------------------------------- factor maths
    @property
    def num_factors(self) -> int:
        return len(self.factor_sizes)

    @property
    def num_images(self) -> int:
        return int(np.prod(self.factor_sizes, dtype=np.int64))

    def __len__(self) -> int:
        return self.num_images

    @property
    def factor_bases(self) -> np.ndarray:
        """Strides of the row-major index: index = sum_i factors[i] * bases[i]."""
        sizes = np.asarray(self.factor_sizes, dtype=np.int64)
        return np.concatenate([np.cumprod(sizes[::-1])[::-1][1:], [1]]).astype(np.int64)

    def index_of(self, factors: np.ndarray | Sequence[int]) -> np.ndarray:
        """Canonical image index of each factor row (shape (n, K) -> (n,), or (K,) -> ())."""
        factors = np.asarray(factors, dtype=np.int64)
        if factors.shape[-1] != self.num_factors:
            raise ValueError(f"expected factors with {self.num_factors} columns {self.factor_names}, got shape {factors.shape}")
        sizes = np.asarray(self.factor_sizes)
        if np.any(factors < 0) or np.any(factors >= sizes):
            raise ValueError(f"factor values out of range for sizes {self.factor_sizes}")
        return factors @ self.factor_bases

    def factors_of(self, index: np.ndarray | int) -> np.ndarray:
        """Factor classes of canonical image indices ((n,) -> (n, K), or () -> (K,))."""
        index = np.asarray(index, dtype=np.int64)
        if np.any(index < 0) or np.any(index >= self.num_images):
            raise IndexError(f"image index out of range [0, {self.num_images})")
        return (index[..., None] // self.factor_bases) % np.asarray(self.factor_sizes, dtype=np.int64)

    def sample_factors(self, n: int, rng: np.random.RandomState | int | None) -> np.ndarray:
        """n factor vectors, each factor uniform over its values and independent: (n, K) int64."""
        rng = as_rng(rng)
        return np.stack([rng.randint(size, size=n) for size in self.factor_sizes], axis=1).astype(np.int64)

    # -------------------------------------------------------------- observations
    def images_uint8(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """uint8 (n, H, W, C) images at canonical indices."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= self.num_images):
            raise IndexError(f"image index out of range [0, {self.num_images})")
        return self._read_images(indices)

    def images(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """float32 (n, C, H, W) images in [-1, 1] at canonical indices."""
        return uint8_to_model_range(self.images_uint8(indices))

    def sample_observations_from_factors(self, factors: np.ndarray, rng: np.random.RandomState | int | None = None) -> np.ndarray:
        """Images (n, C, H, W) float32 in [-1, 1] for the given factor rows.

        ``rng`` is accepted for interface compatibility (datasets with nuisance factors would
        use it); for a complete factor grid the lookup is deterministic.
        """
        return self.images(self.index_of(factors))

    def sample(self, n: int, rng: np.random.RandomState | int | None) -> tuple[np.ndarray, np.ndarray]:
        rng = as_rng(rng)
        factors = self.sample_factors(n, rng)
        return factors, self.sample_observations_from_factors(factors, rng)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(self.images([index])[0])
        return image, torch.from_numpy(self.factors_of(index))

    def describe(self) -> dict:
        return {
            "name": type(self).__name__,
            "factor_names": list(self.factor_names),
            "factor_sizes": [int(s) for s in self.factor_sizes],
            "num_images": self.num_images,
            "image_shape": list(self.image_shape),
            "source": self.source,
        }


def uint8_to_model_range(images: np.ndarray) -> np.ndarray:
    """uint8 (n, H, W, C) -> float32 (n, C, H, W) in [-1, 1]."""
    return (np.ascontiguousarray(images.transpose(0, 3, 1, 2)).astype(np.float32) / 127.5) - 1.0


def model_range_to_uint8(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """float (n, C, H, W) in [-1, 1] -> uint8 (n, H, W, C), clamping out-of-range values."""
    if isinstance(images, torch.Tensor):
        images = images.detach().float().cpu().numpy()
    scaled = np.clip((images + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    return scaled.transpose(0, 2, 3, 1)
