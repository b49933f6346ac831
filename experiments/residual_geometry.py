"""Diagnostic for docs/EXPERIMENTS.md (D39): once the factors that ICA finds are explained away, are
scale and shape single directions of what is left of the frozen features?

D38: ICA of the frozen features finds the three hues and the orientation, not scale or shape. Here the
features of all images are centred on the mean of their cell of the *given* factors (``--given``,
by default the four that ICA finds; these are the true labels, so this is an upper bound for a
label-free "explain away" step), and PCA and FastICA are fitted on the residual of random images.
Reported: η² per component and factor on held-out images.

    python experiments/residual_geometry.py FEATURES.npy [--given 0,1,2,5] [--n 20000] [--components 2,4,8]
"""
from __future__ import annotations

import argparse

import numpy as np
from sklearn.decomposition import PCA, FastICA

from disdiff.data.registry import load_dataset
from disdiff.metrics.probe import variance_explained

NAMES = ("floor", "wall", "object", "scale", "shape", "orient")


def show(name: str, sources: np.ndarray, factors: np.ndarray) -> None:
    eta = variance_explained(sources[:, :, None], factors)
    print(f"\n== {name}")
    for j, row in enumerate(eta):
        print(f"  comp {j:2d} | η² " + " ".join(f"{e:.2f}" for e in row) + f" | best {NAMES[row.argmax()]}")
    print("  per factor, best: " + " ".join(f"{NAMES[f]} {eta[:, f].max():.2f}" for f in range(len(NAMES))))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("features")
    parser.add_argument("--given", default="0,1,2,5")
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--components", default="2,4,8")
    args = parser.parse_args()
    data = load_dataset("shapes3d-synth", resolution=32)
    feats = np.load(args.features, mmap_mode="r")
    factors = data.factors_of(np.arange(len(feats)))
    given = [int(s) for s in args.given.split(",")]
    _, cell = np.unique(factors[:, given], axis=0, return_inverse=True)
    cell = cell.ravel()
    sums = np.zeros((cell.max() + 1, feats.shape[1]))
    for start in range(0, len(feats), 60000):  # cell means in chunks (the cache is ~1 GB)
        np.add.at(sums, cell[start:start + 60000], np.asarray(feats[start:start + 60000], dtype=np.float64))
    means = sums / np.bincount(cell)[:, None]
    rng = np.random.RandomState(0)
    index = rng.choice(len(feats), size=2 * args.n, replace=False)
    residual = np.asarray(feats[index], dtype=np.float64) - means[cell[index]]
    fit, test = residual[: args.n], residual[args.n:]
    print("given:", [NAMES[g] for g in given], "| residual share of the variance:",
          f"{residual.var(0).sum() / np.asarray(feats[index], dtype=np.float64).var(0).sum():.3f}")
    for k in (int(s) for s in args.components.split(",")):
        pca = PCA(n_components=k).fit(fit)
        show(f"PCA {k} (explained {pca.explained_variance_ratio_.sum():.2f})", pca.transform(test), factors[index[args.n:]])
        ica = FastICA(n_components=k, whiten="unit-variance", max_iter=1000, random_state=0).fit(fit)
        show(f"ICA {k}", ica.transform(test), factors[index[args.n:]])


if __name__ == "__main__":
    main()
