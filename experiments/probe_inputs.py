"""Diagnostic for docs/EXPERIMENTS.md: how much do the *inputs* of stage 3 know about each factor?

A linear probe (disdiff.metrics.probe) on (a) the 32x32 images themselves, average-pooled to
16x16, and (b) the stage-1 latents s*E_AE(x) (8x8x3) that the frozen stage 2 denoises. If the
latents do not linearly carry the object's geometry, no encoder trained through L_r will learn it
quickly. A probe on pixels is only a rough yardstick (geometry is not linear in pixels).

    python experiments/probe_inputs.py [--n 15000] [--mlp]

``--mlp`` adds an MLP probe (one hidden layer of 256, sklearn) on the latents for the object's
geometry (scale, shape, orientation), which a linear probe underrates.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from synth_sample import encode_in_chunks, random_sample

from disdiff.metrics.probe import probe_accuracy
from disdiff.pipeline.pretrained import default_pretrained_dir
from disdiff.training.ldm_loading import load_pretrained_ldm


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=15000)
    parser.add_argument("--mlp", action="store_true")
    args = parser.parse_args()
    data, factors, images = random_sample(args.n)  # images (n, 3, 32, 32)
    # The latents stage 3 denoises, s·E_AE(x), from the packaged stage 2 (which carries its first stage).
    stage2 = load_pretrained_ldm(default_pretrained_dir() / "stage2.ckpt")
    latents = encode_in_chunks(lambda x: stage2["scale_factor"] * stage2["first_stage"].encode_to_latent(x), images)
    pooled = torch.nn.functional.avg_pool2d(images, 2)
    n_train = int(0.67 * args.n)
    out = {}
    for name, feats in (("pixels_16x16", pooled), ("latents_8x8x3", latents)):
        x = feats.flatten(1).numpy().astype(np.float64)
        row = {}
        for k, fname in enumerate(data.factor_names):
            acc, chance = probe_accuracy(x[:n_train], factors[:n_train, k], x[n_train:], factors[n_train:, k], max_iter=300)
            row[fname] = (round(acc, 3), round(chance, 3))
        out[name] = row
        print(name, json.dumps(row), flush=True)
    if args.mlp:
        from sklearn.neural_network import MLPClassifier

        x = latents.flatten(1).numpy().astype(np.float64)
        x = (x - x[:n_train].mean(0)) / x[:n_train].std(0)
        for k in (3, 4, 5):
            mlp = MLPClassifier((256,), max_iter=200, random_state=0).fit(x[:n_train], factors[:n_train, k])
            print(f"latents_8x8x3 MLP {data.factor_names[k]}: {mlp.score(x[n_train:], factors[n_train:, k]):.3f}", flush=True)


if __name__ == "__main__":
    main()
