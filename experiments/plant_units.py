"""Diagnostic for docs/EXPERIMENTS.md (D17): does training keep a geometric factor once a unit holds it?

Every learned code so far holds the hues and no geometry, and its spare units are dead (D16). Is
the problem that no unit ever *finds* the geometry (an escape from a saddle that L_r makes slow), or
that L_r in this regime would not keep a unit on the geometry even if it held it? This plants it:
for a stage-3 checkpoint, the read-out row (the encoder's last Linear) of each chosen unit is
replaced by a ridge regression from the trunk's features (eval-mode BatchNorm, as at export) to the
chosen factor's standardised index, rescaled to the unit's own current standard deviation and
centred on its current mean (the range of values the shift decoder has seen from that unit: at
the median unit's scale a dead unit's field blew up, L_r 1.1 within 130 steps). Everything else, the optimizer state included, is kept.
The planted checkpoint is written as ``OUT/checkpoints/last.ckpt`` next to a copy of the run's
configs, so that ``stage3_trial.py NAME --continue-from OUT`` trains on from it. This uses the
factor labels: it is a diagnostic of the training dynamics, not a method.

    python experiments/plant_units.py RUN_DIR STEP OUT_DIR --plant 4:orientation 5:shape [--n 6000]
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import Ridge
from synth_sample import encode_in_chunks, random_sample

from disdiff.api import DisDiff
from disdiff.metrics.probe import variance_explained


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("step", type=int)
    parser.add_argument("out", type=Path)
    parser.add_argument("--plant", nargs="*", default=[], help="UNIT:FACTOR, e.g. 4:orientation (none: a plain copy, the control)")
    parser.add_argument("--n", type=int, default=6000)
    parser.add_argument("--alpha", type=float, default=10.0, help="ridge penalty")
    args = parser.parse_args()

    source = args.run_dir / "checkpoints" / f"step={args.step:08d}.ckpt"
    if not source.is_file():
        raise SystemExit(f"no checkpoint {source}")
    if (args.out / "checkpoints" / "last.ckpt").exists():
        raise SystemExit(f"{args.out} already holds a planted checkpoint; choose another folder")
    dataset, factors, images = random_sample(args.n, seed=1)
    names = list(dataset.factor_names)
    encoder = DisDiff.load(str(source)).module.encoder.eval()
    if encoder.unit_dim != 1 or encoder.unit_branches or encoder.whiten is not None or encoder.code_norm is not None:
        raise SystemExit("plant_units needs one-dimensional units read out by a plain Linear")
    feats = encode_in_chunks(lambda x: encoder._features(x), images).double().numpy()
    codes = encode_in_chunks(encoder, images).double().numpy()
    half = args.n // 2

    ckpt = torch.load(source, map_location="cpu", weights_only=False)
    weight = ckpt["state_dict"]["encoder.fc.weight"]
    bias = ckpt["state_dict"]["encoder.fc.bias"]
    for spec in args.plant:
        unit_text, factor = spec.split(":")
        unit, f = int(unit_text), names.index(factor)
        y = factors[:, f].astype(np.float64)
        y = (y - y.mean()) / y.std()
        ridge = Ridge(alpha=args.alpha).fit(feats[:half], y[:half])
        r2 = ridge.score(feats[half:], y[half:])
        pred = feats @ ridge.coef_
        target_std = float(codes[:, unit].std())
        scale = target_std / pred.std()
        new_w = ridge.coef_ * scale
        new_b = codes[:, unit].mean() - (feats @ new_w).mean()
        before = variance_explained(codes[:, unit, None, None], factors)[0]
        weight[unit] = torch.from_numpy(new_w).to(weight)
        bias[unit] = float(new_b)
        after_values = feats @ new_w + new_b
        after = variance_explained(after_values[:, None, None], factors)[0]
        print(f"unit {unit} <- {factor}: ridge R2 (held out) {r2:.3f}, std {target_std:.3f}")
        print("  eta2 before: " + " ".join(f"{n[:5]} {v:.3f}" for n, v in zip(names, before)))
        print("  eta2 after:  " + " ".join(f"{n[:5]} {v:.3f}" for n, v in zip(names, after)))
    (args.out / "checkpoints").mkdir(parents=True, exist_ok=True)
    shutil.copytree(args.run_dir / "configs", args.out / "configs", dirs_exist_ok=True)
    torch.save(ckpt, args.out / "checkpoints" / "last.ckpt")
    print(f"wrote {args.out / 'checkpoints' / 'last.ckpt'} (from step {ckpt['global_step']})")


if __name__ == "__main__":
    main()
