"""Linear probes: how much a representation knows about each factor, and which unit knows it.

This is a diagnostic, not a disentanglement score. The paper's metrics reduce every unit to one
principal component first, so a code that *knows* a factor but spreads it over several units
scores near chance; the probe separates "not learned" from "learned but entangled".

Definition (for a factor grid with K factors and a code of N units of d dimensions):

* draw ``num_train + num_test`` factor vectors uniformly (independently per factor) with the
  given ``RandomState``, and look up their codes;
* standardise every code dimension with the training mean and standard deviation;
* **full-code probe**: for each factor k, fit a multinomial logistic regression on all N·d
  dimensions to predict the factor's value; report the test accuracy ``acc_k`` and the chance
  level, the accuracy of always predicting the most frequent training value;
* **per-unit probe** (optional): the same on the d dimensions of unit j alone, giving an (N, K)
  matrix ``A[j, k]``. A disentangled code has one high entry per row and per column.
* **variance explained** (with the per-unit probe): the correlation ratio of unit j's dimensions
  with factor k on all ``num_train + num_test`` points,
  ``η²[j, k] = Σ_dims Var_v(E[z_j | f_k = v]) / Σ_dims Var(z_j)``, the share of the unit's variance
  that factor k's main effect explains. It needs no classifier and sees non-monotone codes that a
  one-dimensional linear probe misses (a hue kept on a curve); with independent factors a row sums
  to at most 1 plus sampling noise of about (values − 1) / points per entry.

The probe is linear and cheap (a few seconds for 192 dimensions and 10,000 points), unlike
gradient-boosted trees on the full code, which take tens of minutes.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from disdiff.metrics.utils import MetricError

DEFAULTS: dict[str, Any] = {"num_train": 10000, "num_test": 5000, "per_unit": True, "max_iter": 200}

__all__ = ["DEFAULTS", "probe_accuracy", "compute", "variance_explained"]


def probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                   max_iter: int = 200) -> tuple[float, float]:
    """(test accuracy, chance) of a logistic regression from standardised ``train_x`` to ``train_y``.

    Chance is the test accuracy of predicting the most frequent training label.
    """
    mean = train_x.mean(axis=0)
    std = train_x.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)  # constant dimensions carry nothing; keep them at 0
    a = (train_x - mean) / std
    b = (test_x - mean) / std
    values, counts = np.unique(train_y, return_counts=True)
    chance = float(np.mean(test_y == values[np.argmax(counts)]))
    if len(values) < 2:
        return float(np.mean(test_y == values[0])), chance
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=ConvergenceWarning)
        model = LogisticRegression(max_iter=max_iter)
        model.fit(a, train_y)
    return float(model.score(b, test_y)), chance


def compute(ground_truth_data, code_function: Callable[[np.ndarray], np.ndarray], random_state: np.random.RandomState,
            num_units: int, num_train: int = 10000, num_test: int = 5000, per_unit: bool = True,
            max_iter: int = 200, factor_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Probe accuracies of the codes ``code_function(observations) -> (n, N·d)`` (see the module docstring).

    Returns ``{"factors", "accuracy", "chance"}`` and, if ``per_unit``, ``"unit_accuracy"`` and
    ``"unit_variance_explained"`` (N x K each).
    """
    if num_train < 2 or num_test < 1:
        raise MetricError(f"probe needs num_train >= 2 and num_test >= 1, got {num_train}, {num_test}")
    factors = ground_truth_data.sample_factors(num_train + num_test, random_state)
    codes = np.asarray(code_function(ground_truth_data.sample_observations_from_factors(factors, random_state)),
                       dtype=np.float64).reshape(num_train + num_test, -1)
    if codes.shape[1] % num_units:
        raise MetricError(f"probe: code width {codes.shape[1]} is not a multiple of num_units={num_units}")
    unit_dim = codes.shape[1] // num_units
    names = list(factor_names or getattr(ground_truth_data, "factor_names", None)
                 or [f"factor_{k}" for k in range(factors.shape[1])])
    train, test = slice(0, num_train), slice(num_train, None)
    accuracy, chance = [], []
    for k in range(factors.shape[1]):
        acc, ch = probe_accuracy(codes[train], factors[train, k], codes[test], factors[test, k], max_iter)
        accuracy.append(acc)
        chance.append(ch)
    result: dict[str, Any] = {"factors": names, "accuracy": accuracy, "chance": chance}
    if per_unit:
        matrix = np.zeros((num_units, factors.shape[1]))
        for j in range(num_units):
            unit = codes[:, j * unit_dim:(j + 1) * unit_dim]
            for k in range(factors.shape[1]):
                matrix[j, k] = probe_accuracy(unit[train], factors[train, k], unit[test], factors[test, k], max_iter)[0]
        result["unit_accuracy"] = matrix.tolist()
        result["unit_variance_explained"] = variance_explained(codes.reshape(len(codes), num_units, unit_dim),
                                                               factors).tolist()
    return result


def variance_explained(units: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """η²[j, k] for codes ``(n, N, d)`` and integer factors ``(n, K)`` (module docstring): (N, K)."""
    units = np.asarray(units, dtype=np.float64)
    centred = units - units.mean(axis=0)
    total = (centred ** 2).mean(axis=0).sum(axis=-1)  # (N,)
    out = np.zeros((units.shape[1], factors.shape[1]))
    for k in range(factors.shape[1]):
        _, groups = np.unique(factors[:, k], return_inverse=True)
        counts = np.bincount(groups).astype(np.float64)
        sums = np.zeros((len(counts),) + centred.shape[1:])
        np.add.at(sums, groups, centred)
        means = sums / counts[:, None, None]
        between = (counts[:, None, None] * means ** 2).sum(axis=0).sum(axis=-1) / len(units)  # (N,)
        out[:, k] = between / np.where(total > 1e-24, total, 1.0)
    return out
