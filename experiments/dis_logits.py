"""Diagnostic for docs/EXPERIMENTS.md: can the disentangling loss's cross-entropy tell the units apart?

For a stage-3 checkpoint and 256 shapes3d-synth images per timestep bucket, the quantities of
``dis_loss_from_codes``: the norm of a unit's code, ‖ẑ − z‖, δ_c = ‖ẑ_c − ẑ_c^c‖ for the shifted
unit c against δ_k for the others, CE_in, the sample weight w_b, and how often argmax_k δ_k = c.

    python experiments/dis_logits.py RUN_DIR_OR_CKPT
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from disdiff.api import DisDiff
from disdiff.data.registry import load_dataset


def main(checkpoint: str, n: int = 256) -> None:
    module = DisDiff.load(checkpoint).module
    module.eval()
    data = load_dataset("shapes3d-synth", resolution=32)
    rng = np.random.RandomState(0)
    x = torch.from_numpy(data.sample_observations_from_factors(data.sample_factors(n, rng), rng)).float()
    torch.manual_seed(0)
    rows = torch.arange(n)
    with torch.no_grad():
        for lo in range(0, 1000, 200):
            out = module.compute_losses(x, t=torch.randint(lo, lo + 200, (n,)))
            dis, z = out["dis"], out["z"]
            delta = (dis.z_hat - dis.z_hat_c).norm(dim=-1)  # (B, N)
            others = torch.ones_like(delta, dtype=torch.bool)
            others[rows, dis.concept] = False
            print(f"t {lo}-{lo + 200}: |z_k| {z.norm(dim=-1).mean():.3f}  |z_hat - z| {(dis.z_hat - z).norm(dim=-1).mean():.3f}  "
                  f"delta_c {delta[rows, dis.concept].mean():.4f}  delta_other {delta[others].mean():.4f}  "
                  f"CE_in {dis.ce_invariant.mean():.3f}  w {dis.weight.mean():.4f}  "
                  f"argmax=c {(delta.argmax(1) == dis.concept).float().mean():.3f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
