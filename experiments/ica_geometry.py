"""Diagnostic for docs/EXPERIMENTS.md (D38): do independent components of the frozen features hold
single factors, the geometry included?

The factors of shapes3d-synth are independent by construction, and discrete (non-Gaussian). The
frozen UNet features hold scale and shape, but in directions of tiny variance (D27, D28), so any
read-out that follows variance (a fresh head, PCA) starts on the hues. Independent component
analysis looks for directions of maximal non-Gaussianity after whitening, which does not depend on
variance. This script fits scikit-learn's FastICA on the PCA-whitened features of random images
(no labels), then reports per component its η² for each factor (on held-out images), and per factor
the best component.

    python experiments/ica_geometry.py FEATURES.npy [--n 20000] [--components 8,16,32]

``FEATURES.npy``: a frozen-feature cache file (``disdiff export --feature-cache``), one row per
shapes3d-synth image in index order.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.decomposition import FastICA

from disdiff.data.registry import load_dataset
from disdiff.metrics.probe import variance_explained

NAMES = ("floor", "wall", "object", "scale", "shape", "orient")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("features")
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--components", default="8,16,32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--drop-top", type=int, default=0,
                        help="project out this many leading principal directions (fitted on the fit half) first")
    args = parser.parse_args()
    data = load_dataset("shapes3d-synth", resolution=32)
    cache = np.load(args.features, mmap_mode="r")
    rng = np.random.RandomState(args.seed)
    index = np.sort(rng.choice(len(cache), size=2 * args.n, replace=False))
    feats = np.asarray(cache[index], dtype=np.float64)
    factors = data.factors_of(index)
    fit, test = slice(0, None, 2), slice(1, None, 2)
    if args.drop_top:
        # Remove the largest-variance directions (the hues, D28) so that ICA's PCA step keeps the rest.
        centred = feats - feats[fit].mean(0)
        _, _, vt = np.linalg.svd(centred[fit], full_matrices=False)
        top = vt[:args.drop_top]
        feats = centred - centred @ top.T @ top
    print("factors:", " ".join(NAMES))
    for k in (int(s) for s in args.components.split(",")):
        start = time.time()
        ica = FastICA(n_components=k, whiten="unit-variance", max_iter=1000, tol=1e-4, random_state=args.seed)
        ica.fit(feats[fit])
        sources = ica.transform(feats[test])
        eta = variance_explained(sources[:, :, None], factors[test])  # (k, factors)
        kurt = ((sources - sources.mean(0)) ** 4).mean(0) / sources.var(0) ** 2 - 3.0
        print(f"\n== {k} components ({time.time() - start:.0f} s, {ica.n_iter_} iterations)")
        for j in np.argsort(-eta.max(1)):
            top = int(eta[j].argmax())
            print(f"  comp {j:2d} kurtosis {kurt[j]:+6.2f} | η² " + " ".join(f"{e:.2f}" for e in eta[j])
                  + f" | best {NAMES[top]} {eta[j, top]:.2f}")
        print("  per factor, best component's η²: " + " ".join(f"{NAMES[f]} {eta[:, f].max():.2f}"
                                                          for f in range(len(NAMES))))


if __name__ == "__main__":
    main()
