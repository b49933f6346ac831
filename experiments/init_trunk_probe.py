"""Diagnostic for docs/EXPERIMENTS.md (D9): what does an *untrained* encoder trunk show of each factor?

D5 found the trained trunks' features no better for the geometry than at step 400, and far below
the pixels' (D1). This probes freshly initialised trunks (BatchNorm statistics gathered over the
sample, then eval mode) for several numbers of stride-2 convolutions: at 32x32 the published four
leave a 2x2 map before the flatten, where the published 64x64 encoder keeps 4x4.

    python experiments/init_trunk_probe.py [--downsamplings 4 3 2] [--width 64] [--seeds 0 1]
"""
from __future__ import annotations

import argparse

import torch
from synth_sample import encode_in_chunks, factor_probe, random_sample

from disdiff.models.image_encoder import ImageEncoder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--downsamplings", type=int, nargs="+", default=[4, 3, 2])
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--test", type=int, default=2000)
    args = parser.parse_args()
    _, factors, images = random_sample(args.train + args.test)
    for down in args.downsamplings:
        for seed in args.seeds:
            torch.manual_seed(seed)
            encoder = ImageEncoder(resolution=32, width=args.width, num_units=6, unit_dim=1, downsamplings=down)
            for m in encoder.modules():  # cumulative BatchNorm statistics over the whole sample
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.momentum = None
            encoder.train()
            encode_in_chunks(lambda x: encoder._features(x), images)
            encoder.eval()
            trunk = encode_in_chunks(lambda x: encoder._features(x).flatten(1), images).numpy()
            accs = factor_probe(trunk, factors, args.train)
            print(f"downsamplings {down} seed {seed} features {trunk.shape[1]}:", " ".join(f"{a:.2f}" for a in accs), flush=True)


if __name__ == "__main__":
    main()
