"""Shared by the diagnostics in this folder: a fixed random sample of shapes3d-synth and its codes.

    from synth_sample import random_sample, factor_probe, scaled_factors   # scripts run as python experiments/X.py
"""
from __future__ import annotations

import numpy as np
import torch

from disdiff.data.base import GroundTruthDataset
from disdiff.data.registry import load_dataset
from disdiff.metrics.probe import probe_accuracy


def random_sample(n: int, seed: int = 0, resolution: int = 32) -> tuple[GroundTruthDataset, np.ndarray, torch.Tensor]:
    """``(dataset, factors (n, K), images (n, 3, H, W) float)``: n random grid points from ``RandomState(seed)``."""
    data = load_dataset("shapes3d-synth", resolution=resolution)
    rng = np.random.RandomState(seed)
    factors = data.sample_factors(n, rng)
    return data, factors, torch.from_numpy(data.sample_observations_from_factors(factors, rng)).float()


@torch.no_grad()
def encode_in_chunks(fn, images: torch.Tensor, chunk: int = 500) -> torch.Tensor:
    """``fn`` applied to ``images`` in chunks of ``chunk``, concatenated (bounded memory)."""
    return torch.cat([fn(x) for x in images.split(chunk)])


def factor_probe(features: np.ndarray, factors: np.ndarray, n_train: int) -> list[float]:
    """Per factor, the linear probe's test accuracy: trained on the first ``n_train`` rows, tested on the rest."""
    return [probe_accuracy(features[:n_train], factors[:n_train, k], features[n_train:], factors[n_train:, k],
                           max_iter=300)[0] for k in range(factors.shape[1])]


def scaled_factors(factors: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """(n, K) factor indices mapped linearly onto [-1, 1] per factor (the oracle codes' units)."""
    return 2.0 * factors / np.maximum(np.asarray(sizes, dtype=np.float64) - 1.0, 1.0) - 1.0
