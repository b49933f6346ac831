"""Diagnostic for docs/EXPERIMENTS.md (D20): does a unit hold factors *together* (an interaction)?

A unit whose variance no single factor explains (sum of its η² well below 1) may still be a
function of the image: η² of the joint levels of two or three factors (the share of the unit's
variance explained by the cell means of their combinations) says which ones. Cells with few
images overfit, so each line also gives the same statistic for the unit's values shuffled across
the images (the chance level for that number of cells). Per wall hue, the correlation of the unit
with scale and with shape shows a dependence whose sign depends on the hue.

    python experiments/unit_interactions.py CKPT:UNIT [CKPT:UNIT ...]
"""
from __future__ import annotations

import itertools
import sys

import numpy as np
from synth_sample import encode_in_chunks, random_sample

from disdiff.api import DisDiff
from disdiff.metrics.probe import variance_explained

NAMES = ["floor", "wall", "object", "scale", "shape", "orient"]


def eta(keys: np.ndarray, z: np.ndarray) -> float:
    """η² of ``z`` for the joint levels of the factor columns ``keys``: each distinct row of ``keys``
    becomes one level of a single factor for :func:`disdiff.metrics.probe.variance_explained`."""
    _, joint = np.unique(keys, axis=0, return_inverse=True)
    return float(variance_explained(z[:, None, None], joint.reshape(-1, 1))[0, 0])


def main(args: list[str]) -> None:
    _, factors, images = random_sample(6000)
    shuffle = np.random.default_rng(0).permutation(len(images))
    for ck, unit in [(a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1])) for a in args]:
        enc = DisDiff.load(ck).module.encoder.eval()
        z = encode_in_chunks(enc, images).numpy().reshape(len(images), enc.num_units, -1)[:, unit, 0]
        print(ck, "unit", unit)
        single = variance_explained(z[:, None, None], factors)[0]
        print("  single:", " ".join(f"{n} {v:.2f}" for n, v in zip(NAMES, single)))
        pairs = sorted(((eta(factors[:, [i, j]], z), eta(factors[:, [i, j]], z[shuffle]), f"{NAMES[i]} x {NAMES[j]}")
                        for i, j in itertools.combinations(range(6), 2)), reverse=True)
        print("  pairs (shuffled):", ", ".join(f"{n} {e:.2f} ({b:.2f})" for e, b, n in pairs[:5]))
        for cols in ([1, 3, 4], [0, 3, 4], [2, 3, 4]):
            name = " x ".join(NAMES[c] for c in cols)
            print(f"  {name}: {eta(factors[:, cols], z):.2f} (shuffled {eta(factors[:, cols], z[shuffle]):.2f})")
        for w in range(int(factors[:, 1].max()) + 1):
            s = factors[:, 1] == w
            print(f"  wall hue {w}: corr with scale {np.corrcoef(z[s], factors[s, 3])[0, 1]:+.2f}, "
                  f"with shape {np.corrcoef(z[s], factors[s, 4])[0, 1]:+.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
