"""Diagnostic for docs/EXPERIMENTS.md (D27): where is the geometry linearly available at the start?

The units take the hues first because, at initialisation, a randomly initialised image encoder's
code varies with the hues and hardly with the geometry (D16: L_r then never asks a unit for it). This
compares three feature sets on the same 3,000 random shapes3d-synth images (2,000 to fit, 1,000 to
test), per factor: the linear probe's test accuracy and the share of the features' variance that the
factor's main effect explains (η² of the standardised features, summed over features):

* ``encoder@init``: the shipped small image encoder, freshly initialised (its 6 units);
* ``encoder@ckpt``: the trained encoder of the checkpoint given (its 6 units);
* ``unet t=T``: the frozen stage-2 UNet's encoder half on the clean latent noised to t (no noise
  draw for t = 0), every level's skip tensor average-pooled over space, plus the lowest level
  flattened.

    python experiments/feature_geometry.py STAGE3_CKPT [--n 3000] [--t 0,100,300]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from synth_sample import encode_in_chunks, factor_probe, random_sample

from disdiff.api import DisDiff
from disdiff.diffusion.schedule import q_sample
from disdiff.metrics.probe import variance_explained
from disdiff.training.disdiff_module import DisDiffModule


def report(name: str, features: np.ndarray, factors: np.ndarray, n_train: int) -> None:
    acc = factor_probe(features, factors, n_train)
    std = (features - features.mean(0)) / (features.std(0) + 1e-8)
    eta = variance_explained(std[:, :, None], factors)  # (features, factors)
    share = eta.sum(0) / len(eta)
    print(f"{name:16s} dims {features.shape[1]:4d} | probe " + " ".join(f"{a:.2f}" for a in acc)
          + " | mean η² " + " ".join(f"{s:.3f}" for s in share), flush=True)


@torch.no_grad()
def unet_features(module: DisDiffModule, images: torch.Tensor, t: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for x in images.split(250):
        z0 = module.encode_images(x)
        tt = torch.full((len(x),), t, dtype=torch.long)
        z = z0 if t == 0 else q_sample(module.schedule, z0, tt, torch.randn(z0.shape, generator=gen))
        _, hs = module.denoiser.unet.encode(z, tt)
        pooled = [h.mean(dim=(2, 3)) for h in hs]
        out.append(torch.cat(pooled + [hs[-1].flatten(1)], dim=1))
    return torch.cat(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--t", default="0,100,300")
    args = parser.parse_args()
    _, factors, images = random_sample(args.n)
    n_train = 2 * args.n // 3
    print("per factor: floor wall object scale shape orientation")
    trained = DisDiff.load(args.checkpoint).module.eval()
    torch.manual_seed(0)
    fresh = DisDiffModule(**{**dict(trained.hparams), "ldm_ckpt": None, "stage2": trained.hparams["stage2"]})
    fresh.load_state_dict({k: v for k, v in trained.state_dict().items() if not k.startswith("encoder.")},
                          strict=False)
    fresh.eval()
    report("encoder@init", encode_in_chunks(fresh.encoder, images).numpy(), factors, n_train)
    report("encoder@ckpt", encode_in_chunks(trained.encoder, images).numpy(), factors, n_train)
    for t in (int(s) for s in args.t.split(",")):
        report(f"unet t={t}", unet_features(trained, images, t).numpy(), factors, n_train)


if __name__ == "__main__":
    main()
