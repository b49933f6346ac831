"""Modularity and explicitness (Ridgeway & Mozer, 2018), as disentanglement_lib defines them.

Definition. Draw ``num_train`` training and ``num_test`` test points (batches of ``batch_size``).

* Modularity: m = discrete mutual information between the histogram-discretised codes
  (``num_bins`` bins) and the factors (J x K). For each code j,
  delta_j = (sum_k m_jk^2 - max_k m_jk^2) / (max_k m_jk^2 (K - 1)) and modularity_j = 1 - delta_j
  (0 when the code carries no information, max_k m_jk = 0). The score is the mean over codes.
* Explicitness: standardise the codes with the training mean and standard deviation; for each
  factor fit a default ``sklearn.linear_model.LogisticRegression`` on all codes, and score the
  predicted class probabilities with the macro ROC-AUC against one-hot labels, on the training
  and on the test points. The scores are the means over factors.

Returns ``{"modularity_score", "explicitness_score_train", "explicitness_score_test"}``.
Settings as in disentanglement_lib's configurations: num_train 10000, num_test 5000,
batch_size 16, 20 bins. Not used by the DisDiff paper.

Small, documented fixes: one-hot labels use the classifier's classes for both splits (the
original re-fitted the binariser on the test labels, which misaligns columns when a class is
missing from the test sample); a class absent from a split is left out of that split's average;
constant codes are left centred instead of producing NaN in the standardisation.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from disdiff.data.base import as_rng
from disdiff.metrics.utils import (
    DEFAULT_CHUNK_SIZE,
    MetricError,
    discrete_mutual_info,
    ensure_factor_grid,
    generate_batch_factor_code,
    histogram_discretize,
    normalize_data,
)

DEFAULTS = {"num_train": 10000, "num_test": 5000, "batch_size": 16, "num_bins": 20}


def modularity(mutual_information: np.ndarray) -> float:
    squared_mi = np.square(mutual_information)
    max_squared_mi = np.max(squared_mi, axis=1)
    numerator = np.sum(squared_mi, axis=1) - max_squared_mi
    denominator = max_squared_mi * (squared_mi.shape[1] - 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        modularity_score = 1.0 - numerator / denominator
    modularity_score[max_squared_mi == 0.0] = 0.0
    return float(np.mean(modularity_score))


def _macro_auc(classes: np.ndarray, labels: np.ndarray, probabilities: np.ndarray) -> float:
    scores = []
    for c, cls in enumerate(classes):
        positive = labels == cls
        if positive.all() or not positive.any():
            continue
        scores.append(roc_auc_score(positive, probabilities[:, c]))
    return float(np.mean(scores)) if scores else float("nan")


def explicitness_per_factor(mus_train, y_train, mus_test, y_test) -> tuple[float, float]:
    x_train, x_test = np.transpose(mus_train), np.transpose(mus_test)
    if np.unique(y_train).size < 2:
        raise MetricError("explicitness: a factor takes a single value in the training sample; increase num_train")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression().fit(x_train, y_train)
    return (_macro_auc(clf.classes_, y_train, clf.predict_proba(x_train)),
            _macro_auc(clf.classes_, y_test, clf.predict_proba(x_test)))


def modularity_explicitness_from_codes(mus_train, ys_train, mus_test, ys_test, num_bins: int = 20) -> dict[str, float]:
    if ys_train.shape[0] < 2:
        raise MetricError("modularity needs at least two factors")
    mutual_information = discrete_mutual_info(histogram_discretize(mus_train, num_bins), ys_train)
    mus_train_norm, mean, stddev = normalize_data(mus_train)
    mus_test_norm, _, _ = normalize_data(mus_test, mean, stddev)
    per_factor = [explicitness_per_factor(mus_train_norm, ys_train[k], mus_test_norm, ys_test[k])
                  for k in range(ys_train.shape[0])]
    return {"modularity_score": modularity(mutual_information),
            "explicitness_score_train": float(np.mean([p[0] for p in per_factor])),
            "explicitness_score_test": float(np.mean([p[1] for p in per_factor]))}


def compute_modularity_explicitness(ground_truth_data, representation_function, random_state=None, *,
                                    num_train: int = 10000, num_test: int = 5000, batch_size: int = 16,
                                    num_bins: int = 20, chunk_size: int | None = DEFAULT_CHUNK_SIZE
                                    ) -> dict[str, float]:
    """Modularity and explicitness; the definition follows."""
    ensure_factor_grid(ground_truth_data, "modularity/explicitness")
    random_state = as_rng(random_state)
    mus_train, ys_train = generate_batch_factor_code(ground_truth_data, representation_function, num_train,
                                                     random_state, batch_size, chunk_size)
    mus_test, ys_test = generate_batch_factor_code(ground_truth_data, representation_function, num_test,
                                                   random_state, batch_size, chunk_size)
    return modularity_explicitness_from_codes(mus_train, ys_train, mus_test, ys_test, num_bins)


compute = compute_modularity_explicitness

# The definition (module docstring) is part of the function's own docstring, for help().
compute.__doc__ = f"{compute.__doc__}\n\n{__doc__}"
