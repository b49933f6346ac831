"""Diagnostic for docs/EXPERIMENTS.md (D26): do two units that hold the same factor have aligned fields?

For every checkpoint given: encode 2,000 random shapes3d-synth images and print each unit's variance
explained η² by each factor (as unit_trajectory.py), then, on 256 of them and for t drawn in four
bands of the schedule, the units' per-sample squared field cosines averaged over the samples
(:func:`disdiff.models.field_alignment.field_cosines`) and each unit's field RMS. A penalty on the
alignment (opt-in ``field_alignment_weight``) is well aimed if copies have cos² near 1 and units of
different factors near 0 — including a geometric unit against the object's hue.

    python experiments/field_alignment.py CKPT [CKPT ...] [--n 2000] [--batch 256]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from synth_sample import encode_in_chunks, random_sample

from disdiff.api import DisDiff
from disdiff.metrics.probe import variance_explained
from disdiff.models.field_alignment import field_cosines

BANDS = ((0, 250), (250, 500), (500, 750), (750, 1000))
FACTORS = "F W O s S o".split()  # floor, wall, object hue, scale, shape, orientation


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    _, factors, images = random_sample(args.n)
    gen = torch.Generator().manual_seed(0)
    for path in args.checkpoints:
        module = DisDiff.load(path).module.eval()
        codes = encode_in_chunks(module.encoder, images).numpy()
        units = codes.reshape(len(codes), module.num_units, -1)
        eta = variance_explained(units, factors)
        print(f"{path}\n  unit: std | η² {' '.join(FACTORS)} | main")
        for k, (std, row) in enumerate(zip(np.sqrt(units.var(axis=0).sum(axis=-1)), eta)):
            print(f"  {k}: {std:5.2f} | {' '.join(f'{v:.2f}' for v in row)} | {FACTORS[int(np.argmax(row))]}")
        x = images[: args.batch]
        for lo, hi in BANDS:
            t = torch.randint(lo, hi, (len(x),), generator=gen)
            with torch.no_grad():
                fields = module.compute_losses(x, t=t, generator=gen)["fields"]
            cos2 = field_cosines(fields).square().mean(0).numpy()
            rms = fields.flatten(2).square().mean(-1).sqrt().mean(0).numpy()
            off = cos2[np.triu_indices(len(cos2), 1)].mean()
            print(f"  t in [{lo},{hi}): mean cos² over pairs {off:.3f}; field RMS "
                  + " ".join(f"{r:.3f}" for r in rms))
            for row in cos2:
                print("     " + " ".join(f"{v:.2f}" for v in row))


if __name__ == "__main__":
    main()
