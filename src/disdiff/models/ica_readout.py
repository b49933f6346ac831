"""A read-out of the frozen features initialised by independent component analysis (opt-in
``encoder_config.ica_init`` of the DPM head, a deviation from the paper).

Why (docs/EXPERIMENTS.md, D38): the factors of a ground-truth dataset are independent and discrete,
so each is a non-Gaussian source; where the frozen UNet features hold a factor along one direction,
ICA finds that direction without labels, whatever its share of the variance. On shapes3d-synth six
components of FastICA fitted on 5,000 images' features are the floor, wall and object hues and the
orientation (η² 0.88-0.96) plus two hue mixtures, and that code alone, untrained, scores FactorVAE
0.736. The randomly initialised head instead starts on the largest-variance directions (the hues,
D28) and takes thousands of steps to separate them.

The read-out is ``ŝ = ((h − μ) / σ) · Wᵀ + b``, with the per-feature mean ``μ`` and scale ``σ`` fixed
buffers (``σ`` is the standard deviation, times the square root of the width of the feature's block
when the features are given as blocks, so that every block has the same total variance for the ICA),
and ``W``, ``b`` a trained ``Linear`` set by :meth:`ICAReadout.fit` to
FastICA's unmixing of the standardised features, so that on the fitting images every output has
mean 0 and variance 1. The outputs are ordered by excess kurtosis, lowest first: a uniformly
distributed discrete factor is sub-Gaussian (kurtosis −1.2 for many levels), while the components
that mix factors are nearer Gaussian or heavy-tailed (D38: +1.4 to +2.6), and the first units are the
ones the nested unit dropout keeps most often.

Opt-in pruning (``num_components > num_outputs``): ICA fits more components than the read-out keeps,
then :func:`select_independent` keeps ``num_outputs`` of them, in kurtosis order, skipping a component
whose mutual information with one already kept exceeds ``max_dependence`` (nats; a plug-in estimate on
equal-count bins, no labels; D52). Why (D48): with the colour-edge map appended, ICA gives scale and shape
components of their own only at ~12 components, and the others then include copies of one hue, which ICA
leaves uncorrelated with the original but strongly dependent on it. On shapes3d-synth, 8 of 12 kept at 0.2
nats cover all six factors in 4 of 10 fits from one FastICA start, and in 8 of 10 with eight starts
(``restarts``, D53, D55).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

__all__ = ["ICAReadout", "independent_components", "mutual_information", "negentropy", "pca_whitening",
           "select_independent"]


def pca_whitening(features: np.ndarray, num_components: int) -> tuple[np.ndarray, np.ndarray]:
    """``(mean (F,), whitening (K, F))``: ``(features − mean) @ whitening.T`` are the first ``num_components``
    principal components of ``features`` ``(n, F)``, each scaled to unit variance.

    It is the whitening of scikit-learn's ``FastICA(whiten="unit-variance", whiten_solver="eigh")``, sign
    convention included (each eigenvector's first entry made positive), so FastICA run on the whitened
    features with ``whiten=False`` takes the same path from the same start. Why compute it here: FastICA
    whitens again on every fit, and with several starts on 5,000 images of 1,505 features the repeated
    SVD was most of a 96-second ICA fit at the start of every quickstart (docs/EXPERIMENTS.md, D64)."""
    centred = features - features.mean(0)
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred)
    order = np.argsort(eigenvalues)[::-1][:num_components]
    scale = np.sqrt(np.maximum(eigenvalues[order], np.finfo(np.float64).eps * 10))
    eigenvectors = eigenvectors[:, order] * np.sign(eigenvectors[0, order])
    return features.mean(0), (eigenvectors / scale).T * np.sqrt(len(features))


def independent_components(features: np.ndarray, num_components: int, seed: int = 0, max_iter: int = 1000,
                           restarts: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(unmixing (K, F), offset (K,), kurtosis (K,))`` of FastICA (scikit-learn, ``logcosh``
    contrast) on the :func:`pca_whitening` of ``features`` ``(n, F)``: ``features @ unmixing.T +
    offset`` are the K estimated sources, each with mean 0 and variance 1 over ``features``, ordered
    by excess kurtosis ``E[s⁴] − 3``, lowest first.

    ``restarts`` > 1 runs FastICA from the starts ``seed, seed + 1, ...`` (one whitening for all) and keeps
    the fit of the largest summed :func:`negentropy`, the contrast FastICA itself climbs. Why
    (docs/EXPERIMENTS.md, D54): on the same 5,000 images different starts end in different local optima,
    some of which merge two hues and leave scale without a component; the optimum of the largest
    negentropy was a complete one in both image sets tried."""
    from sklearn.decomposition import FastICA  # scikit-learn is a dependency; imported where it is used

    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) <= num_components:
        raise ValueError(f"ICA of {num_components} components needs more than {num_components} feature vectors "
                         f"(n, F), got shape {features.shape}")
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    mean, whitening = pca_whitening(features, num_components)
    white = (features - mean) @ whitening.T
    best = None
    for start in range(seed, seed + restarts):
        ica = FastICA(whiten=False, max_iter=max_iter, tol=1e-4, random_state=start)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # non-convergence is reported through n_iter_ by the caller's log
            sources = ica.fit_transform(white)
        source_mean, source_std = sources.mean(0), sources.std(0)
        standard = (sources - source_mean) / source_std
        contrast = float(negentropy(standard).sum())
        if best is None or contrast > best[0]:
            unmixing = ica.components_ @ whitening / source_std[:, None]
            best = (contrast, unmixing, -(mean @ unmixing.T) - source_mean / source_std,
                    (standard ** 4).mean(0) - 3.0)
    _, unmixing, offset, kurtosis = best
    order = np.argsort(kurtosis, kind="stable")
    return unmixing[order], offset[order], kurtosis[order]


def negentropy(sources: np.ndarray) -> np.ndarray:
    """Per column of standardised ``sources`` ``(n, K)``: Hyvärinen's approximation of negentropy with the
    ``logcosh`` contrast, ``(E[log cosh y] − E[log cosh ν])²`` with ``ν ~ N(0, 1)`` (0 for a Gaussian column)."""
    log_cosh = np.logaddexp(sources, -sources) - np.log(2.0)  # log cosh without cosh's overflow
    return (log_cosh.mean(0) - _GAUSSIAN_LOGCOSH) ** 2


#: E[log cosh ν] for ν ~ N(0, 1) (numerical integration, scipy.integrate.quad).
_GAUSSIAN_LOGCOSH = 0.37456720749


def mutual_information(sources: np.ndarray, max_samples: int | None = None, seed: int = 0,
                       estimator: str = "binned", bins: int = 16) -> np.ndarray:
    """``(K, K)`` symmetric mutual information (nats) between the columns of ``sources`` ``(n, K)``, with a zero
    diagonal, on the first ``max_samples`` rows.

    ``estimator="binned"`` (default, 5,000 rows): the plug-in estimate ``Σ p(a, b) log p(a, b) / (p(a) p(b))`` on
    ``bins`` equal-count bins per column (:func:`sklearn.metrics.mutual_info_score`); its upward bias is about
    ``(bins − 1)² / 2n`` nats (0.02 at 16 bins and 5,000 rows). ``estimator="knn"`` (3,000 rows):
    :func:`sklearn.feature_selection.mutual_info_regression` with 5 neighbours, which session 30 used. Why the
    default is the binned one (docs/EXPERIMENTS.md, D52): ICA components of a discrete factor take a few
    clustered values, on which the k-NN estimate is erratic -- it put a floor component and its copy (0.17)
    below a wall and an orientation component (0.20); the binned estimate ordered all nine copies of three fits
    (0.22-0.39) above every cross-factor pair (≤ 0.20)."""
    sources = np.asarray(sources, dtype=np.float64)
    count = sources.shape[1]
    if estimator == "knn":
        from sklearn.feature_selection import mutual_info_regression

        sources = sources[:3000 if max_samples is None else max_samples]
        mi = np.stack([mutual_info_regression(sources, sources[:, j], n_neighbors=5, random_state=seed)
                       for j in range(count)])
        mi = (mi + mi.T) / 2  # the estimate is not exactly symmetric
    elif estimator == "binned":
        from sklearn.metrics import mutual_info_score

        sources = sources[:5000 if max_samples is None else max_samples]
        edges = np.quantile(sources, np.linspace(0, 1, bins + 1)[1:-1], axis=0)  # (bins - 1, K)
        labels = [np.searchsorted(edges[:, j], sources[:, j]) for j in range(count)]
        mi = np.zeros((count, count))
        for i in range(count):
            for j in range(i + 1, count):
                mi[i, j] = mi[j, i] = mutual_info_score(labels[i], labels[j])
    else:
        raise ValueError(f"estimator must be 'binned' or 'knn', got {estimator!r}")
    np.fill_diagonal(mi, 0.0)
    return mi


def select_independent(sources: np.ndarray, keep: int, max_dependence: float, max_samples: int | None = None,
                       seed: int = 0, estimator: str = "binned") -> list[int]:
    """Indices of ``keep`` columns of ``sources`` ``(n, K)``, in order: walking the columns in order, a column
    is kept unless its :func:`mutual_information` with a column already kept exceeds ``max_dependence``.
    If fewer than ``keep`` pass, the skipped columns with the smallest such dependence fill the rest."""
    count = np.shape(sources)[1]
    if not 1 <= keep <= count:
        raise ValueError(f"cannot keep {keep} of {count} components")
    mi = mutual_information(sources, max_samples, seed, estimator)
    kept: list[int] = []
    for j in range(count):
        if len(kept) < keep and all(mi[j, i] <= max_dependence for i in kept):
            kept.append(j)
    skipped = [j for j in range(count) if j not in kept]
    skipped.sort(key=lambda j: max(mi[j, i] for i in kept))
    return sorted(kept + skipped[:keep - len(kept)])


class ICAReadout(nn.Module):
    """``(B, F) → (B, K)``: a trained linear read-out of standardised features, initialised by ICA (module docstring)."""

    def __init__(self, num_features: int, num_outputs: int, blocks: tuple[int, ...] | None = None,
                 num_components: int | None = None, max_dependence: float = 0.2, restarts: int = 1) -> None:
        super().__init__()
        self.num_components = int(num_components) if num_components is not None else int(num_outputs)
        if self.num_components < num_outputs or max_dependence <= 0 or restarts < 1:
            raise ValueError(f"num_components ({self.num_components}) must be at least num_outputs ({num_outputs}), "
                             f"max_dependence ({max_dependence}) > 0 and restarts ({restarts}) >= 1")
        self.max_dependence = float(max_dependence)
        self.restarts = int(restarts)
        blocks = tuple(int(b) for b in blocks) if blocks is not None else (int(num_features),)
        if sum(blocks) != num_features or min(blocks) < 1:
            raise ValueError(f"blocks {blocks} must be positive widths summing to num_features={num_features}")
        # Per feature, the square root of its block's width (module docstring); 1 for a single block, whose
        # overall scale the ICA's whitening removes anyway.
        weights = [torch.full((b,), float(b) ** 0.5 if len(blocks) > 1 else 1.0) for b in blocks]
        self.register_buffer("block_weight", torch.cat(weights), persistent=False)
        self.linear = nn.Linear(num_features, num_outputs)
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("scale", torch.ones(num_features))
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def standardisation(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(μ, σ)`` of ``features`` ``(n, F)`` as :meth:`fit` sets them: the per-feature mean, and the standard
        deviation times the block weight (module docstring), in the features' dtype."""
        return features.mean(0), features.std(0).clamp_min(1e-6) * self.block_weight.to(features.dtype)

    @torch.no_grad()
    def fit(self, features: torch.Tensor, seed: int = 0) -> np.ndarray:
        """Set ``μ``, ``σ``, ``W``, ``b`` from ``features`` ``(n, F)``; return the kept components' excess kurtosis."""
        h = features.detach().double().cpu()
        mean, scale = self.standardisation(h)
        standard = ((h - mean) / scale).numpy()
        unmixing, offset, kurtosis = independent_components(standard, self.num_components, seed,
                                                            restarts=self.restarts)
        if self.num_components > self.linear.out_features:
            kept = select_independent(standard @ unmixing.T + offset, self.linear.out_features, self.max_dependence,
                                      seed=seed)
            unmixing, offset, kurtosis = unmixing[kept], offset[kept], kurtosis[kept]
        self.mean.copy_(mean.to(self.mean.dtype))
        self.scale.copy_(scale.to(self.scale.dtype))
        self.linear.weight.copy_(torch.from_numpy(unmixing).to(self.linear.weight.dtype))
        self.linear.bias.copy_(torch.from_numpy(offset).to(self.linear.bias.dtype))
        self.fitted.fill_(True)
        return kurtosis

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear((h - self.mean.to(h.dtype)) / self.scale.to(h.dtype))
