"""Diagnostic for docs/EXPERIMENTS.md (D48): can the components of a wide ICA be pruned to one per factor
without labels?

With the edge map appended to the frozen features, ICA needs ~12 components before scale and shape get
components of their own (D43, D45), and the others then include copies of a hue (two or three wall
components). A copy is a function of the same factor as the component it copies, so the two are strongly
*dependent* although ICA made them uncorrelated. Here the components are taken in ICA's kurtosis order
(lowest first, the read-out's own order) and a component is dropped when its mutual information with one
already kept exceeds a threshold (scikit-learn's k-nearest-neighbour estimate, no labels). The factors are
used only to score what was kept (η² per factor, on held-out images).

    python experiments/ica_selection.py STAGE3_CKPT [--n 8000] [--components 12,16] [--keep 6,8] [--readout pooled+edges_recon]
"""
from __future__ import annotations

import argparse

import numpy as np
from feature_variants import NAMES, read_variant
from synth_sample import random_sample

from disdiff.api import DisDiff
from disdiff.metrics.probe import variance_explained
from disdiff.models.ica_readout import independent_components, mutual_information


def greedy_keep(mi: np.ndarray, keep: int, threshold: float) -> list[int]:
    """In order, keep a component unless its MI with a kept one exceeds ``threshold``; at most ``keep``.
    (The product's ``select_independent`` without its fill-up, to show what the threshold alone passes.)"""
    kept: list[int] = []
    for j in range(len(mi)):
        if all(mi[j, i] <= threshold for i in kept):
            kept.append(j)
        if len(kept) == keep:
            break
    return kept


def describe(eta: np.ndarray, idx: list[int]) -> str:
    best = " ".join(f"{NAMES[j]} {eta[idx, j].max():.2f}" for j in range(len(NAMES)))
    units = " ".join(NAMES[eta[i].argmax()][:2] + f"{eta[i].max():.2f}"[1:] for i in idx)
    return f"best per factor: {best} | kept: {units}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--n", type=int, default=8000)
    parser.add_argument("--components", default="12,16")
    parser.add_argument("--keep", default="6,8")
    parser.add_argument("--thresholds", default="0.05,0.1,0.2,0.4")
    parser.add_argument("--readout", default="pooled+edges_recon")
    args = parser.parse_args()
    encoder = DisDiff.load(args.checkpoint).module.encoder
    _, factors, images = random_sample(args.n)
    raw = read_variant(encoder, args.readout, images)
    weight = np.ones(raw.shape[1])
    if "+" in args.readout:  # two blocks weighed equally, as ICAReadout(blocks=...)
        weight[:544], weight[544:] = 1 / np.sqrt(544), 1 / np.sqrt(raw.shape[1] - 544)
    feats = (raw - raw.mean(0)) / (raw.std(0) + 1e-6) * weight
    half = args.n // 2
    for k in (int(c) for c in args.components.split(",")):
        unmixing, offset, kurtosis = independent_components(feats[:half], k)
        fit_sources = feats[:half] @ unmixing.T + offset
        test_sources = feats[half:] @ unmixing.T + offset
        eta = variance_explained(test_sources[:, :, None], factors[half:])
        mi = mutual_information(fit_sources)
        print(f"\n== ICA {k} of {args.readout}: all components: {describe(eta, list(range(k)))}")
        print("   kurtosis: " + " ".join(f"{v:+.2f}" for v in kurtosis))
        print("   max MI with an earlier component: " + " ".join(
            f"{mi[j, :j].max():.2f}" if j else "-" for j in range(k)))
        for keep in (int(m) for m in args.keep.split(",")):
            print(f"   first {keep} by kurtosis: {describe(eta, list(range(keep)))}")
            for threshold in (float(v) for v in args.thresholds.split(",")):
                kept = greedy_keep(mi, keep, threshold)
                print(f"   keep {keep}, MI <= {threshold}: {describe(eta, kept)}  (components {kept})")


if __name__ == "__main__":
    main()
