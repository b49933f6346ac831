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
import functools
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.decomposition import FastICA
from synth_sample import random_sample

from disdiff.api import DisDiff
from disdiff.metrics.probe import variance_explained
from disdiff.models.colour_edges import colour_edge_map, colour_edge_strength
from disdiff.models.dpm_feature_encoder import clean_latent, pooled_levels

NAMES = ("floor", "wall", "object", "scale", "shape", "orient")


def levels(unet, latent: torch.Tensor, t: int) -> list[torch.Tensor]:
    _, hs = unet.encode(latent, torch.full((latent.shape[0],), t, dtype=torch.long))
    return hs


def smooth(x: torch.Tensor) -> torch.Tensor:
    """A 3x3 box blur (replicate padding): edges of a smoothed image, less sensitive to pixel noise."""
    return F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


def blur(x: torch.Tensor) -> torch.Tensor:
    """What D44 applies to images: a 2x2 average pool and bilinear upsampling back."""
    return F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="bilinear", align_corners=False)


VARIANTS = {
    # name: (t, function of (images, latent, hs, recon) -> (B, F)); recon() decodes the latent through the
    # first stage, only for the variants that call it (it is the slow part).
    "pooled": (0, lambda x, z, hs, recon: pooled_levels(hs)),
    "pooled_t200": (200, lambda x, z, hs, recon: pooled_levels(hs)),
    "pooled_t600": (600, lambda x, z, hs, recon: pooled_levels(hs)),
    "maxpool": (0, lambda x, z, hs, recon: torch.cat([h.amax((2, 3)) for h in hs] + [hs[-1].flatten(1)], 1)),
    "stdpool": (0, lambda x, z, hs, recon: torch.cat([h.std((2, 3)) for h in hs], 1)),
    "mean_std": (0, lambda x, z, hs, recon: torch.cat([h.mean((2, 3)) for h in hs] + [h.std((2, 3)) for h in hs], 1)),
    "spatial_all": (0, lambda x, z, hs, recon: torch.cat([h.flatten(1) for h in hs], 1)),
    "spatial_4x4": (0, lambda x, z, hs, recon: torch.cat([h.flatten(1) for h in hs[2:]], 1)),
    "latent": (0, lambda x, z, hs, recon: z.flatten(1)),
    "pixels": (0, lambda x, z, hs, recon: x.flatten(1)),
    "edges": (0, lambda x, z, hs, recon: colour_edge_map(x)),
    "edges_binary": (0, lambda x, z, hs, recon: (colour_edge_map(x) > 0.25).float()),
    "edges_smoothed": (0, lambda x, z, hs, recon: colour_edge_map(smooth(x))),
    "edges_raw": (0, lambda x, z, hs, recon: colour_edge_strength(x).flatten(1)),
    "edges_raw_pool2": (0, lambda x, z, hs, recon: F.avg_pool2d(colour_edge_strength(x)[:, None, :30, :30], 2).flatten(1)),
    "edges_smoothed_raw": (0, lambda x, z, hs, recon: colour_edge_strength(smooth(x)).flatten(1)),
    "edges_recon": (0, lambda x, z, hs, recon: colour_edge_map(recon())),
    "edges_smoothed5": (0, lambda x, z, hs, recon: colour_edge_map(smooth(smooth(x)))),
    # "pooled+...": both blocks, each divided by the square root of its width after the per-feature
    # standardisation (below), so that each block has the same total variance.
    "pooled+edges": (0, lambda x, z, hs, recon: torch.cat([pooled_levels(hs), colour_edge_map(x)], 1)),
    "pooled+edges_recon": (0, lambda x, z, hs, recon: torch.cat([pooled_levels(hs), colour_edge_map(recon())], 1)),
}


def read_variant(encoder, name: str, images: torch.Tensor) -> np.ndarray:
    """The read-out ``name`` of ``VARIANTS`` of ``images`` through a DPM encoder's frozen networks: ``(n, F)``."""
    t, read = VARIANTS[name]
    first_stage, unet = encoder._frozen
    with torch.no_grad():
        chunks = []
        for x in images.split(500):
            z = encoder.scale_factor * clean_latent(first_stage, x)
            recon = functools.partial(encoder.reconstruction, z)  # what edge_source: reconstruction reads
            chunks.append(read(x, z, levels(unet, z, t), recon).float())
        return torch.cat(chunks).numpy().astype(np.float64)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint", help="any stage-3 checkpoint of the dpm backbone (only its frozen networks are used)")
    parser.add_argument("--n", type=int, default=12000)
    parser.add_argument("--components", default="6,8,12")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--sensitivity", action="store_true",
                        help="also the ICA code's mean |Δz|/std on blurred and noised test images (D44)")
    args = parser.parse_args()
    encoder = DisDiff.load(args.checkpoint).module.encoder
    _, factors, images = random_sample(args.n)
    half = args.n // 2
    for name in args.variants.split(","):
        start = time.time()
        raw = read_variant(encoder, name, images)
        mean, std = raw.mean(0), raw.std(0) + 1e-6
        weight = np.ones(raw.shape[1])
        if name.startswith("pooled+"):
            weight[:544], weight[544:] = 1 / np.sqrt(544), 1 / np.sqrt(raw.shape[1] - 544)
        feats = (raw - mean) / std * weight
        if args.sensitivity:
            test = images[half:]
            noisy = (test + 0.1 * torch.randn(test.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
            shifted = {key: (read_variant(encoder, name, changed) - mean) / std * weight
                       for key, changed in (("blur", blur(test)), ("noise", noisy))}
        print(f"\n== {name}: {feats.shape[1]} features ({time.time() - start:.0f} s)")
        for k in (int(s) for s in args.components.split(",")):
            ica = FastICA(n_components=k, whiten="unit-variance", max_iter=1000, random_state=0).fit(feats[:half])
            eta = variance_explained(ica.transform(feats[half:])[:, :, None], factors[half:])
            pure = " ".join(f"{NAMES[j]} {eta[:, j].max():.2f}" for j in range(len(NAMES)))
            units = " ".join(NAMES[row.argmax()][:2] + f"{row.max():.2f}"[1:] for row in eta)
            print(f"  ICA {k:2d} | best per factor: {pure} | per component: {units}")
            if args.sensitivity:
                code = ica.transform(feats[half:])
                moved = {key: (np.abs(ica.transform(value) - code) / code.std(0)).mean(0) for key, value in shifted.items()}
                print("          mean |Δz|/std per component: " + " | ".join(
                    f"{key} max {m.max():.2f} median {np.median(m):.2f}" for key, m in moved.items()))


if __name__ == "__main__":
    main()
