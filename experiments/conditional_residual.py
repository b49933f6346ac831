"""Diagnostic for docs/EXPERIMENTS.md (D42): given the units ICA finds (hues, orientation), does a small
autoencoder of the frozen features put what those units miss -- scale and shape, if nothing else --
into a few extra units, without labels?

D39-D40: scale and shape are no linear direction of any read-out, but once the other four factors are
fixed nothing else varies, so a *nonlinear* read-out conditioned on the ICA units could find them. Here

    s = enc(features),  features ≈ dec(u, s)

with ``u`` the ICA code of the features (fixed, no labels), ``s`` of ``--spare`` dimensions, both MLPs
trained on mean squared error of the standardised features. Reported on held-out images: the features'
R² from ``u`` alone and from ``(u, s)``, and η² of every factor in every ICA unit and spare unit. As a
bound, ``--given-truth`` replaces ``u`` by the true floor, wall, object hue and orientation (one-hot,
45 dimensions), the best conditioning a label-free ``u`` could reach.

    python experiments/conditional_residual.py FEATURES.npy [--ica 4] [--spare 2] [--n 40000] [--steps 3000]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.decomposition import FastICA
from torch import nn

from disdiff.data.registry import load_dataset
from disdiff.metrics.probe import variance_explained

NAMES = ("floor", "wall", "object", "scale", "shape", "orient")


def mlp(n_in: int, n_out: int, hidden: int = 256) -> nn.Module:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, n_out))


def fit(u: torch.Tensor, x: torch.Tensor, spare: int, steps: int, seed: int) -> tuple[nn.Module, nn.Module]:
    """Train dec(u, enc(x)) ≈ x (spare = 0: dec(u) ≈ x) with Adam on batches of 256."""
    torch.manual_seed(seed)
    enc = mlp(x.shape[1], spare) if spare else None
    dec = mlp(u.shape[1] + spare, x.shape[1])
    params = list(dec.parameters()) + (list(enc.parameters()) if enc else [])
    opt = torch.optim.Adam(params, lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (256,))
        inputs = torch.cat([u[idx], enc(x[idx])], 1) if enc else u[idx]
        loss = (dec(inputs) - x[idx]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return enc, dec


def show(name: str, sources: np.ndarray, factors: np.ndarray) -> None:
    eta = variance_explained(sources[:, :, None], factors)
    for j, row in enumerate(eta):
        print(f"  {name} {j} | η² " + " ".join(f"{e:.2f}" for e in row) + f" | best {NAMES[row.argmax()]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("features")
    parser.add_argument("--ica", type=int, default=4, help="ICA components used as the given units u")
    parser.add_argument("--spare", type=int, default=2)
    parser.add_argument("--n", type=int, default=40000, help="images: 3/4 to train, 1/4 to test")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--given-truth", action="store_true", help="u = the true hues and orientation (a bound)")
    args = parser.parse_args()
    start = time.time()
    data = load_dataset("shapes3d-synth", resolution=32)
    cache = np.load(args.features, mmap_mode="r")
    index = np.sort(np.random.RandomState(args.seed).choice(len(cache), size=args.n, replace=False))
    feats = np.asarray(cache[index], dtype=np.float64)
    factors = data.factors_of(index)
    n_fit = 3 * args.n // 4
    feats = (feats - feats[:n_fit].mean(0)) / (feats[:n_fit].std(0) + 1e-6)
    if args.given_truth:
        # One-hot: a scalar hue index would ask the decoder to memorise a 10-valued lookup (R² < 0 in 3,000 steps).
        u = np.concatenate([np.eye(data.factor_sizes[k])[factors[:, k]] for k in (0, 1, 2, 5)], 1)
        print("u: the true floor, wall, object hue and orientation, one-hot")
    else:
        u = FastICA(n_components=args.ica, whiten="unit-variance", max_iter=1000, random_state=0).fit(feats[:n_fit]).transform(feats)
        print(f"u: {args.ica} ICA components of the features")
    x_t, u_t = torch.tensor(feats, dtype=torch.float32), torch.tensor(u, dtype=torch.float32)
    test = slice(n_fit, None)
    with torch.no_grad():
        total = x_t[test].var(0).sum().item()
    _, dec0 = fit(u_t[:n_fit], x_t[:n_fit], 0, args.steps, args.seed)
    enc, dec = fit(u_t[:n_fit], x_t[:n_fit], args.spare, args.steps, args.seed)
    with torch.no_grad():
        r2_u = 1 - (dec0(u_t[test]) - x_t[test]).pow(2).sum(0).sum().item() / len(x_t[test]) / total
        s = enc(x_t[test])
        r2_us = 1 - (dec(torch.cat([u_t[test], s], 1)) - x_t[test]).pow(2).sum(0).sum().item() / len(x_t[test]) / total
    print(f"held-out R² of the features: from u {r2_u:.3f}, from (u, s) {r2_us:.3f}   ({time.time() - start:.0f} s)")
    print("per unit: η² floor wall object scale shape orientation")
    if not args.given_truth:
        show("u", u[test], factors[test])
    show("s", s.numpy(), factors[test])


if __name__ == "__main__":
    main()
