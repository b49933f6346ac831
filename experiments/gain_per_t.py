"""Diagnostic for docs/EXPERIMENTS.md: where in t does a trained DisDiff's code help the denoiser?

For a stage-3 checkpoint, per timestep bucket: the frozen model's L1 eps error alone, with the
shift of all units (the L_r the model trains), and with one factor's information removed from the
code (the code of an image that differs from x0 only in that factor: same image, factor k
resampled). The difference "swap k - full" is the error the code's knowledge of factor k saves
at that t; it shows at which noise levels each factor is worth learning.

    python experiments/gain_per_t.py RUN_DIR_OR_CKPT [--n 512]
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from disdiff.api import DisDiff
from disdiff.data.registry import load_dataset
from disdiff.diffusion.schedule import extract
from disdiff.diffusion.schedule import q_sample


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--buckets", default="0,100,200,300,400,500,600,700,800,900,1000")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = DisDiff.load(args.checkpoint).module
    model.eval()
    data = load_dataset("shapes3d-synth", resolution=32)
    rng = np.random.RandomState(0)
    factors = data.sample_factors(args.n, rng)

    def images_of(f):  # (n, 3, 32, 32) in [-1, 1]
        return torch.from_numpy(data.sample_observations_from_factors(f, rng)).float()

    x = images_of(factors)
    edges = [int(b) for b in args.buckets.split(",")]
    rows = {}
    with torch.no_grad():
        z0 = model.encode_images(x)
        code = model.encode_representation(x)
        swapped_codes = {}
        for k, name in enumerate(data.factor_names):
            f2 = factors.copy()
            f2[:, k] = rng.randint(data.factor_sizes[k], size=args.n)
            swapped_codes[name] = model.encode_representation(images_of(f2))
        for lo, hi in zip(edges[:-1], edges[1:]):
            t = torch.randint(lo, hi, (args.n,))
            noise = torch.randn_like(z0)

            z_t = q_sample(model.schedule, z0, t, noise)
            coef = extract(model.schedule.shift_coef, t, z_t.shape)

            def err(c):
                pred, fields = model.denoiser(z_t, t, c)
                return (noise - pred - coef * fields.sum(1)).abs().mean().item(), (noise - pred).abs().mean().item()

            full, frozen = err(code)
            row = {"frozen": round(frozen, 4), "full": round(full, 4)}
            for name, c in swapped_codes.items():
                row[name] = round(err(c)[0] - full, 4)
            rows[f"{lo}-{hi}"] = row
            print(f"{lo}-{hi}", json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
