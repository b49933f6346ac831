"""Views of a ground-truth dataset whose observations are canonical indices, not images.

To score precomputed representations (one row per dataset image, in canonical order) no image
is needed: the metrics only sample factors, turn them into "observations", and pass those to a
representation function. :class:`IndexObservations` makes the observation of a factor vector its
canonical index (the original did the same with ``images=np.arange(M)``), and
:class:`LatentLookup` is the representation function that returns those rows of a
representation matrix.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from disdiff.data.base import GroundTruthDataset, as_rng


class IndexObservations(GroundTruthDataset):
    """A factor grid (names and sizes only) whose observations are int64 canonical indices.

    Factors are sampled uniformly and independently per factor (``GroundTruthDataset.sample_factors``,
    i.e. disentanglement_lib's state space), so the random stream is consumed exactly as for the
    real dataset. Picklable and tiny, so it can be sent to worker processes.
    """

    observations_use_rng = False

    def __init__(self, factor_sizes: Sequence[int], factor_names: Sequence[str] | None = None, source: str = ""):
        self.factor_sizes = tuple(int(s) for s in factor_sizes)
        if not self.factor_sizes or min(self.factor_sizes) < 1:
            raise ValueError(f"factor sizes must be positive, got {factor_sizes}")
        self.factor_names = tuple(factor_names) if factor_names is not None else tuple(
            f"factor_{i}" for i in range(len(self.factor_sizes)))
        if len(self.factor_names) != len(self.factor_sizes):
            raise ValueError("factor_names and factor_sizes differ in length")
        self.image_shape = (1, 1, 1)
        self.source = source
        self._bases = self.factor_bases

    @classmethod
    def of(cls, dataset: GroundTruthDataset) -> "IndexObservations":
        return cls(dataset.factor_sizes, dataset.factor_names, getattr(dataset, "source", ""))

    def _read_images(self, indices: np.ndarray) -> np.ndarray:
        raise NotImplementedError("IndexObservations has no images; its observations are indices")

    def sample_factors(self, n: int, rng) -> np.ndarray:
        """Same values and random-stream use as ``GroundTruthDataset.sample_factors``, with less overhead."""
        rng = as_rng(rng)
        out = np.empty((n, len(self.factor_sizes)), dtype=np.int64)
        for k, size in enumerate(self.factor_sizes):
            out[:, k] = rng.randint(size, size=n)
        return out

    def sample_observations_from_factors(self, factors: np.ndarray, rng=None) -> np.ndarray:
        """Canonical indices of the factor rows (the metrics only pass rows drawn by ``sample_factors``)."""
        return np.asarray(factors, dtype=np.int64) @ self._bases


class LatentLookup:
    """Representation function returning rows of ``representations`` (M, J) for index observations."""

    def __init__(self, representations: np.ndarray):
        self.representations = np.asarray(representations)

    def __call__(self, indices: np.ndarray) -> np.ndarray:
        return self.representations[np.asarray(indices, dtype=np.int64)]
