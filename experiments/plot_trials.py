"""Plot FactorVAE and DCI against the stage-3 step for several experiments (runs/exp/NAME/trial.json).

    python experiments/plot_trials.py docs/figures/experiments.png e1_base e2_d4 e5_d1 e6_d2
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(out: str, names: list[str]) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    colours = plt.get_cmap("tab20" if len(names) > 10 else "tab10").colors  # one colour per run
    for colour, name in zip(colours, names):
        trial = json.loads((Path("runs/exp") / name / "trial.json").read_text())
        steps = sorted(int(s) for s in trial["points"])
        for ax, key in zip(axes, ("FactorVAE", "DCI", "MIG")):
            ys = [trial["points"][str(s)]["headline"][key] for s in steps]
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
