"""The Mutual Information Gap (Chen et al., 2018), as disentanglement_lib defines it.

Definition. Draw ``num_train`` points (codes and factors, in batches of ``batch_size``).
Discretise every code dimension into ``num_bins`` equal-width histogram bins
(:func:`disdiff.metrics.utils.histogram_discretize`). Let m[j, k] be the discrete mutual
information (nats, ``sklearn.metrics.mutual_info_score``) between code j and factor k, and H_k
the entropy of factor k. With m_(1)k >= m_(2)k the two largest values in column k,

    MIG = mean_k (m_(1)k - m_(2)k) / H_k.

Returns ``{"discrete_mig"}``. Published settings (DisDiff): num_train 10000, batch_size 16,
20 bins. A representation needs at least two dimensions.
"""

from __future__ import annotations

import numpy as np

from disdiff.data.base import as_rng
from disdiff.metrics.utils import (
    DEFAULT_CHUNK_SIZE,
    MetricError,
    discrete_entropy,
    discrete_mutual_info,
    ensure_factor_grid,
    generate_batch_factor_code,
    histogram_discretize,
)

DEFAULTS = {"num_train": 10000, "batch_size": 16, "num_bins": 20}


def mig_from_codes(mus_train: np.ndarray, ys_train: np.ndarray, num_bins: int = 20) -> dict[str, float]:
    """MIG of codes (J, n) against factors (K, n)."""
    if mus_train.shape[0] < 2:
        raise MetricError("MIG needs a representation with at least two dimensions")
    discretized = histogram_discretize(mus_train, num_bins)
    m = discrete_mutual_info(discretized, ys_train)
    entropies = discrete_entropy(ys_train)
    if np.any(entropies <= 0):
        raise MetricError("MIG: a factor takes a single value in the sample (zero entropy); increase num_train")
    sorted_m = np.sort(m, axis=0)[::-1]
    return {"discrete_mig": float(np.mean((sorted_m[0, :] - sorted_m[1, :]) / entropies))}


def compute_mig(ground_truth_data, representation_function, random_state=None, *, num_train: int = 10000,
                batch_size: int = 16, num_bins: int = 20, chunk_size: int | None = DEFAULT_CHUNK_SIZE
                ) -> dict[str, float]:
    """Mutual Information Gap; the definition follows."""
    ensure_factor_grid(ground_truth_data, "MIG")
    random_state = as_rng(random_state)
    mus_train, ys_train = generate_batch_factor_code(ground_truth_data, representation_function, num_train,
                                                     random_state, batch_size, chunk_size)
    return mig_from_codes(mus_train, ys_train, num_bins)


compute = compute_mig

# The definition (module docstring) is part of the function's own docstring, for help().
compute.__doc__ = f"{compute.__doc__}\n\n{__doc__}"
