"""Diagnostic for docs/EXPERIMENTS.md: variance explained per unit and factor, and cross-unit correlation.

For exported representations of a factor grid (`disdiff export`: every image in canonical order,
with the grid's `factor_sizes` saved beside the codes): the correlation ratio η² of every unit with every factor on 50,000 random grid
points (:func:`disdiff.metrics.probe.variance_explained`), and the mean over 200 random batches
of 32 of the penalty of the opt-in `unit_decorrelation_weight`
(:func:`disdiff.models.unit_decorrelation.cross_unit_correlation`; independent units give ~1/32).

    python experiments/unit_variance.py RUN_DIR/representations/step=XXXXXXXX.npz [...]
"""
import sys

import numpy as np
import torch

from disdiff.evaluation.views import IndexObservations
from disdiff.metrics.probe import variance_explained
from disdiff.models.unit_decorrelation import cross_unit_correlation


def main(paths: list[str]) -> None:
    for path in paths:
        with np.load(path) as data:
            latents, grid = data["latents"], IndexObservations(data["factor_sizes"])
        if len(latents) != grid.num_images:
            raise SystemExit(f"{path}: {len(latents)} codes, expected the full grid of {grid.num_images}")
        points = np.random.default_rng(0).choice(grid.num_images, 50000, replace=False)
        eta = variance_explained(latents[points], grid.factors_of(points))
        print(path)
        print("  variance explained (rows: units; factors in the dataset's order | sum)")
        for row in eta:
            print("   ", " ".join(f"{v:.2f}" for v in row), f"| {row.sum():.2f}")
        codes = torch.from_numpy(latents).float()
        g = torch.Generator().manual_seed(0)
        corr = [cross_unit_correlation(codes[torch.randint(0, len(codes), (32,), generator=g)]).item()
                for _ in range(200)]
        print(f"  mean cross-unit corr^2 over batches of 32: {np.mean(corr):.4f}")


if __name__ == "__main__":
    main(sys.argv[1:])
