"""The SAP score, Separated Attribute Predictability (Kumar et al., 2018), as disentanglement_lib
defines it.

Definition. Draw ``num_train`` training and ``num_test`` test points (batches of ``batch_size``).
Build a score matrix S (J codes x K factors):

* continuous factors (``continuous_factors=True``): S[j, k] = Cov(z_j, y_k)^2 / (Var z_j Var y_k)
  (ddof=1, on the training points), or 0 when Var z_j <= 1e-12;
* discrete factors (default): S[j, k] = test accuracy of
  ``sklearn.svm.LinearSVC(C=0.01, class_weight="balanced")`` trained on code j alone to predict
  factor k.

SAP = mean over factors of the gap between the largest and second-largest S[:, k].
Returns ``{"SAP_score"}``. Settings as in disentanglement_lib's configurations: num_train 10000,
num_test 5000, batch_size 16, discrete factors. Not used by the DisDiff paper.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from disdiff.data.base import as_rng
from disdiff.metrics.utils import DEFAULT_CHUNK_SIZE, MetricError, ensure_factor_grid, generate_batch_factor_code

DEFAULTS = {"num_train": 10000, "num_test": 5000, "batch_size": 16, "continuous_factors": False}


def compute_score_matrix(mus, ys, mus_test, ys_test, continuous_factors: bool) -> np.ndarray:
    num_codes, num_factors = mus.shape[0], ys.shape[0]
    score_matrix = np.zeros((num_codes, num_factors))
    for i in range(num_codes):
        for j in range(num_factors):
            mu_i, y_j = mus[i, :], ys[j, :]
            if continuous_factors:
                cov = np.cov(mu_i, y_j, ddof=1)
                var_mu, var_y = cov[0, 0], cov[1, 1]
                score_matrix[i, j] = cov[0, 1] ** 2 / (var_mu * var_y) if var_mu > 1e-12 else 0.0
            else:
                classifier = LinearSVC(C=0.01, class_weight="balanced")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    classifier.fit(mu_i[:, None], y_j)
                pred = classifier.predict(mus_test[i, :][:, None])
                score_matrix[i, j] = np.mean(pred == ys_test[j, :])
    return score_matrix


def compute_avg_diff_top_two(matrix: np.ndarray) -> float:
    sorted_matrix = np.sort(matrix, axis=0)
    return float(np.mean(sorted_matrix[-1, :] - sorted_matrix[-2, :]))


def sap_from_codes(mus, ys, mus_test, ys_test, continuous_factors: bool = False) -> dict[str, float]:
    if mus.shape[0] < 2:
        raise MetricError("SAP needs a representation with at least two dimensions")
    return {"SAP_score": compute_avg_diff_top_two(compute_score_matrix(mus, ys, mus_test, ys_test, continuous_factors))}


def compute_sap(ground_truth_data, representation_function, random_state=None, *, num_train: int = 10000,
                num_test: int = 5000, batch_size: int = 16, continuous_factors: bool = False,
                chunk_size: int | None = DEFAULT_CHUNK_SIZE) -> dict[str, float]:
    """SAP score; the definition follows."""
    ensure_factor_grid(ground_truth_data, "SAP")
    random_state = as_rng(random_state)
    mus, ys = generate_batch_factor_code(ground_truth_data, representation_function, num_train, random_state,
                                         batch_size, chunk_size)
    mus_test, ys_test = generate_batch_factor_code(ground_truth_data, representation_function, num_test,
                                                   random_state, batch_size, chunk_size)
    return sap_from_codes(mus, ys, mus_test, ys_test, continuous_factors)


compute = compute_sap

# The definition (module docstring) is part of the function's own docstring, for help().
compute.__doc__ = f"{compute.__doc__}\n\n{__doc__}"
