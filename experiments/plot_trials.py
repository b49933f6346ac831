"""Plot FactorVAE and DCI against the stage-3 step for several experiments (runs/exp/NAME/trial.json).

    python experiments/plot_trials.py docs/figures/experiments.png e1_base e2_d4 e5_d1 e6_d2

A name that is a path to a run directory (a quickstart's stage3_disdiff, say) is read from its
metrics/step=*.json records instead, so the quickstart runs can serve as controls.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from disdiff.evaluation.tables import collect_records  # noqa: E402


def read_headlines(name: str) -> dict[int, dict[str, float]]:
    """{step: headline metrics} of an experiment (runs/exp/NAME/trial.json) or of a run directory."""
    trial = Path("runs/exp") / name / "trial.json"
    if trial.is_file():
        points = json.loads(trial.read_text())["points"]
        return {int(step): point["headline"] for step, point in points.items()}
    records = [r for r in collect_records(Path(name) / "metrics") if r.get("step") is not None and "headline" in r]
    if not records:
        raise SystemExit(f"{name}: neither runs/exp/{name}/trial.json nor result records in {name}/metrics exist")
    return {record["step"]: record["headline"] for record in records}


def main(out: str, names: list[str]) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    colours = plt.get_cmap("tab20" if len(names) > 10 else "tab10").colors  # one colour per run
    for colour, name in zip(colours, names):
        headlines = read_headlines(name)
        steps = sorted(headlines)
        for ax, key in zip(axes, ("FactorVAE", "DCI", "MIG")):
            ys = [headlines[s][key] for s in steps]
            ax.plot(steps, ys, marker="o", label=name, color=colour)
    for ax, key in zip(axes, ("FactorVAE", "DCI disentanglement", "MIG")):
        ax.set_title(key)
        ax.set_xlabel("stage-3 step")
        ax.grid(alpha=0.3)
    axes[0].axhline(0.8, color="grey", ls="--", lw=0.8)
    axes[1].axhline(0.5, color="grey", ls="--", lw=0.8)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
