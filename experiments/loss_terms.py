"""Diagnostic for docs/EXPERIMENTS.md: a stage-3 run's loss terms over time, in ~12 windows.

    python experiments/loss_terms.py RUN_DIR/logs/metrics.csv [...]

Per window: the cross-entropies of the disentangling loss (chance ln N), its sample weight w,
L_r and the disentangling term (means of the logged per-step values), and any opt-in unit penalty
that was logged (correlation, dependence, total correlation and its discriminator's loss).
"""
import csv
import sys

OPTIONAL = {"train/unit_correlation": "corr", "train/unit_dependence": "dep", "train/unit_tc": "tc",
            "train/tc_discriminator_loss": "D"}


def main(paths: list[str]) -> None:
    for path in paths:
        rows = [r for r in csv.DictReader(open(path)) if r.get("train/dis_ce_variant")]
        print(path)
        size = max(1, len(rows) // 12)
        for i in range(0, len(rows), size):
            chunk = rows[i:i + size]

            def mean(key: str) -> float:
                values = [float(r[key]) for r in chunk if r.get(key)]
                return sum(values) / max(1, len(values))

            print(f"  step {chunk[0]['step']:>5}  CE_va {mean('train/dis_ce_variant'):.3f}  "
                  f"CE_in {mean('train/dis_ce_invariant'):.3f}  w {mean('train/dis_sample_weight'):.4f}  "
                  f"Lr {mean('train/loss_rec_step'):.4f}  dis {mean('train/loss_dis_step'):.5f}"
                  + "".join(f"  {short} {mean(key):.4f}" for key, short in OPTIONAL.items() if key in chunk[0]))


if __name__ == "__main__":
    main(sys.argv[1:])
