"""Diagnostic for docs/EXPERIMENTS.md: how each unit's scale and content develop over a run's checkpoints.

For every checkpoint given: encode the same 4,000 random shapes3d-synth images (eval mode, as at
export) and print, per unit, its standard deviation over the images and its variance explained
η² by each factor's main effect (:func:`disdiff.metrics.probe.variance_explained`). Comparing runs
step by step shows when a unit becomes a copy of a hue, and whether its scale moves with it.

    python experiments/unit_trajectory.py RUN_DIR [RUN_DIR ...] [--steps 400,800,1200] [--n 4000]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from synth_sample import encode_in_chunks, random_sample

from disdiff.api import DisDiff
from disdiff.metrics.probe import variance_explained


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="+", help="stage-3 run directories (with checkpoints/step=*.ckpt)")
    parser.add_argument("--steps", default="400,800,1200,1600,2000,2400,3600")
    parser.add_argument("--n", type=int, default=4000)
    args = parser.parse_args()
    _, factors, images = random_sample(args.n)
    for run in args.runs:
        for step in (int(s) for s in args.steps.split(",")):
            path = Path(run) / "checkpoints" / f"step={step:08d}.ckpt"
            if not path.is_file():
                continue
            encoder = DisDiff.load(path).module.encoder.eval()
            codes = encode_in_chunks(encoder, images).numpy()
            units = codes.reshape(len(codes), encoder.num_units, -1)
            eta = variance_explained(units, factors)
            print(f"{run} step {step}  (per unit: std | η² floor wall object scale shape orientation)")
            for std, row in zip(np.sqrt(units.var(axis=0).sum(axis=-1)), eta):
                print(f"    {std:6.2f} |", " ".join(f"{v:.2f}" for v in row), flush=True)


if __name__ == "__main__":
    main()
