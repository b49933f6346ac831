"""Diagnostic for docs/EXPERIMENTS.md (D38b, D43b): an untrained code -- FastICA of a read-out of every
shapes3d-synth image -- written as a representation file that ``disdiff evaluate`` scores like a trained
run's export. It is the baseline a stage-3 head that starts from that ICA code should be read against.

Read-outs: ``pooled`` (the frozen DPM features of the feature cache), ``edges``
(:func:`disdiff.models.colour_edges.colour_edge_map`), ``pooled+edges`` (both, each block standardised per feature and then
scaled to the same total variance).

    python experiments/ica_code_export.py FEATURE_CACHE.npy OUT.npz --readout pooled+edges --components 8 [--fit 10000]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.decomposition import FastICA

from disdiff.data.registry import load_dataset
from disdiff.models.colour_edges import colour_edge_map


def readout(name: str, cache: np.ndarray, data, indices: np.ndarray) -> np.ndarray:
    blocks = []
    if name in ("pooled", "pooled+edges"):
        blocks.append(np.asarray(cache[indices], dtype=np.float64))
    if name in ("edges", "pooled+edges"):
        blocks.append(colour_edge_map(torch.from_numpy(data.images(indices))).double().numpy())
    return np.concatenate(blocks, 1) if len(blocks) > 1 else blocks[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("cache", help="the frozen-feature cache of all images (runs/exp/feature-cache/...npy)")
    parser.add_argument("out")
    parser.add_argument("--readout", default="pooled+edges", choices=["pooled", "edges", "pooled+edges"])
    parser.add_argument("--components", type=int, default=8)
    parser.add_argument("--fit", type=int, default=10000, help="random images the ICA is fitted on")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = load_dataset("shapes3d-synth", resolution=32)
    cache = np.load(args.cache, mmap_mode="r")
    fit_index = np.sort(np.random.RandomState(args.seed).choice(len(cache), args.fit, replace=False))
    fit = readout(args.readout, cache, data, fit_index)
    mean, std = fit.mean(0), fit.std(0) + 1e-6
    weight = np.ones(fit.shape[1])
    if args.readout == "pooled+edges":
        width = cache.shape[1]
        weight[:width], weight[width:] = 1 / np.sqrt(width), 1 / np.sqrt(fit.shape[1] - width)
    ica = FastICA(n_components=args.components, whiten="unit-variance", max_iter=1000, random_state=args.seed)
    ica.fit((fit - mean) / std * weight)
    chunks = []
    for start in range(0, len(cache), 20000):
        index = np.arange(start, min(start + 20000, len(cache)))
        chunks.append(ica.transform((readout(args.readout, cache, data, index) - mean) / std * weight).astype(np.float32))
    code = np.concatenate(chunks)
    np.savez(args.out, latents=code[:, :, None], global_step=np.int64(0), dataset=np.str_("shapes3d-synth"),
             factor_sizes=np.asarray(data.factor_sizes, dtype=np.int64))
    print(args.out, code.shape, "std per unit", np.round(code.std(0), 3))


if __name__ == "__main__":
    main()
