"""Print the evaluated points of stage3_trial.py runs: metrics, probe, loss terms, per-unit probe.

    python experiments/show_trial.py NAME [NAME ...]      # reads runs/exp/NAME/trial.json

A DCI marked * used 2,000/1,000 points (``--quick-dci``); the probe columns are the factors in the
dataset's order (shapes3d-synth: floor, wall, object hue, scale, shape, orientation).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    for name in sys.argv[1:]:
        trial = json.loads((Path("runs/exp") / name / "trial.json").read_text())
        for step, point in sorted(trial["points"].items(), key=lambda kv: int(kv[0])):
            h, probe = point["headline"], point["probe"]
            quick = "*" if point.get("quick_dci") else ""
            losses = {k.split("/")[-1]: round(v, 4) for k, v in point.get("losses", {}).items()}
            print(f"{name} {step} FactorVAE {h['FactorVAE']:.3f} DCI {h['DCI']:.3f}{quick} MIG {h['MIG']:.3f} "
                  f"beta-VAE {h['beta-VAE']:.3f} probe", " ".join(f"{a:.2f}" for a in probe["accuracy"]), losses)
            for row in probe.get("unit_accuracy", []):
                print("    ", " ".join(f"{a:.2f}" for a in row))


if __name__ == "__main__":
    main()
