"""The linear probe (disdiff.metrics.probe) on analytic cases, and its place in evaluate's record."""

from __future__ import annotations

import numpy as np
import pytest

from disdiff.evaluation.protocol import DatasetInfo, probe_code
from disdiff.evaluation.views import IndexObservations, LatentLookup
from disdiff.metrics import probe
from disdiff.metrics.utils import MetricError

SIZES = (4, 5, 3)
NAMES = ("a", "b", "c")


def _grid_factors() -> np.ndarray:
    return np.stack(np.meshgrid(*[np.arange(s) for s in SIZES], indexing="ij"), -1).reshape(-1, len(SIZES))


def _one_hot_units(unit_dim: int = 6) -> np.ndarray:
    """Unit k holds a one-hot code of factor k (zero padded): a perfect, disentangled code."""
    factors = _grid_factors()
    latents = np.zeros((len(factors), len(SIZES), unit_dim), dtype=np.float32)
    for k, size in enumerate(SIZES):
        latents[np.arange(len(factors)), k, factors[:, k]] = 1.0
    return latents


def _info() -> DatasetInfo:
    return DatasetInfo("grid", int(np.prod(SIZES)), NAMES, SIZES)


def test_true_factors_score_one_and_each_unit_knows_only_its_factor():
    result = probe_code(_one_hot_units(), _info(), settings={"num_train": 600, "num_test": 300})
    assert result["factors"] == list(NAMES)
    np.testing.assert_allclose(result["accuracy"], 1.0)
    units = np.asarray(result["unit_accuracy"])
    np.testing.assert_allclose(np.diag(units), 1.0)
    chance = np.asarray(result["chance"])
    off_diagonal = units[~np.eye(len(SIZES), dtype=bool)]
    # a unit that holds another factor predicts this one at about chance (the most frequent class)
    assert off_diagonal.max() < 0.5
    assert np.all(chance < 0.45)


def test_noise_scores_chance():
    # Noise drawn afresh for every observation carries no information about the factors. (A fixed
    # random code per image would not do: on a small grid it identifies the image, hence its factors.)
    rng = np.random.default_rng(0)

    def noise(indices: np.ndarray) -> np.ndarray:
        return rng.normal(size=(len(indices), 12))

    result = probe.compute(IndexObservations(SIZES, NAMES), noise, np.random.RandomState(0), num_units=3,
                           num_train=2000, num_test=1000, per_unit=False)
    acc = np.asarray(result["accuracy"])
    chance = 1.0 / np.asarray(SIZES)
    # 1000 test points: a binomial standard error of at most 0.016 around 1/size
    assert np.all(np.abs(acc - chance) < 0.06), (acc, chance)
    assert "unit_accuracy" not in result


def test_probe_is_seeded_and_checks_its_inputs():
    view = IndexObservations(SIZES, NAMES)
    codes = _one_hot_units().reshape(int(np.prod(SIZES)), -1) + np.random.default_rng(1).normal(size=(60, 18)) * 0.8
    first = probe.compute(view, LatentLookup(codes), np.random.RandomState(3), num_units=3, num_train=200, num_test=100)
    again = probe.compute(view, LatentLookup(codes), np.random.RandomState(3), num_units=3, num_train=200, num_test=100)
    assert first == again
    with pytest.raises(MetricError, match="multiple of num_units"):
        probe.compute(view, LatentLookup(codes), np.random.RandomState(3), num_units=4, num_train=20, num_test=10)
    with pytest.raises(MetricError, match="num_train"):
        probe.compute(view, LatentLookup(codes), np.random.RandomState(3), num_units=3, num_train=1, num_test=10)


def test_variance_explained_on_analytic_codes():
    rng = np.random.default_rng(0)
    n = 40000
    factors = np.stack([rng.integers(0, 10, n), rng.integers(0, 4, n)], axis=1)
    hue = factors[:, 0].astype(float)
    units = np.stack([
        np.stack([np.cos(2 * np.pi * hue / 10), np.sin(2 * np.pi * hue / 10)], -1),  # factor 0 on a circle
        np.stack([factors[:, 1] - 1.5, rng.normal(size=n) * np.sqrt(1.25)], -1),      # half factor 1, half noise
        rng.normal(size=(n, 2)),                                                       # noise
        np.stack([np.cos(2 * np.pi * hue / 10), np.zeros(n)], -1),                     # non-monotone in factor 0
    ], axis=1)
    eta = probe.variance_explained(units, factors)
    assert eta.shape == (4, 2)
    np.testing.assert_allclose(eta[0], [1.0, 0.0], atol=1e-3)
    np.testing.assert_allclose(eta[1], [0.0, 0.5], atol=0.02)   # Var(f1 - 1.5) = 1.25 = the noise's variance
    np.testing.assert_allclose(eta[2], [0.0, 0.0], atol=1e-3)   # sampling noise ~ (values - 1) / n
    np.testing.assert_allclose(eta[3], [1.0, 0.0], atol=1e-3)   # a cosine of the hue is all hue
    # a constant unit explains nothing (and does not divide by zero)
    assert np.all(probe.variance_explained(np.ones((10, 1, 3)), factors[:10]) == 0)


def test_probe_record_carries_variance_explained():
    result = probe_code(_one_hot_units(), _info(), settings={"num_train": 600, "num_test": 300})
    eta = np.asarray(result["unit_variance_explained"])
    assert eta.shape == (len(SIZES), len(SIZES))
    np.testing.assert_allclose(np.diag(eta), 1.0, atol=1e-9)
    assert eta[~np.eye(len(SIZES), dtype=bool)].max() < 0.05
