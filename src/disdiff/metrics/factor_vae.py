"""The FactorVAE score (Kim & Mnih, 2018), as disentanglement_lib defines it.

Definition.

1. Global scale: draw ``num_variance_estimate`` observations of uniformly sampled factors and
   take the per-dimension variance of their representations (ddof=1), ``global_var``.
2. Active dimensions: those with sqrt(global_var) >= ``prune_threshold``. If none is active,
   every score is 0.
3. Votes: for each of ``num_train`` points draw a factor k uniformly, draw ``batch_size`` factor
   vectors, set factor k of all of them to the first vector's value, represent them and take the
   per-dimension variance (ddof=1), ``local_var``. The dimension j* = argmin over the active
   dimensions of local_var / global_var gets a vote for k: ``votes[k, j*] += 1``.
4. Majority-vote classifier: dimension j predicts argmax_k votes[k, j].
5. Accuracy = sum_j votes[pred(j), j] / sum(votes), on the training votes and on
   ``num_eval`` fresh evaluation votes (same classifier).

Returns ``{"train_accuracy", "eval_accuracy", "num_active_dims", "eval_votes"}``, where
``eval_votes[k][j]`` counts the evaluation votes of factor k won by dimension j. The vote matrix
shows *why* a score is what it is: a factor that no dimension holds spreads its votes, and the
classifier may still credit some of them by chance. Published settings:
batch_size 64, num_train 10000, num_eval 5000, num_variance_estimate 10000,
prune_threshold 0.05. Chance level is about 1/K.

disentanglement_lib quirk (``argmin_index``). The original takes the argmin over the *active
subset* and stores that position as a column of the full vote matrix, so when some dimension is
inactive, votes land on the wrong dimensions. ``argmin_index="full"`` (the **default**) maps the
position back to the dimension's real index; ``argmin_index="active"`` reproduces the quirk.
The accuracies are the same either way (the quirk maps active positions injectively onto columns,
so it only relabels the vote matrix's columns); the vote matrices differ when some dimension is
inactive. ``num_active_dims`` is the true number of active dimensions with ``"full"``; with
``"active"`` it is, as in the original, the length of the mask (all dimensions).

Random-number order (kept exactly): the variance-estimate sample, then per vote ``randint(K)``
followed by the factors (and observations) of its batch.
"""

from __future__ import annotations

import numpy as np

from disdiff.data.base import as_rng
from disdiff.metrics.utils import (
    DEFAULT_CHUNK_SIZE,
    MetricError,
    check_positive,
    ensure_factor_grid,
    represent_in_chunks,
    sample_observations,
)

DEFAULTS = {"batch_size": 64, "num_train": 10000, "num_eval": 5000, "num_variance_estimate": 10000,
            "prune_threshold": 0.05, "argmin_index": "full"}
ARGMIN_INDEX_MODES = ("full", "active")


def compute_variances(ground_truth_data, representation_function, num_points: int,
                      random_state: np.random.RandomState, chunk_size: int | None = DEFAULT_CHUNK_SIZE) -> np.ndarray:
    """Per-dimension variance (ddof=1) of the representations of ``num_points`` random observations."""
    check_positive(num_variance_estimate=num_points)
    if num_points < 2:
        raise MetricError("FactorVAE score: num_variance_estimate must be at least 2")
    observations = sample_observations(ground_truth_data, num_points, random_state)
    representations = represent_in_chunks(representation_function, observations, chunk_size)
    return np.var(representations, axis=0, ddof=1)


def prune_dims(variances: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """Boolean mask of the dimensions whose standard deviation is at least ``threshold``."""
    return np.sqrt(variances) >= threshold


def generate_votes(ground_truth_data, representation_function, batch_size: int, num_points: int,
                   random_state: np.random.RandomState, global_variances: np.ndarray, active_dims: np.ndarray,
                   argmin_index: str = "full", chunk_size: int | None = DEFAULT_CHUNK_SIZE) -> np.ndarray:
    """Vote matrix (K, J) of ``num_points`` FactorVAE points (see module docstring)."""
    check_positive(batch_size=batch_size, num_points=num_points)
    if batch_size < 2:
        raise MetricError("FactorVAE score: batch_size must be at least 2 (the variance uses ddof=1)")
    if argmin_index not in ARGMIN_INDEX_MODES:
        raise MetricError(f"FactorVAE score: argmin_index must be one of {ARGMIN_INDEX_MODES}, got {argmin_index!r}")
    factor_indices = np.zeros(num_points, dtype=np.int64)
    observations = []
    for i in range(num_points):
        factor_index = random_state.randint(ground_truth_data.num_factors)
        factors = ground_truth_data.sample_factors(batch_size, random_state)
        factors[:, factor_index] = factors[0, factor_index]
        observations.append(ground_truth_data.sample_observations_from_factors(factors, random_state))
        factor_indices[i] = factor_index
    active_positions = np.flatnonzero(active_dims)
    argmins = np.zeros(num_points, dtype=np.int64)
    points_per_chunk = max(1, (chunk_size or num_points * batch_size) // batch_size)
    for start in range(0, num_points, points_per_chunk):
        stop = min(num_points, start + points_per_chunk)
        reps = represent_in_chunks(representation_function, np.concatenate(observations[start:stop]), None)
        reps = reps.reshape(stop - start, batch_size, -1)
        for p in range(stop - start):
            local_variances = np.var(reps[p], axis=0, ddof=1)
            argmins[start + p] = np.argmin(local_variances[active_dims] / global_variances[active_dims])
    if argmin_index == "full":
        argmins = active_positions[argmins]
    votes = np.zeros((ground_truth_data.num_factors, global_variances.shape[0]), dtype=np.int64)
    np.add.at(votes, (factor_indices, argmins), 1)
    return votes


def compute_factor_vae(ground_truth_data, representation_function, random_state=None, *, batch_size: int = 64,
                       num_train: int = 10000, num_eval: int = 5000, num_variance_estimate: int = 10000,
                       prune_threshold: float = 0.05, argmin_index: str = "full",
                       chunk_size: int | None = DEFAULT_CHUNK_SIZE) -> dict[str, float]:
    """FactorVAE score: majority-vote accuracy of the lowest-normalised-variance dimension; the definition follows."""
    ensure_factor_grid(ground_truth_data, "FactorVAE score")
    random_state = as_rng(random_state)
    global_variances = compute_variances(ground_truth_data, representation_function, num_variance_estimate,
                                         random_state, chunk_size)
    active_dims = prune_dims(global_variances, prune_threshold)
    if not active_dims.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0, "eval_votes": []}
    training_votes = generate_votes(ground_truth_data, representation_function, batch_size, num_train, random_state,
                                    global_variances, active_dims, argmin_index, chunk_size)
    classifier = np.argmax(training_votes, axis=0)
    columns = np.arange(training_votes.shape[1])
    train_accuracy = np.sum(training_votes[classifier, columns]) / np.sum(training_votes)
    eval_votes = generate_votes(ground_truth_data, representation_function, batch_size, num_eval, random_state,
                                global_variances, active_dims, argmin_index, chunk_size)
    eval_accuracy = np.sum(eval_votes[classifier, columns]) / np.sum(eval_votes)
    num_active = len(active_dims) if argmin_index == "active" else int(active_dims.sum())
    return {"train_accuracy": float(train_accuracy), "eval_accuracy": float(eval_accuracy),
            "num_active_dims": int(num_active), "eval_votes": eval_votes.tolist()}


compute = compute_factor_vae


def vote_shares(votes) -> np.ndarray:
    """Each factor's votes as shares over the dimensions: ``votes[k, j] / sum_j votes[k, j]``.

    Row k says which dimension represents factor k, and how consistently: a factor held by one
    dimension gives that dimension a share near 1; a factor held by none spreads its votes, and the
    FactorVAE classifier credits whatever share its chosen dimension happens to win. A factor
    without votes gives a row of zeros.
    """
    votes = np.asarray(votes, dtype=np.float64)
    if votes.ndim != 2:
        raise MetricError(f"FactorVAE votes must be a factors x dimensions matrix, got shape {votes.shape}")
    totals = votes.sum(axis=1, keepdims=True)
    return np.divide(votes, totals, out=np.zeros_like(votes), where=totals > 0)


# The definition (module docstring) is part of the function's own docstring, for help().
compute.__doc__ = f"{compute.__doc__}\n\n{__doc__}"
