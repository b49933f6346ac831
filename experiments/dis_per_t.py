"""Diagnostic for docs/EXPERIMENTS.md: at which timesteps does the disentangling loss act?

For a stage-3 checkpoint, per timestep bucket (the same images, fresh noise and sampled units):
the mean published sample weight w_b ("Z": mean (z̃0 − z̃0^c)²), the schedule's share of it
((1 − ᾱ_t)²/ᾱ_t, so that w_b / factor = mean G_c²), the two cross-entropies, and how often the
logits already pick the sampled unit (argmax of the variant and invariant logits = c_b). The
last column is each bucket's share of the whole loss Σ w_b·(CE_va + CE_in) under uniform t.

    python experiments/dis_per_t.py CKPT [--n 256]
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from disdiff.api import DisDiff
from disdiff.data.registry import load_dataset


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--buckets", default="0,100,200,300,400,500,600,700,800,900,1000")
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    module = DisDiff.load(args.checkpoint).module.eval()
    data = load_dataset("shapes3d-synth", resolution=32)
    rng = np.random.RandomState(0)
    x = torch.from_numpy(data.sample_observations_from_factors(data.sample_factors(args.n, rng), rng)).float()
    edges = [int(b) for b in args.buckets.split(",")]
    alphas_cumprod = module.schedule.alphas_cumprod.double()
    rows = {}
    with torch.no_grad():
        for lo, hi in zip(edges[:-1], edges[1:]):
            t = torch.randint(lo, hi, (args.n,), generator=generator)
            out = module.compute_losses(x, t=t, generator=generator)
            dis = out["dis"]
            a = alphas_cumprod[t]
            factor = ((1 - a) ** 2 / a).float()
            z, z_hat, z_hat_c = out["z"], dis.z_hat, dis.z_hat_c
            va = torch.linalg.vector_norm(z_hat - z, dim=-1) - torch.linalg.vector_norm(z_hat_c - z, dim=-1)
            inv = torch.linalg.vector_norm(z_hat - z_hat_c, dim=-1)
            rows[f"{lo}-{hi}"] = {
                "w": dis.weight.mean().item(),
                "mean_G2": (dis.weight / factor).mean().item(),
                "ce_va": dis.ce_variant.mean().item(),
                "ce_in": dis.ce_invariant.mean().item(),
                "acc_va": (va.argmax(1) == dis.concept).float().mean().item(),
                "acc_in": (inv.argmax(1) == dis.concept).float().mean().item(),
                "loss": (dis.weight * (dis.ce_variant + dis.ce_invariant)).mean().item(),
            }
    total = sum(r["loss"] for r in rows.values())
    for key, r in rows.items():
        r["loss_share"] = r["loss"] / total
        print(key, json.dumps({k: float(f"{v:.4g}") for k, v in r.items()}), flush=True)


if __name__ == "__main__":
    main()
