"""Stage-3 loss terms of runs, means per 200 optimizer steps, from their Lightning ``logs/metrics.csv``.

    python experiments/loss_trajectory.py RUN [RUN ...]

RUN is a trial's name under runs/exp, or any stage-3 run directory (e.g. runs/qs30/m22_s0/stage3_disdiff).
"""
from __future__ import annotations

import collections
import csv
import sys
from pathlib import Path

TERMS = ("train/loss_rec_step", "train/loss_dis_step", "train/dis_sample_weight", "train/dis_ce_variant",
         "train/dis_ce_invariant")
BUCKET = 200


def run_directory(name: str) -> Path:
    path = Path(name)
    return path if (path / "logs" / "metrics.csv").is_file() else Path("runs/exp") / name


def bucket_means(rows: list[dict[str, str]], key: str) -> dict[int, float]:
    """Mean of the logged values of ``key`` per bucket of ``BUCKET`` steps (keyed by the bucket's first step)."""
    values: dict[int, list[float]] = collections.defaultdict(list)
    for row in rows:
        if row.get(key):
            values[int(row["step"]) // BUCKET * BUCKET].append(float(row[key]))
    return {start: sum(v) / len(v) for start, v in sorted(values.items())}


def main() -> None:
    for name in sys.argv[1:]:
        with open(run_directory(name) / "logs" / "metrics.csv") as handle:
            rows = list(csv.DictReader(handle))
        print(name)
        for key in TERMS:
            means = bucket_means(rows, key)
            if means:
                print(f"  {key.split('/')[1][:14]} " + " ".join(f"{start}:{mean:.4f}" for start, mean in means.items()))


if __name__ == "__main__":
    main()
