"""Diagnostic for docs/EXPERIMENTS.md (D40): is there a read-out of the frozen networks in which ICA finds
scale or shape, as it finds the hues and the orientation in the pooled features (D38)?

The DPM encoder's features (:meth:`DPMFeatureEncoder.features_of_latent`) average every level of the frozen
UNet encoder half over space and flatten the lowest level. Here the same networks are read in other ways
(each level flattened, max- or std-pooled, other ``t``, the latent, the pixels, the pixels' colour edges), and for each variant
FastICA (no labels) is fitted on half of a random sample and scored on the other half: per factor, the
best η² of any component. A variant in which some component has η² near 1 for scale or shape is one an
ICA-initialised head could start from.

    python experiments/feature_variants.py STAGE3_CKPT [--n 12000] [--components 6,8,12] [--variants a,b]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.decomposition import FastICA
from synth_sample import random_sample

from disdiff.api import DisDiff
from disdiff.metrics.probe import variance_explained
from disdiff.models.dpm_feature_encoder import clean_latent

NAMES = ("floor", "wall", "object", "scale", "shape", "orient")


def levels(unet, latent: torch.Tensor, t: int) -> list[torch.Tensor]:
    _, hs = unet.encode(latent, torch.full((latent.shape[0],), t, dtype=torch.long))
    return hs


def edge_map(x: torch.Tensor) -> torch.Tensor:
    """(B, H-1, W-1) colour-edge strength (L1 of the RGB differences to the right and below), scaled per
    image to unit maximum so that how different two hues are matters less than where they meet."""
    dx = (x[:, :, :-1, 1:] - x[:, :, :-1, :-1]).abs().sum(1)
    dy = (x[:, :, 1:, :-1] - x[:, :, :-1, :-1]).abs().sum(1)
    edges = dx + dy
    return edges / edges.flatten(1).amax(1).clamp_min(1e-6)[:, None, None]


VARIANTS = {
    # name: (t, function of (images, latent, hs) -> (B, F))
    "pooled": (0, lambda x, z, hs: torch.cat([h.mean((2, 3)) for h in hs] + [hs[-1].flatten(1)], 1)),
    "pooled_t200": (200, lambda x, z, hs: torch.cat([h.mean((2, 3)) for h in hs] + [hs[-1].flatten(1)], 1)),
    "pooled_t600": (600, lambda x, z, hs: torch.cat([h.mean((2, 3)) for h in hs] + [hs[-1].flatten(1)], 1)),
    "maxpool": (0, lambda x, z, hs: torch.cat([h.amax((2, 3)) for h in hs] + [hs[-1].flatten(1)], 1)),
    "stdpool": (0, lambda x, z, hs: torch.cat([h.std((2, 3)) for h in hs], 1)),
    "mean_std": (0, lambda x, z, hs: torch.cat([h.mean((2, 3)) for h in hs] + [h.std((2, 3)) for h in hs], 1)),
    "spatial_all": (0, lambda x, z, hs: torch.cat([h.flatten(1) for h in hs], 1)),
    "spatial_4x4": (0, lambda x, z, hs: torch.cat([h.flatten(1) for h in hs[2:]], 1)),
    "latent": (0, lambda x, z, hs: z.flatten(1)),
    "pixels": (0, lambda x, z, hs: x.flatten(1)),
    "edges": (0, lambda x, z, hs: edge_map(x).flatten(1)),
    "edges_binary": (0, lambda x, z, hs: (edge_map(x) > 0.25).float().flatten(1)),
    # Both blocks, each divided by the square root of its width after the per-feature standardisation
    # (below), so that each block has the same total variance.
    "pooled+edges": (0, lambda x, z, hs: torch.cat([
        torch.cat([h.mean((2, 3)) for h in hs] + [hs[-1].flatten(1)], 1), edge_map(x).flatten(1)], 1)),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint", help="any stage-3 checkpoint of the dpm backbone (only its frozen networks are used)")
    parser.add_argument("--n", type=int, default=12000)
    parser.add_argument("--components", default="6,8,12")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    encoder = DisDiff.load(args.checkpoint).module.encoder
    first_stage, unet = encoder._frozen
    _, factors, images = random_sample(args.n)
    half = args.n // 2
    for name in args.variants.split(","):
        t, read = VARIANTS[name]
        start = time.time()
        with torch.no_grad():
            chunks = []
            for x in images.split(500):
                z = encoder.scale_factor * clean_latent(first_stage, x)
                chunks.append(read(x, z, levels(unet, z, t)).float())
            feats = torch.cat(chunks).numpy().astype(np.float64)
        feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-6)
        if name == "pooled+edges":
            feats[:, :544] /= np.sqrt(544)
            feats[:, 544:] /= np.sqrt(feats.shape[1] - 544)
        print(f"\n== {name}: {feats.shape[1]} features ({time.time() - start:.0f} s)")
        for k in (int(s) for s in args.components.split(",")):
            ica = FastICA(n_components=k, whiten="unit-variance", max_iter=1000, random_state=0).fit(feats[:half])
            eta = variance_explained(ica.transform(feats[half:])[:, :, None], factors[half:])
            pure = " ".join(f"{NAMES[j]} {eta[:, j].max():.2f}" for j in range(len(NAMES)))
            units = " ".join(NAMES[row.argmax()][:2] + f"{row.max():.2f}"[1:] for row in eta)
            print(f"  ICA {k:2d} | best per factor: {pure} | per component: {units}")


if __name__ == "__main__":
    main()
