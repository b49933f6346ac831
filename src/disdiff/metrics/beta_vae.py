"""The beta-VAE score (Higgins et al., 2017), as disentanglement_lib defines it.

Definition. One training point is made as follows: draw a factor index k uniformly; draw two
batches of ``batch_size`` factor vectors uniformly; copy factor k of the first batch into the
second (so each pair of rows agrees on factor k only by construction); compute the
representations r(x1), r(x2) of both batches; the feature vector is the per-dimension mean over
the batch of |r(x1) - r(x2)| and the label is k. A linear classifier,
``sklearn.linear_model.LogisticRegression(random_state=random_state)`` with its defaults
(lbfgs, C=1, max_iter=100), is trained on ``num_train`` points and scored (accuracy) on them
and on ``num_eval`` fresh points drawn afterwards from the same random state.

Returns ``{"train_accuracy", "eval_accuracy"}``. Published settings: batch_size 64,
num_train 10000, num_eval 5000. Chance level is 1/K.

Random-number order (kept exactly, so results equal a plain loop): per point
``randint(K)``, then the factors of batch 1, then of batch 2, then the observations of batch 1
and of batch 2.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from disdiff.data.base import as_rng
from disdiff.metrics.utils import (
    DEFAULT_CHUNK_SIZE,
    MetricError,
    check_positive,
    ensure_factor_grid,
    represent_in_chunks,
)

DEFAULTS = {"batch_size": 64, "num_train": 10000, "num_eval": 5000}


def _sample_pairs(ground_truth_data, num_points: int, batch_size: int, random_state: np.random.RandomState):
    """Labels (P,) and the observations of the two batches of every point, (P*B, ...) each."""
    labels = np.zeros(num_points, dtype=np.int64)
    obs1, obs2 = [], []
    for i in range(num_points):
        index = random_state.randint(ground_truth_data.num_factors)
        factors1 = ground_truth_data.sample_factors(batch_size, random_state)
        factors2 = ground_truth_data.sample_factors(batch_size, random_state)
        factors2[:, index] = factors1[:, index]
        obs1.append(ground_truth_data.sample_observations_from_factors(factors1, random_state))
        obs2.append(ground_truth_data.sample_observations_from_factors(factors2, random_state))
        labels[i] = index
    return labels, obs1, obs2


def generate_training_batch(ground_truth_data, representation_function, batch_size: int, num_points: int,
                            random_state: np.random.RandomState, chunk_size: int | None = DEFAULT_CHUNK_SIZE):
    """Feature vectors (P, J) and labels (P,) of ``num_points`` beta-VAE points (see module docstring)."""
    check_positive(batch_size=batch_size, num_points=num_points)
    labels, obs1, obs2 = _sample_pairs(ground_truth_data, num_points, batch_size, random_state)
    points_per_chunk = max(1, (chunk_size or num_points * batch_size) // batch_size)
    features = []
    for start in range(0, num_points, points_per_chunk):
        stop = min(num_points, start + points_per_chunk)
        r1 = represent_in_chunks(representation_function, np.concatenate(obs1[start:stop]), None)
        r2 = represent_in_chunks(representation_function, np.concatenate(obs2[start:stop]), None)
        diff = np.abs(r1 - r2).reshape(stop - start, batch_size, -1)
        # Mean over the batch axis for each point separately (as np.mean(..., axis=0) per point).
        features.append(np.stack([np.mean(d, axis=0) for d in diff]))
    return np.concatenate(features, axis=0), labels


def compute_beta_vae_sklearn(ground_truth_data, representation_function, random_state=None, *,
                             batch_size: int = 64, num_train: int = 10000, num_eval: int = 5000,
                             chunk_size: int | None = DEFAULT_CHUNK_SIZE) -> dict[str, float]:
    """beta-VAE score: accuracy of a logistic regression predicting the fixed factor; the definition follows."""
    ensure_factor_grid(ground_truth_data, "beta-VAE score")
    random_state = as_rng(random_state)
    train_points, train_labels = generate_training_batch(ground_truth_data, representation_function, batch_size,
                                                         num_train, random_state, chunk_size)
    if np.unique(train_labels).size < 2:
        raise MetricError(f"beta-VAE score: all {num_train} training points fix the same factor; increase num_train")
    model = LogisticRegression(random_state=random_state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(train_points, train_labels)
    train_accuracy = float(np.mean(model.predict(train_points) == train_labels))
    eval_points, eval_labels = generate_training_batch(ground_truth_data, representation_function, batch_size,
                                                       num_eval, random_state, chunk_size)
    eval_accuracy = float(np.mean(model.predict(eval_points) == eval_labels))
    return {"train_accuracy": train_accuracy, "eval_accuracy": eval_accuracy}


compute = compute_beta_vae_sklearn

# The definition (module docstring) is part of the function's own docstring, for help().
compute.__doc__ = f"{compute.__doc__}\n\n{__doc__}"
