"""Diagnostic for docs/EXPERIMENTS.md (D52): why does one ICA fit of the 8-of-12 start lose a factor (D51), and
can a label-free score tell the good fits from the bad?

For each seed, the product's :class:`disdiff.models.ica_readout.ICAReadout` standardisation and FastICA
(``--restarts`` starts) are fitted on ``--fit`` random images of a feature cache (as ``ica_code_export.py
--readout cache``); all K components and the kept N (pruned with ``--estimator``) are scored on ``--test``
other images: η² per factor (labels, for the diagnosis only) and label-free quantities -- the summed
negentropy of all K and of the kept N (the contrast FastICA climbs), the kept ones' summed |kurtosis|, and
the largest and mean mutual information between kept ones. ``--image-seed`` fits every seed's FastICA on the
same images, so that only its start differs (D54).

    python experiments/ica_restarts.py FEATURE_CACHE.npy [--seeds 0,1,2] [--restarts 8] [--estimator binned|knn]
        [--image-seed S] [--components 12] [--keep 8] [--fit 5000]
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from feature_variants import NAMES
from ica_code_export import cache_blocks

from disdiff.data.registry import load_dataset
from disdiff.metrics.probe import variance_explained
from disdiff.models.ica_readout import (ICAReadout, independent_components, mutual_information, negentropy,
                                       select_independent)

COVERED = np.array([0.5, 0.5, 0.5, 0.25, 0.25, 0.5])  # η² that counts as "the factor has a kept component" (D53)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cache")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--components", type=int, default=12)
    parser.add_argument("--keep", type=int, default=8)
    parser.add_argument("--fit", type=int, default=5000)
    parser.add_argument("--test", type=int, default=20000)
    parser.add_argument("--threshold", type=float, default=0.2)
    parser.add_argument("--image-seed", type=int, default=None,
                        help="fit every seed's FastICA on the same images (this seed's), so only its start differs")
    parser.add_argument("--restarts", type=int, default=1, help="FastICA starts per fit (the product's ica_restarts)")
    parser.add_argument("--estimator", default="binned", choices=["binned", "knn"])
    args = parser.parse_args()
    data = load_dataset("shapes3d-synth", resolution=32)
    cache = np.load(args.cache, mmap_mode="r")
    width = cache.shape[1]
    readout = ICAReadout(width, args.keep, cache_blocks(width), args.components)  # for its standardisation only
    test_index = np.sort(np.random.RandomState(12345).choice(len(cache), args.test, replace=False))
    test_raw = np.asarray(cache[test_index], dtype=np.float64)
    test_factors = data.factors_of(test_index)
    for seed in (int(s) for s in args.seeds.split(",")):
        image_seed = seed if args.image_seed is None else args.image_seed
        fit_index = np.sort(np.random.RandomState(image_seed).choice(len(cache), args.fit, replace=False))
        raw = torch.from_numpy(np.asarray(cache[fit_index], dtype=np.float64))
        mean, scale = readout.standardisation(raw)
        fit = ((raw - mean) / scale).numpy()
        unmixing, offset, kurtosis = independent_components(fit, args.components, seed, restarts=args.restarts)
        fit_sources = fit @ unmixing.T + offset
        kept = select_independent(fit_sources, args.keep, args.threshold, seed=seed, estimator=args.estimator)
        test_sources = ((test_raw - mean.numpy()) / scale.numpy()) @ unmixing.T + offset
        eta = variance_explained(test_sources[:, :, None], test_factors)
        mi = mutual_information(fit_sources, seed=seed, estimator=args.estimator)
        kept_mi = mi[np.ix_(kept, kept)][np.triu_indices(len(kept), 1)]
        neg = negentropy(fit_sources)
        best = eta[kept].max(0)
        row = {
            "seed": seed,
            "complete": bool((best >= COVERED).all()),
            "best_eta_all": {n: round(float(eta[:, j].max()), 2) for j, n in enumerate(NAMES)},
            "best_eta_kept": {n: round(float(eta[kept, j].max()), 2) for j, n in enumerate(NAMES)},
            "components": [f"{NAMES[int(eta[i].argmax())]}{eta[i].max():.2f} k{kurtosis[i]:+.2f}"
                           + ("*" if i in kept else "") for i in range(args.components)],
            "negentropy": round(float(neg.sum()), 4),
            "kept_negentropy": round(float(neg[kept].sum()), 4),
            "kept_abs_kurtosis": round(float(np.abs(kurtosis[kept]).sum()), 2),
            "kept_max_mi": round(float(kept_mi.max()), 3),
            "kept_mean_mi": round(float(kept_mi.mean()), 3),
            "kept_pairs_over_threshold": int((kept_mi > args.threshold).sum()),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
