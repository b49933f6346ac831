"""Diagnostic D29 of docs/EXPERIMENTS.md: how much does resampling one factor change the stage-2 latent,
measured in the norms a reconstruction loss could use?

For n random images and, per factor, the same images with that factor moved to another level: the
latent difference Δ = E(x') − E(x) (the first stage's scaled latent, what stage 3 denoises), in
mean |Δ|, mean Δ², and mean |D Δ| with D the spatial forward differences of
:func:`disdiff.diffusion.highpass_loss.spatial_differences` (what ``rec_highpass_weight`` adds to
L_r). The ratios to the wall hue say how much more a loss in that norm asks of the wall's colour
than of each other factor.

    python experiments/factor_latent_norms.py RUN_DIR_OR_STAGE3_CKPT [--n 1024]
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from disdiff.api import DisDiff
from disdiff.data.registry import load_dataset
from disdiff.diffusion.highpass_loss import spatial_differences


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("--n", type=int, default=1024)
    args = parser.parse_args()
    model = DisDiff.load(args.checkpoint).module.eval()
    data = load_dataset("shapes3d-synth", resolution=32)
    rng = np.random.RandomState(0)
    factors = data.sample_factors(args.n, rng)

    def latents(f: np.ndarray) -> torch.Tensor:
        return model.encode_images(torch.from_numpy(data.sample_observations_from_factors(f, rng)).float())

    norms = {}
    with torch.no_grad():
        base = latents(factors)
        for k, name in enumerate(data.factor_names):
            moved = factors.copy()  # another level of factor k, never the same one
            moved[:, k] = (moved[:, k] + rng.randint(1, data.factor_sizes[k], size=args.n)) % data.factor_sizes[k]
            delta = latents(moved) - base
            norms[name] = {"l1": delta.abs().mean().item(), "l2": delta.pow(2).mean().item(),
                           "diff_l1": spatial_differences(delta).abs().mean().item()}
    wall = norms["wall_hue"]
    for name, v in norms.items():
        v.update({f"wall_over_{key}": round(wall[key] / v[key], 2) for key in ("l1", "l2", "diff_l1")})
        print(name, json.dumps({key: round(val, 4) for key, val in v.items()}), flush=True)


if __name__ == "__main__":
    main()
