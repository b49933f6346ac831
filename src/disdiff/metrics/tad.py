"""TAD, the Total AUROC Difference for CelebA attributes (NashAE protocol; spec 6.4).

Definition. ``latents`` (n, L) are raw representation dimensions (no PCA) and ``attributes``
(n, A) binary labels.

1. AUROC of latent l for attribute i. If the latent's range max - min exceeds
   ``range_threshold`` (0.2), threshold it at theta_s = min + s (max - min) for
   s = 0, 0.1, ..., 1.0 (``num_thresholds`` = 11 values) in both polarities (z >= theta predicts
   the attribute, or z < theta does). Each polarity gives one (FPR, TPR) point per threshold;
   FPRs and TPRs are sorted ascending, each on its own, and the area is
   sum_s TPR[s+1] (FPR[s+1] - FPR[s]). AUROC_il is the larger of the two polarities' areas.
   A latent whose range is at most ``range_threshold`` gets 0.5.
2. Per attribute, Delta_i = (largest AUROC_il over l) - (second largest).
3. Attribute filter: keep attribute i when its largest AUROC is at least ``auroc_threshold``
   (0.75) and rho_i = max_{j != i} MI(a_i; a_j) / H(a_i) is at most ``correlation_threshold``
   (0.2), with the binary mutual information and entropy computed from label co-occurrence.
   Attributes that are constant in the sample (H = 0) are never kept.
4. TAD = sum of Delta_i over the kept attributes; ``attributes_captured`` = how many were kept.

Returns ``{"tad", "attributes_captured", "per_attribute": {...}}`` where ``per_attribute`` lists
(in attribute order) ``delta``, ``max_auroc``, ``best_latent``, ``rho`` and ``kept``.

Quirks of this coarse threshold-grid AUROC, kept because the published TAD numbers use it: the
area is a right Riemann sum over 11 points, so it overestimates (a latent that takes only two
values scores 0.75 for an attribute independent of it); and the "z < theta" polarity never
reaches the point (1, 1), so a latent taking few values that codes an attribute *negatively*
can score far below 1 (a perfect binary one scores 0). ``add_endpoints=True`` (not the default)
adds (0, 0) and (1, 1) to both curves, which removes the second quirk and changes the scores of
continuous latents only negligibly.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from disdiff.metrics.utils import MetricError

DEFAULTS = {"auroc_threshold": 0.75, "correlation_threshold": 0.2, "range_threshold": 0.2, "num_thresholds": 11,
            "add_endpoints": False}


def _area(fpr: np.ndarray, tpr: np.ndarray, add_endpoints: bool = False) -> np.ndarray:
    """Area sum_s TPR[s+1] (FPR[s+1] - FPR[s]) after sorting FPR and TPR independently (along axis 0)."""
    if add_endpoints:
        zeros, ones = np.zeros_like(fpr[:1]), np.ones_like(fpr[:1])
        fpr, tpr = np.concatenate([zeros, fpr, ones]), np.concatenate([zeros, tpr, ones])
    fpr, tpr = np.sort(fpr, axis=0), np.sort(tpr, axis=0)
    return np.sum(tpr[1:] * np.diff(fpr, axis=0), axis=0)


def auroc_matrix(latents: np.ndarray, attributes: np.ndarray, range_threshold: float = 0.2,
                 num_thresholds: int = 11, add_endpoints: bool = False) -> np.ndarray:
    """AUROC (L, A) of every latent dimension for every attribute (step 1 of the definition)."""
    latents = np.asarray(latents, dtype=np.float64)
    labels = np.asarray(attributes).astype(bool)
    n, num_latents = latents.shape
    positives = labels.sum(axis=0).astype(np.float64)
    negatives = n - positives
    result = np.full((num_latents, labels.shape[1]), 0.5)
    valid = (positives > 0) & (negatives > 0)
    if num_thresholds < 2:
        raise MetricError("TAD: num_thresholds must be at least 2")
    steps = np.linspace(0.0, 1.0, num_thresholds)
    y = labels.astype(np.float64)
    for dim in range(num_latents):
        z = latents[:, dim]
        low, high = z.min(), z.max()
        if not high - low > range_threshold:
            continue
        thresholds = low + steps * (high - low)
        above = (z[:, None] >= thresholds[None, :]).astype(np.float64)  # (n, S)
        tp_above = above.T @ y  # (S, A)
        pred_above = above.sum(axis=0)[:, None]
        fp_above = pred_above - tp_above
        tp_below = positives[None, :] - tp_above  # z < theta predicts positive
        fp_below = negatives[None, :] - fp_above
        with np.errstate(divide="ignore", invalid="ignore"):
            area_above = _area(fp_above / negatives, tp_above / positives, add_endpoints)
            area_below = _area(fp_below / negatives, tp_below / positives, add_endpoints)
        result[dim] = np.where(valid, np.maximum(area_above, area_below), 0.5)
    return result


def attribute_correlation(attributes: np.ndarray) -> np.ndarray:
    """rho_i = max_{j != i} MI(a_i; a_j) / H(a_i) for binary attributes (n, A); inf where H(a_i) = 0."""
    a = np.asarray(attributes).astype(np.float64)
    n, num_attr = a.shape
    p11 = (a.T @ a) / n
    p1 = a.mean(axis=0)
    p10 = p1[:, None] - p11
    p01 = p1[None, :] - p11
    p00 = 1.0 - p11 - p10 - p01
    mi = np.zeros((num_attr, num_attr))
    for joint, pi, pj in ((p11, p1[:, None], p1[None, :]), (p10, p1[:, None], 1 - p1[None, :]),
                          (p01, 1 - p1[:, None], p1[None, :]), (p00, 1 - p1[:, None], 1 - p1[None, :])):
        with np.errstate(divide="ignore", invalid="ignore"):
            mi += np.where(joint > 0, joint * np.log(joint / (pi * pj)), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(p1 > 0, p1 * np.log(p1), 0.0) + np.where(p1 < 1, (1 - p1) * np.log(1 - p1), 0.0))
    np.fill_diagonal(mi, -np.inf)
    best = mi.max(axis=1) if num_attr > 1 else np.zeros(num_attr)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(h > 0, best / np.where(h > 0, h, 1.0), np.inf)


def compute_tad(latents: np.ndarray, attributes: np.ndarray, *, auroc_threshold: float = 0.75,
                correlation_threshold: float = 0.2, range_threshold: float = 0.2, num_thresholds: int = 11,
                add_endpoints: bool = False, attribute_names: Sequence[str] | None = None) -> dict:
    """TAD and the number of attributes captured; the definition follows."""
    latents = np.asarray(latents)
    attributes = np.asarray(attributes)
    if latents.ndim != 2 or attributes.ndim != 2 or latents.shape[0] != attributes.shape[0]:
        raise MetricError(f"TAD needs latents (n, L) and attributes (n, A) with the same n; got {latents.shape} "
                          f"and {attributes.shape}")
    if latents.shape[1] < 2:
        raise MetricError("TAD needs at least two latent dimensions")
    if not np.isin(attributes, (0, 1)).all():
        raise MetricError("TAD: attributes must be binary (0/1); convert -1/1 labels with (a + 1) // 2")
    if not np.isfinite(latents).all():
        raise MetricError("TAD: latents contain NaN or inf")
    auroc = auroc_matrix(latents, attributes, range_threshold, num_thresholds, add_endpoints)
    ordered = np.sort(auroc, axis=0)
    max_auroc = ordered[-1]
    delta = ordered[-1] - ordered[-2]
    rho = attribute_correlation(attributes)
    kept = (max_auroc >= auroc_threshold) & (rho <= correlation_threshold)
    per_attribute = {
        "delta": [float(x) for x in delta], "max_auroc": [float(x) for x in max_auroc],
        "best_latent": [int(x) for x in np.argmax(auroc, axis=0)],
        "rho": [float(x) if np.isfinite(x) else None for x in rho], "kept": [bool(x) for x in kept]}
    if attribute_names is not None:
        per_attribute["names"] = [str(x) for x in attribute_names]
    return {"tad": float(np.sum(delta[kept])), "attributes_captured": int(kept.sum()), "per_attribute": per_attribute}


compute = compute_tad

# The definition (module docstring) is part of the function's own docstring, for help().
compute.__doc__ = f"{compute.__doc__}\n\n{__doc__}"
