"""Diagnostic for docs/EXPERIMENTS.md (D10): how do one-dimensional units hold a hue?

The hues of shapes3d-synth (as of 3D Shapes) are HSV hues k/10 around the whole colour circle, so
their colours form a closed loop in RGB. A linear read-out of features that are linear in the
colour projects that loop onto a line, which folds it: two hues land on the same value, and a
second unit is needed to tell them apart (a circle needs two coordinates). For a checkpoint this
prints, per unit and for the hue it holds most (largest η²), the unit's mean at each of the ten
hue levels, and how well a nearest-centroid classifier tells the levels apart from that unit alone
and from it together with each other unit holding the same hue.

    python experiments/hue_levels.py CKPT [--n 4000]
"""
from __future__ import annotations

import argparse
import itertools

import numpy as np
from synth_sample import encode_in_chunks, random_sample

from disdiff.api import DisDiff
from disdiff.metrics.probe import variance_explained

HUES = ("floor", "wall", "object")


def centroid_accuracy(x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of assigning each row of ``x`` (n, k) to the nearest class mean (train = test)."""
    levels = np.unique(y)
    means = np.stack([x[y == v].mean(axis=0) for v in levels])
    nearest = np.argmin(((x[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    return float((levels[nearest] == y).mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("--n", type=int, default=4000)
    args = parser.parse_args()
    _, factors, images = random_sample(args.n)
    encoder = DisDiff.load(args.checkpoint).module.encoder.eval()
    codes = encode_in_chunks(encoder, images).numpy()
    if codes.shape[1] != encoder.num_units:
        raise SystemExit("this diagnostic reads one-dimensional units (unit_dim 1)")
    codes = (codes - codes.mean(0)) / codes.std(0)
    eta = variance_explained(codes[:, :, None], factors)
    owner = eta[:, :3].argmax(axis=1)
    for hue in range(3):
        units = [k for k in range(codes.shape[1]) if owner[k] == hue and eta[k, hue] > 0.3]
        if not units:
            continue
        y = factors[:, hue]
        print(f"{HUES[hue]} hue: units {units}")
        for k in units:
            means = [codes[y == v, k].mean() for v in np.unique(y)]
            print(f"  unit {k} (η² {eta[k, hue]:.2f}) level means:", " ".join(f"{m:+.2f}" for m in means),
                  f"| nearest-centroid accuracy alone {centroid_accuracy(codes[:, [k]], y):.2f}")
        for a, b in itertools.combinations(units, 2):
            print(f"  units {a}+{b}: nearest-centroid accuracy {centroid_accuracy(codes[:, [a, b]], y):.2f}")


if __name__ == "__main__":
    main()
