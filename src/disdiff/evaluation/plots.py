"""PNG plots of each metric's scores against the training step (``metrics_<name>.png``)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from disdiff.metrics import METRICS
from disdiff.utils.io import atomic_path

#: Scores drawn per metric (others are in the CSV).
PLOTTED = {
    "beta_vae": ("eval_accuracy", "train_accuracy"),
    "factor_vae": ("eval_accuracy", "train_accuracy"),
    "dci": ("disentanglement", "completeness", "informativeness_test"),
    "mig": ("discrete_mig",),
    "sap": ("SAP_score",),
    "modularity": ("modularity_score", "explicitness_score_test"),
    "tad": ("tad",),
}


def plot_metrics(records: Sequence[dict], out_dir: str | Path, title: str = "") -> list[Path]:
    """One PNG per metric present in ``records`` (records with a step only); returns the paths written."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    records = [r for r in records if r.get("step") is not None]
    names = []
    for record in records:
        for name in record.get("metrics", {}):
            if name not in names:
                names.append(name)
    written = []
    for name in names:
        keys = PLOTTED.get(name) or tuple(k for k, v in records[0]["metrics"].get(name, {}).items()
                                          if isinstance(v, (int, float)))
        fig, ax = plt.subplots(figsize=(5.5, 3.5), dpi=100)
        drawn = False
        for key in keys:
            points = [(r["step"], r["metrics"][name].get(key)) for r in records if name in r.get("metrics", {})]
            points = [(s, v) for s, v in points if isinstance(v, (int, float))]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", label=key)
                drawn = True
        if not drawn:
            plt.close(fig)
            continue
        label = METRICS[name].title if name in METRICS else name.upper()
        ax.set_xlabel("training step")
        ax.set_ylabel(label)
        ax.set_title(f"{title} {label}".strip())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"metrics_{name}.png"
        with atomic_path(path, suffix=".tmp.png") as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        written.append(path)
    return written
