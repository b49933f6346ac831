"""Diagnostic for docs/EXPERIMENTS.md (D44): how far a trained encoder's code moves when an image is blurred
or noised, as generated images are before the disentangling loss re-encodes them.

For each checkpoint: encode 1,000 random shapes3d-synth images, the same images blurred (2x2 average pool,
bilinear upsampling back) and with Gaussian pixel noise (σ 0.1, clamped to [-1, 1]); print per unit the mean
|Δz| over the unit's standard deviation on the real images, and the largest |z| / std on real images.

    python experiments/code_sensitivity.py CKPT [CKPT ...]
"""
from __future__ import annotations

import sys

import torch
from feature_variants import blur
from synth_sample import random_sample

from disdiff.api import DisDiff


def main() -> None:
    _, _, x = random_sample(1000)
    noisy = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    for ckpt in sys.argv[1:]:
        encoder = DisDiff.load(ckpt).module.encoder.eval()
        with torch.no_grad():
            z, z_blur, z_noise = encoder(x), encoder(blur(x)), encoder(noisy)
        std = z.std(0)
        print(ckpt)
        print(f"  real:  max |z|/std {(z.abs() / std).max():.1f}")
        print("  blur:  mean |Δz|/std per unit", " ".join(f"{v:.2f}" for v in ((z_blur - z).abs() / std).mean(0).tolist()))
        print("  noise: mean |Δz|/std per unit", " ".join(f"{v:.2f}" for v in ((z_noise - z).abs() / std).mean(0).tolist()))


if __name__ == "__main__":
    main()
