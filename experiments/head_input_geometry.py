"""Diagnostic for docs/EXPERIMENTS.md (D28): what a freshly initialised DPM head's code varies with, for
different normalisations of its input (the frozen UNet features).

D27 found the geometry linearly available in the frozen features (shape probe 0.89), yet the trained
head's code holds none of it. A head starts as a random read-out; its units vary with whatever spans
the large directions of its input. This measures, on the same random shapes3d-synth images:

* ``trace share``: per factor, the share of the input's total variance that the factor's main effect
  explains (between-level variance summed over dimensions / total variance) — what a random linear
  read-out of that input is expected to vary with;
* ``head@init η²``: the mean over units (and over five random initialisations) of the share of a
  fresh head's unit variance that each factor explains.

Inputs: ``raw`` (what the head reads today: its LayerNorm is its first layer), ``standardised`` (every
feature to zero mean and unit variance, statistics of the sample), ``whitened eps`` (ZCA with the
eigenvalue floor ``eps · mean λ``).

    python experiments/head_input_geometry.py STAGE3_CKPT [--n 3000]
"""
from __future__ import annotations

import argparse
import copy

import numpy as np
import torch
from synth_sample import encode_in_chunks, random_sample

from disdiff.api import DisDiff
from disdiff.models.feature_whitening import zca_matrix
from disdiff.metrics.probe import variance_explained

FACTORS = "floor wall object scale shape orientation"


def trace_share(features: np.ndarray, factors: np.ndarray) -> np.ndarray:
    centred = features - features.mean(0)
    total = (centred ** 2).sum()
    shares = []
    for k in range(factors.shape[1]):
        between = 0.0
        for level in np.unique(factors[:, k]):
            rows = factors[:, k] == level
            between += rows.sum() * (centred[rows].mean(0) ** 2).sum()
        shares.append(between / total)
    return np.array(shares)


def zca(features: torch.Tensor, eps: float) -> torch.Tensor:
    x = features.double()
    centred = x - x.mean(0)
    return (centred @ zca_matrix(torch.cov(centred.T), eps)).float()


def fresh_copy(head: torch.nn.Module) -> torch.nn.Module:
    """``head`` with every layer re-initialised (the global seed decides the draw)."""
    head = copy.deepcopy(head)
    for layer in head:
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
    return head


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("--n", type=int, default=3000)
    args = parser.parse_args()
    _, factors, images = random_sample(args.n)
    module = DisDiff.load(args.checkpoint).module.eval()
    encoder = module.encoder
    with torch.no_grad():
        raw = encode_in_chunks(encoder.features, images)
    inputs = {"raw": raw, "standardised": (raw - raw.mean(0)) / (raw.std(0) + 1e-6)}
    for eps in (1e-3, 1e-2, 1e-1):
        inputs[f"whitened {eps:g}"] = zca(raw, eps)
    print(f"per factor: {FACTORS}")
    for name, x in inputs.items():
        share = trace_share(x.numpy(), factors)
        etas = []
        for seed in range(5):
            torch.manual_seed(seed)
            head = fresh_copy(encoder.head)
            with torch.no_grad():
                code = head(x).numpy()
            code = (code - code.mean(0)) / (code.std(0) + 1e-8)
            etas.append(variance_explained(code[:, :, None], factors).mean(0))
        eta = np.mean(etas, axis=0)
        print(f"{name:16s} trace share " + " ".join(f"{s:.3f}" for s in share)
              + " | head@init η² " + " ".join(f"{e:.3f}" for e in eta), flush=True)


if __name__ == "__main__":
    main()
