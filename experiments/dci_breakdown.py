"""Diagnostic for docs/EXPERIMENTS.md (D56): where does a code's DCI disentanglement go?

For a representation file (``disdiff export`` or ``ica_code_export.py``), the published DCI importance matrix
(one gradient-boosted classifier per factor, 10,000 training and 5,000 test images drawn at random) is printed
with each code dimension's disentanglement ``D_j`` and weight ``ρ_j`` (its share of all importance), so that the
dimensions which cost the score are named: ``DCI = Σ_j ρ_j D_j``.

    python experiments/dci_breakdown.py REPRESENTATIONS.npz [--seed 0]
"""
from __future__ import annotations

import argparse

import numpy as np
from feature_variants import NAMES

from disdiff.data.registry import load_dataset
from disdiff.metrics.dci import compute_importance_gbt, disentanglement, disentanglement_per_code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("representations")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    code = np.load(args.representations)["latents"]
    code = code.reshape(len(code), -1)
    data = load_dataset("shapes3d-synth", resolution=32)
    rng = np.random.RandomState(args.seed)
    train, test = rng.randint(0, len(code), 10000), rng.randint(0, len(code), 5000)
    importance, train_acc, test_acc = compute_importance_gbt(code[train].T, data.factors_of(train).T,
                                                             code[test].T, data.factors_of(test).T)
    per_code = disentanglement_per_code(importance)
    weight = importance.sum(1) / importance.sum()
    print("dim  " + " ".join(f"{n:>7s}" for n in NAMES) + "      D_j    rho_j")
    for j in range(len(importance)):
        row = " ".join(f"{v:7.3f}" for v in importance[j])
        print(f"{j:3d}  {row}   {per_code[j]:6.3f}  {weight[j]:6.3f}")
    print(f"DCI disentanglement {disentanglement(importance):.3f}; informativeness train {train_acc:.3f} "
          f"test {test_acc:.3f}")


if __name__ == "__main__":
    main()
