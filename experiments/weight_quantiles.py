"""Quantiles of the disentangling loss's per-sample weight w_b of a stage-3 checkpoint, on random images.

    python experiments/weight_quantiles.py CKPT [CKPT ...] --n 512

Used to choose ``dis_weight_cap`` (session 30): where a cap bites in a healthy run, and by how much.
The weight is computed at the full dis_weight (the ramp does not change w_b itself).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from synth_sample import random_sample

from disdiff.api import DisDiff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("ckpts", nargs="+")
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    _, _, images = random_sample(args.n, seed=1)
    for path in args.ckpts:
        module = DisDiff.load(path).module.eval()
        module.current_dis_weight = lambda: 1.0  # noqa: E731 - the weight w_b does not depend on it
        weights, ts = [], []
        with torch.no_grad():
            for i in range(0, args.n, args.batch):
                out = module.compute_losses(images[i:i + args.batch], generator=torch.Generator().manual_seed(i))
                weights.append(out["dis"].weight)
                ts.append(out["t"])
        w, t = torch.cat(weights).numpy(), torch.cat(ts).numpy()
        q = np.quantile(w, [0.5, 0.9, 0.99, 1.0])
        print(f"{path}\n  mean {w.mean():.4f} | median {q[0]:.4f} p90 {q[1]:.4f} p99 {q[2]:.4f} max {q[3]:.4f}")
        for cap in (0.05, 0.1, 0.2, 0.5):
            print(f"  cap {cap}: {np.mean(w > cap):.3f} of samples above, mean weight kept {np.minimum(w, cap).mean() / w.mean():.3f}")
        for lo, hi in ((0, 500), (500, 800), (800, 1000)):
            m = (t >= lo) & (t < hi)
            print(f"  t {lo}-{hi}: mean w {w[m].mean():.4f} (n {m.sum()})")


if __name__ == "__main__":
    main()
