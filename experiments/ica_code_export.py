"""Diagnostic for docs/EXPERIMENTS.md (D38b, D43b): an untrained code -- FastICA of a read-out of every
shapes3d-synth image -- written as a representation file that ``disdiff evaluate`` scores like a trained
run's export. It is the baseline a stage-3 head that starts from that ICA code should be read against.

Read-outs: ``pooled`` (the frozen DPM features of the feature cache), ``edges``
(:func:`disdiff.models.colour_edges.colour_edge_map`), ``pooled+edges`` (both, each block standardised per feature and then
scaled to the same total variance); ``cache``: the cache's columns as they are (a cache of an encoder with
``edge_features`` holds the edge map after the 544 UNet features), through the product's own
:class:`disdiff.models.ica_readout.ICAReadout` (blocks weighed as in training; ``--keep`` < ``--components``
prunes as ``encoder_config.ica_components`` does).

    python experiments/ica_code_export.py FEATURE_CACHE.npy OUT.npz --readout pooled+edges --components 8 [--fit 10000]
    python experiments/ica_code_export.py FEATURE_CACHE.npy OUT.npz --readout cache --components 12 --keep 8
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.decomposition import FastICA

from disdiff.data.registry import load_dataset
from disdiff.models.colour_edges import colour_edge_map
from disdiff.models.ica_readout import ICAReadout

UNET_FEATURES = 544  # the small stage 2's pooled features (the first block of a cache with edges)


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
    parser.add_argument("--readout", default="pooled+edges", choices=["pooled", "edges", "pooled+edges", "cache"])
    parser.add_argument("--keep", type=int, default=None, help="with --readout cache: components kept (default all)")
    parser.add_argument("--components", type=int, default=8)
    parser.add_argument("--fit", type=int, default=10000, help="random images the ICA is fitted on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--restarts", type=int, default=1, help="with --readout cache: FastICA starts (ica_restarts)")
    args = parser.parse_args()
    data = load_dataset("shapes3d-synth", resolution=32)
    cache = np.load(args.cache, mmap_mode="r")
    fit_index = np.sort(np.random.RandomState(args.seed).choice(len(cache), args.fit, replace=False))
    if args.readout == "cache":
        write(args, data, product_code(args, cache, fit_index))
        return
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
    write(args, data, np.concatenate(chunks))


def cache_blocks(width: int) -> tuple[int, ...]:
    """The ICA's blocks of a feature cache ``width`` columns wide: the UNet features, then the edge map if any."""
    return (UNET_FEATURES, width - UNET_FEATURES) if width > UNET_FEATURES else (width,)


def product_code(args, cache: np.ndarray, fit_index: np.ndarray) -> np.ndarray:
    """The code of ICAReadout fitted on ``fit_index``, over every image of the cache."""
    width = cache.shape[1]
    keep = args.keep or args.components
    ica = ICAReadout(width, keep, cache_blocks(width), num_components=args.components, restarts=args.restarts)
    kurtosis = ica.fit(torch.from_numpy(np.asarray(cache[fit_index], dtype=np.float64)), args.seed)
    print("kept components' kurtosis", np.round(kurtosis, 2))
    with torch.no_grad():
        return np.concatenate([ica(torch.from_numpy(np.array(cache[start:start + 20000], dtype=np.float32))).numpy()
                               for start in range(0, len(cache), 20000)])


def write(args, data, code: np.ndarray) -> None:
    np.savez(args.out, latents=code[:, :, None], global_step=np.int64(0), dataset=np.str_("shapes3d-synth"),
             factor_sizes=np.asarray(data.factor_sizes, dtype=np.int64))
    print(args.out, code.shape, "std per unit", np.round(code.std(0), 3))


if __name__ == "__main__":
    main()
