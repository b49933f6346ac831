"""D15: what FactorVAE and DCI a code earns when only some factors have a pure unit of their own.

Synthetic codes for shapes3d-synth (no model): unit k holds factor k's index (scaled to [-1, 1]) for
the factors in ``--pure``; every other unit is independent Gaussian noise, fixed per image, or with
``--copies`` a noisy copy of one of the pure factors (what the learned codes' spare units hold).
The metrics run under the published settings (DCI with ``--dci-train``/``--dci-test`` points), so
the numbers are the ceiling of a code whose remaining factors are absent, as the learned codes'
geometry is.

    python experiments/partial_oracle.py --pure 0 1 2            # the three hues only
    python experiments/partial_oracle.py --pure 0 1 2 --copies   # spare units copy hues
    python experiments/partial_oracle.py --pure 0 1 2 5 4
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from disdiff.data.registry import load_dataset
from disdiff.evaluation.views import IndexObservations, LatentLookup
from disdiff.metrics import dci, factor_vae
from synth_sample import scaled_factors


def partial_code(view: IndexObservations, pure: list[int], copies: bool, seed: int) -> np.ndarray:
    """(M, 6) code: pure units for the factors in ``pure``; the rest noise or noisy copies of pure ones."""
    scaled = scaled_factors(view.factors_of(np.arange(view.num_images)), view.factor_sizes)
    rng = np.random.RandomState(seed)
    code = rng.standard_normal((view.num_images, view.num_factors))
    for unit, k in enumerate(pure):
        code[:, unit] = scaled[:, k]
    if copies:  # spare unit j copies pure factor j mod len(pure), with noise of a quarter of its std
        for j, unit in enumerate(range(len(pure), view.num_factors)):
            source = scaled[:, pure[j % len(pure)]]
            code[:, unit] = source + 0.25 * source.std() * rng.standard_normal(view.num_images)
    return code.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pure", type=int, nargs="+", required=True, help="factor indices with a pure unit")
    parser.add_argument("--copies", action="store_true", help="spare units copy pure factors instead of noise")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dci-train", type=int, default=10000)
    parser.add_argument("--dci-test", type=int, default=5000)
    args = parser.parse_args()
    view = IndexObservations.of(load_dataset("shapes3d-synth", resolution=32))
    lookup = LatentLookup(partial_code(view, args.pure, args.copies, args.seed))
    fvae = factor_vae.compute(view, lookup, np.random.RandomState(0))
    dcis = dci.compute(view, lookup, np.random.RandomState(0), num_train=args.dci_train, num_test=args.dci_test)
    print(json.dumps({"pure": [view.factor_names[k] for k in args.pure], "copies": args.copies,
                      "factor_vae": round(fvae["eval_accuracy"], 3), "dci": round(dcis["disentanglement"], 3),
                      "completeness": round(dcis["completeness"], 3)}))


if __name__ == "__main__":
    main()
