"""Shared pieces of the disentanglement metrics: sampling codes, discretisation, information.

Conventions follow disentanglement_lib (spec 6.3):

* a *representation function* maps a batch of observations to a float array (n, J);
* codes are returned **transposed**, ``mus`` (J, n) and ``ys`` (K, n), as the original does;
* all randomness comes from one ``np.random.RandomState`` which is consumed in exactly the
  order of the original's plain loops, so the fast (batched) paths here give the same numbers
  as a straightforward loop (see :mod:`disdiff.metrics.reference` and its tests).

Speed: observations are sampled batch by batch (the random stream must be consumed in the
original order), but the representation function is applied to large chunks of observations at
once (``chunk_size`` points), not to every small batch.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
from sklearn.metrics import mutual_info_score

from disdiff.data.base import as_rng

RepresentationFunction = Callable[[np.ndarray], np.ndarray]

#: How many observations the representation function sees at once in the fast paths. The
#: index view of precomputed latents makes this a cheap row lookup; for image datasets with a
#: neural encoder it bounds memory.
DEFAULT_CHUNK_SIZE = 8192


class MetricError(ValueError):
    """A metric cannot be computed from its inputs (bad dataset, representation, or settings)."""


def check_positive(**values: int) -> None:
    for name, value in values.items():
        if int(value) <= 0:
            raise MetricError(f"{name} must be a positive integer, got {value!r}")


def represent(representation_function: RepresentationFunction, observations: np.ndarray) -> np.ndarray:
    """Apply the representation function and check it returns a finite (n, J) array."""
    reps = np.asarray(representation_function(observations))
    if reps.ndim == 1:
        reps = reps[:, None]
    if reps.ndim != 2 or reps.shape[0] != len(observations):
        raise MetricError(f"representation function must return (n, J) for n={len(observations)} observations, "
                          f"got shape {reps.shape}")
    return reps


def represent_in_chunks(representation_function: RepresentationFunction, observations: np.ndarray,
                        chunk_size: int | None = DEFAULT_CHUNK_SIZE) -> np.ndarray:
    """Representations (n, J) of ``observations`` computed ``chunk_size`` at a time."""
    n = len(observations)
    if chunk_size is None or n <= chunk_size:
        return represent(representation_function, observations)
    parts = [represent(representation_function, observations[i:i + chunk_size]) for i in range(0, n, chunk_size)]
    return np.concatenate(parts, axis=0)


def sample_batches(ground_truth_data, num_points: int, random_state: np.random.RandomState,
                   batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (factors, observations) batches of ``batch_size`` (the last one smaller).

    Each batch is ``ground_truth_data.sample(...)``: factors first, then observations, with the
    same random state; this is the original's sampling order.
    """
    done = 0
    while done < num_points:
        n = min(num_points - done, batch_size)
        factors = ground_truth_data.sample_factors(n, random_state)
        observations = ground_truth_data.sample_observations_from_factors(factors, random_state)
        yield factors, observations
        done += n


def generate_batch_factor_code(ground_truth_data, representation_function: RepresentationFunction,
                               num_points: int, random_state: np.random.RandomState | int | None,
                               batch_size: int, chunk_size: int | None = DEFAULT_CHUNK_SIZE
                               ) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``num_points`` points as ``batch_size`` batches: codes ``mus`` (J, n), factors ``ys`` (K, n).

    Definition (disentanglement_lib): repeatedly draw ``batch_size`` factor vectors uniformly and
    independently per factor, map them to observations and then to representations; stack.
    The batch size matters because it fixes the order in which the random stream is consumed.
    Here the observations are gathered batch by batch and represented in chunks (same values).
    """
    check_positive(num_points=num_points, batch_size=batch_size)
    random_state = as_rng(random_state)
    factor_batches, observation_batches, pending, reps = [], [], 0, []
    for factors, observations in sample_batches(ground_truth_data, num_points, random_state, batch_size):
        factor_batches.append(factors)
        observation_batches.append(observations)
        pending += len(factors)
        if chunk_size is not None and pending >= chunk_size:
            reps.append(represent(representation_function, np.concatenate(observation_batches)))
            observation_batches, pending = [], 0
    if observation_batches:
        reps.append(represent(representation_function, np.concatenate(observation_batches)))
    mus = np.concatenate(reps, axis=0)
    ys = np.concatenate(factor_batches, axis=0)
    return np.transpose(mus), np.transpose(ys)


def sample_observations(ground_truth_data, num_points: int, random_state: np.random.RandomState):
    """``num_points`` observations of uniformly drawn factors (one ``sample`` call, as the original)."""
    factors = ground_truth_data.sample_factors(num_points, random_state)
    return ground_truth_data.sample_observations_from_factors(factors, random_state)


# ----------------------------------------------------------------------------- discretisation
def histogram_discretize(target: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """Discretise each row of ``target`` (J, n) into ``num_bins`` equal-width bins.

    Definition: for each row, ``np.digitize`` against the left edges of ``np.histogram(row,
    num_bins)``, so values are 1..num_bins (the maximum falls into bin num_bins). Output keeps
    the input's shape (and, as in the original, a float dtype for float input).
    """
    target = np.asarray(target)
    if target.ndim == 1:
        target = target[None, :]
    check_positive(num_bins=num_bins)
    discretized = np.zeros_like(target)
    for i in range(target.shape[0]):
        edges = np.histogram(target[i, :], num_bins)[1][:-1]
        discretized[i, :] = np.digitize(target[i, :], edges)
    return discretized


def discrete_mutual_info(mus: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Mutual information (nats) between every discrete code row and factor row: (J, K)."""
    m = np.zeros((mus.shape[0], ys.shape[0]))
    for i in range(mus.shape[0]):
        for j in range(ys.shape[0]):
            m[i, j] = mutual_info_score(ys[j, :], mus[i, :])
    return m


def discrete_entropy(ys: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each discrete factor row, as the mutual information of a row with itself: (K,)."""
    return np.array([mutual_info_score(ys[j, :], ys[j, :]) for j in range(ys.shape[0])])


def entropy(p: np.ndarray, base: float, axis: int = 0) -> np.ndarray:
    """Shannon entropy of the (unnormalised, non-negative) distributions along ``axis``, log base ``base``.

    Same as ``scipy.stats.entropy(p, base=base)``: each distribution is normalised to sum 1 first.
    """
    p = np.asarray(p, dtype=np.float64)
    p = p / np.sum(p, axis=axis, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return np.sum(terms, axis=axis) / np.log(base)


def normalize_data(data: np.ndarray, mean: np.ndarray | None = None, stddev: np.ndarray | None = None):
    """Standardise each row of ``data`` (J, n); returns (normalised, mean, stddev).

    Rows with zero standard deviation are left centred (divided by 1) instead of producing NaN.
    """
    if mean is None:
        mean = np.mean(data, axis=1)
    if stddev is None:
        stddev = np.std(data, axis=1)
    safe = np.where(stddev > 0, stddev, 1.0)
    return (data - mean[:, None]) / safe[:, None], mean, stddev


def ensure_factor_grid(ground_truth_data, metric: str) -> None:
    """Refuse datasets that are not factor grids (e.g. CelebA) for factor-based metrics."""
    if getattr(ground_truth_data, "is_factor_grid", True) is False:
        raise MetricError(f"{metric} needs a dataset with ground-truth factors; "
                          f"{type(ground_truth_data).__name__} is not a factor grid (use TAD for CelebA)")
    sizes: Sequence[int] = getattr(ground_truth_data, "factor_sizes", ())
    if len(sizes) == 0:
        raise MetricError(f"{metric}: the dataset has no factors")
