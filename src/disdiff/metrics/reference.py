"""Straightforward single-process versions of the sampling-heavy metrics, for checking.

These follow disentanglement_lib's control flow literally: every small batch is mapped to
observations and then through the representation function on its own, one point at a time,
and the gradient-boosted trees of DCI are fitted one after another. They are slow and exist
to show that the fast paths (batched representation, parallel fits) give *identical* values:
see ``tests/test_metrics_fast_path.py`` and ``benchmarks/bench_metrics.py``.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from disdiff.data.base import as_rng
from disdiff.metrics import dci as _dci
from disdiff.metrics import mig as _mig


def generate_batch_factor_code(ground_truth_data, representation_function, num_points, random_state, batch_size):
    representations, factors, i = None, None, 0
    while i < num_points:
        n = min(num_points - i, batch_size)
        current_factors = ground_truth_data.sample_factors(n, random_state)
        current_observations = ground_truth_data.sample_observations_from_factors(current_factors, random_state)
        current_reps = np.asarray(representation_function(current_observations))
        if i == 0:
            factors, representations = current_factors, current_reps
        else:
            factors = np.vstack((factors, current_factors))
            representations = np.vstack((representations, current_reps))
        i += n
    return np.transpose(representations), np.transpose(factors)


def beta_vae(ground_truth_data, representation_function, random_state, batch_size=64, num_train=10000, num_eval=5000):
    random_state = as_rng(random_state)

    def batch(num_points):
        points, labels = None, np.zeros(num_points, dtype=np.int64)
        for i in range(num_points):
            index = random_state.randint(ground_truth_data.num_factors)
            f1 = ground_truth_data.sample_factors(batch_size, random_state)
            f2 = ground_truth_data.sample_factors(batch_size, random_state)
            f2[:, index] = f1[:, index]
            o1 = ground_truth_data.sample_observations_from_factors(f1, random_state)
            o2 = ground_truth_data.sample_observations_from_factors(f2, random_state)
            feature = np.mean(np.abs(representation_function(o1) - representation_function(o2)), axis=0)
            if points is None:
                points = np.zeros((num_points, feature.shape[0]))
            points[i], labels[i] = feature, index
        return points, labels

    x, y = batch(num_train)
    model = LogisticRegression(random_state=random_state).fit(x, y)
    train = np.mean(model.predict(x) == y)
    xe, ye = batch(num_eval)
    return {"train_accuracy": float(train), "eval_accuracy": float(np.mean(model.predict(xe) == ye))}


def factor_vae(ground_truth_data, representation_function, random_state, batch_size=64, num_train=10000,
               num_eval=5000, num_variance_estimate=10000, prune_threshold=0.05, argmin_index="full"):
    random_state = as_rng(random_state)
    factors = ground_truth_data.sample_factors(num_variance_estimate, random_state)
    observations = ground_truth_data.sample_observations_from_factors(factors, random_state)
    reps = np.concatenate([representation_function(observations[i:i + 64]) for i in range(0, len(observations), 64)])
    global_var = np.var(reps, axis=0, ddof=1)
    active = np.sqrt(global_var) >= prune_threshold
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0, "eval_votes": []}

    def votes(num_points):
        v = np.zeros((ground_truth_data.num_factors, global_var.shape[0]), dtype=np.int64)
        for _ in range(num_points):
            k = random_state.randint(ground_truth_data.num_factors)
            f = ground_truth_data.sample_factors(batch_size, random_state)
            f[:, k] = f[0, k]
            o = ground_truth_data.sample_observations_from_factors(f, random_state)
            local_var = np.var(representation_function(o), axis=0, ddof=1)
            j = np.argmin(local_var[active] / global_var[active])
            if argmin_index == "full":
                j = np.flatnonzero(active)[j]
            v[k, j] += 1
        return v

    train_votes = votes(num_train)
    classifier = np.argmax(train_votes, axis=0)
    cols = np.arange(train_votes.shape[1])
    eval_votes = votes(num_eval)
    return {"train_accuracy": float(np.sum(train_votes[classifier, cols]) / np.sum(train_votes)),
            "eval_accuracy": float(np.sum(eval_votes[classifier, cols]) / np.sum(eval_votes)),
            "num_active_dims": int(active.sum()), "eval_votes": eval_votes.tolist()}


def dci(ground_truth_data, representation_function, random_state, num_train=10000, num_test=5000, batch_size=16,
        gbt_random_state=0):
    random_state = as_rng(random_state)
    mus, ys = generate_batch_factor_code(ground_truth_data, representation_function, num_train, random_state, batch_size)
    mus_t, ys_t = generate_batch_factor_code(ground_truth_data, representation_function, num_test, random_state, batch_size)
    return _dci.compute_dci_from_codes(mus, ys, mus_t, ys_t, gbt_random_state, n_jobs=1)


def mig(ground_truth_data, representation_function, random_state, num_train=10000, batch_size=16, num_bins=20):
    random_state = as_rng(random_state)
    mus, ys = generate_batch_factor_code(ground_truth_data, representation_function, num_train, random_state, batch_size)
    return _mig.mig_from_codes(mus, ys, num_bins)


REFERENCE = {"beta_vae": beta_vae, "factor_vae": factor_vae, "dci": dci, "mig": mig}
