"""DCI: disentanglement, completeness and informativeness (Eastwood & Williams, 2018),
as disentanglement_lib defines it (gradient-boosted-tree importances).

Definition. Draw ``num_train`` training and ``num_test`` test points (codes and factors, sampled
in batches of ``batch_size``). For every factor k fit
``sklearn.ensemble.GradientBoostingClassifier()`` (defaults: 100 trees, learning rate 0.1,
depth 3) on the training codes; the importance matrix is R[j, k] = |feature_importances_[j]|
(J codes x K factors).

* informativeness_train / informativeness_test: mean over factors of the classifier's
  **accuracy** (not error, despite the name) on the training / test codes.
* disentanglement: D_j = 1 - H_K(R[j, :] / sum_k R[j, k]) with entropy in log base K (1e-11 is
  added to R first); D = sum_j rho_j D_j with rho_j = sum_k R[j, k] / sum R.
* completeness: C_k = 1 - H_J(R[:, k] / sum_j R[j, k]) in log base J (1e-11 added);
  C = sum_k w_k C_k with w_k = sum_j R[j, k] / sum R.
  (If R is all zero the weights are uniform.)

Returns ``{"informativeness_train", "informativeness_test", "disentanglement",
"completeness"}``. Published settings: num_train 10000, num_test 5000, batch_size 16.

Deviation, documented: disentanglement_lib fits the trees with ``random_state=None``, so its DCI
is not exactly reproducible (sklearn breaks ties between equally good splits at random).
Here ``gbt_random_state`` (default 0) seeds every fit, so results are deterministic and do not
depend on ``n_jobs``. Pass ``gbt_random_state=None`` for the original behaviour.

Speed: the K tree ensembles are independent and are fitted in parallel with ``n_jobs`` workers
(``backend="threading"`` by default, as sklearn's tree building releases the GIL, or
``"loky"`` for processes), largest factors first. Values do not depend on ``n_jobs``/``backend``.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import GradientBoostingClassifier

from disdiff.data.base import as_rng
from disdiff.metrics.utils import (
    DEFAULT_CHUNK_SIZE,
    MetricError,
    ensure_factor_grid,
    entropy,
    generate_batch_factor_code,
)

DEFAULTS = {"num_train": 10000, "num_test": 5000, "batch_size": 16, "gbt_random_state": 0, "n_jobs": 1,
            "backend": "threading"}


def _fit_one(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
             random_state: int | None) -> tuple[np.ndarray, float, float]:
    if np.unique(y_train).size < 2:
        raise MetricError("DCI: a factor takes a single value in the training sample; increase num_train")
    model = GradientBoostingClassifier(random_state=random_state)
    model.fit(x_train, y_train)
    importance = np.abs(model.feature_importances_)
    train_acc = float(np.mean(model.predict(x_train) == y_train))
    test_acc = float(np.mean(model.predict(x_test) == y_test))
    return importance, train_acc, test_acc


def compute_importance_gbt(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                           random_state: int | None = 0, n_jobs: int = 1, backend: str = "threading"):
    """Importance matrix (J, K) and mean train/test accuracies from one GBT classifier per factor.

    ``x_*`` are codes (J, n) and ``y_*`` factors (K, n), as produced by ``generate_batch_factor_code``.
    """
    num_factors, num_codes = y_train.shape[0], x_train.shape[0]
    xt, xs = x_train.T, x_test.T
    jobs = [(xt, y_train[k], xs, y_test[k], random_state) for k in range(num_factors)]
    if n_jobs is not None and n_jobs != 1 and num_factors > 1:
        from joblib import Parallel, delayed

        # Longest fits first (cost grows with the number of classes) for a balanced schedule.
        order = sorted(range(num_factors), key=lambda k: -np.unique(y_train[k]).size)
        results = Parallel(n_jobs=n_jobs, backend=backend)(delayed(_fit_one)(*jobs[k]) for k in order)
        by_factor = dict(zip(order, results))
        results = [by_factor[k] for k in range(num_factors)]
    else:
        results = [_fit_one(*job) for job in jobs]
    importance_matrix = np.zeros((num_codes, num_factors), dtype=np.float64)
    for k, (importance, _, _) in enumerate(results):
        importance_matrix[:, k] = importance
    train_acc = float(np.mean([r[1] for r in results]))
    test_acc = float(np.mean([r[2] for r in results]))
    return importance_matrix, train_acc, test_acc


def disentanglement_per_code(importance_matrix: np.ndarray) -> np.ndarray:
    """D_j = 1 - entropy (log base K) of each code's importance over factors."""
    return 1.0 - entropy(importance_matrix.T + 1e-11, base=importance_matrix.shape[1], axis=0)


def disentanglement(importance_matrix: np.ndarray) -> float:
    per_code = disentanglement_per_code(importance_matrix)
    if importance_matrix.sum() == 0.0:
        importance_matrix = np.ones_like(importance_matrix)
    code_importance = importance_matrix.sum(axis=1) / importance_matrix.sum()
    return float(np.sum(per_code * code_importance))


def completeness_per_factor(importance_matrix: np.ndarray) -> np.ndarray:
    """C_k = 1 - entropy (log base J) of each factor's importance over codes."""
    return 1.0 - entropy(importance_matrix + 1e-11, base=importance_matrix.shape[0], axis=0)


def completeness(importance_matrix: np.ndarray) -> float:
    per_factor = completeness_per_factor(importance_matrix)
    if importance_matrix.sum() == 0.0:
        importance_matrix = np.ones_like(importance_matrix)
    factor_importance = importance_matrix.sum(axis=0) / importance_matrix.sum()
    return float(np.sum(per_factor * factor_importance))


def compute_dci_from_codes(mus_train, ys_train, mus_test, ys_test, gbt_random_state: int | None = 0,
                           n_jobs: int = 1, backend: str = "threading") -> dict[str, float]:
    if mus_train.shape[0] < 2 or ys_train.shape[0] < 2:
        raise MetricError("DCI needs at least two codes and two factors (entropies use log base J and K)")
    importance_matrix, train_acc, test_acc = compute_importance_gbt(mus_train, ys_train, mus_test, ys_test,
                                                                     gbt_random_state, n_jobs, backend)
    return {"informativeness_train": train_acc, "informativeness_test": test_acc,
            "disentanglement": disentanglement(importance_matrix), "completeness": completeness(importance_matrix)}


def compute_dci(ground_truth_data, representation_function, random_state=None, *, num_train: int = 10000,
                num_test: int = 5000, batch_size: int = 16, gbt_random_state: int | None = 0, n_jobs: int = 1,
                backend: str = "threading", chunk_size: int | None = DEFAULT_CHUNK_SIZE) -> dict[str, float]:
    """DCI disentanglement, completeness and informativeness; the definition follows."""
    ensure_factor_grid(ground_truth_data, "DCI")
    random_state = as_rng(random_state)
    mus_train, ys_train = generate_batch_factor_code(ground_truth_data, representation_function, num_train,
                                                     random_state, batch_size, chunk_size)
    mus_test, ys_test = generate_batch_factor_code(ground_truth_data, representation_function, num_test,
                                                   random_state, batch_size, chunk_size)
    return compute_dci_from_codes(mus_train, ys_train, mus_test, ys_test, gbt_random_state, n_jobs, backend)


compute = compute_dci

# The definition (module docstring) is part of the function's own docstring, for help().
compute.__doc__ = f"{compute.__doc__}\n\n{__doc__}"
