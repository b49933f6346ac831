"""One stage-3 experiment of docs/EXPERIMENTS.md: train DisDiff on shapes3d-synth, then export and
evaluate chosen checkpoints with the published protocol (plus the linear probe).

    python experiments/stage3_trial.py NAME --ldm STAGE2_RUN_OR_CKPT --minutes 20 \
        [--eval-every 400] [--threads 1] [--seed 0] [--quick-dci] [key=value ...]

Writes runs/exp/NAME/ (a normal run directory) and runs/exp/NAME/trial.json with, per evaluated
step: the four paper metrics, the probe, the training minutes and the loss terms near that step.
Everything here is the product's CLI (`disdiff train`, `export`, `evaluate`); this script only
chains the commands and collects the numbers.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from disdiff.evaluation import runs

CONFIGS = ["disdiff/shapes3d-synth-vq-small-dis.yaml", "quickstart/disdiff-run.yaml"]
# The CLI of the interpreter running this script (not whatever `disdiff` is first on PATH).
DISDIFF = [sys.executable, "-m", "disdiff.cli.main"]
# Frozen DPM features (1.0 GB for shapes3d-synth) shared by every trial's exports (disdiff export --feature-cache).
FEATURE_CACHE = Path("runs/exp/feature-cache")


def run(cmd: list[str], env: dict, log) -> None:
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    child = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    # Stopping this script (pkill's SIGTERM) must stop the training too, not leave it running alone.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: child.terminate())
    try:
        code = child.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if code:
        raise SystemExit(f"command failed ({code}): {' '.join(cmd)}")


def losses_near(run_dir: Path, step: int) -> dict:
    path = run_dir / "logs" / "metrics.csv"
    if not path.is_file():
        return {}
    rows = [r for r in csv.DictReader(path.open()) if r.get("step") and int(r["step"]) <= step]
    out = {}
    for key in ("train/loss_rec_step", "train/loss_dis_step", "train/dis_ce_variant", "train/dis_ce_invariant",
                "train/dis_sample_weight", "train/loss_kl", "train/unit_correlation",
                "train/unit_dependence"):
        vals = [float(r[key]) for r in rows[-200:] if r.get(key)]
        if vals:
            out[key] = sum(vals[-10:]) / len(vals[-10:])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("--ldm", required=True)
    parser.add_argument("--minutes", type=float, default=20.0,
                        help="training minutes in all; a continued run counts its earlier minutes too")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--eval-every", type=int, default=400)
    parser.add_argument("--eval-steps", default=None, help="comma-separated steps to evaluate (default: every --eval-every and the last)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick-dci", action="store_true", help="DCI with 2000/1000 points for non-final steps")
    parser.add_argument("--eval-only", action="store_true")
    parser.add_argument("--features-bf16", action="store_true",
                        help="exports compute the frozen features under a bf16 autocast (D36b; kept in their own cache file)")
    parser.add_argument("--continue-from", default=None,
                        help="copy another run's config and last.ckpt (or the given checkpoint file) here first, "
                             "then resume it with the overrides (to change one setting of an already-trained model)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()

    root = Path("runs/exp") / args.name
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    root.parent.mkdir(parents=True, exist_ok=True)
    log = open(root.parent / f"{args.name}.log", "a")
    if args.continue_from and not (root / "checkpoints" / "last.ckpt").is_file():
        source = Path(args.continue_from)
        # a run directory continues from its last.ckpt; a checkpoint file from that step of its run
        checkpoint = source if source.is_file() else source / "checkpoints" / "last.ckpt"
        source_run = source.parent.parent if source.is_file() else source
        (root / "checkpoints").mkdir(parents=True, exist_ok=True)
        shutil.copytree(source_run / "configs", root / "configs", dirs_exist_ok=True)
        shutil.copy2(checkpoint, root / "checkpoints" / "last.ckpt")
    started = time.time()
    if not args.eval_only:
        cmd = [*DISDIFF, "train", "-b", *CONFIGS, "--run-dir", str(root), "-s", str(args.seed),
               f"model.params.ldm_ckpt={args.ldm}", f"lightning.checkpoint.every_n_train_steps={args.eval_every}",
               "lightning.image_logger.every_n_train_steps=100000", *args.overrides]
        if (root / "checkpoints" / "last.ckpt").is_file():
            cmd = [*DISDIFF, "train", "-r", str(root), *args.overrides]
        if args.max_steps:
            cmd += ["--max-steps", str(args.max_steps)]
        cmd += ["--max-minutes", str(args.minutes)]
        run(cmd, env, log)
    train_minutes = (time.time() - started) / 60
    ckpts = sorted((root / "checkpoints").glob("step=*.ckpt"))
    by_step = {int(p.stem.split("=")[1]): p for p in ckpts}
    last = max(by_step) if by_step else None
    if args.eval_steps:
        wanted = [int(s) for s in args.eval_steps.split(",")]
    else:
        wanted = sorted(by_step)
    results = json.loads((root / "trial.json").read_text()) if (root / "trial.json").is_file() else {"points": {}}
    results.update({"name": args.name, "overrides": args.overrides, "ldm": args.ldm, "threads": args.threads,
                    "seed": args.seed, "features_bf16": bool(args.features_bf16)})
    if not args.eval_only:
        results["train_wall_minutes"] = round(train_minutes, 2)
    for step in wanted:
        if step not in by_step or str(step) in results["points"]:
            continue
        npz = root / "representations" / f"step={step:08d}.npz"
        if not npz.is_file():
            # One copy of the frozen features per stage 2 and dataset, shared by every trial's exports.
            run([*DISDIFF, "export", str(by_step[step]), "--out", str(npz), "--no-progress",
                 "--feature-cache", str(FEATURE_CACHE), "--features-bf16", "true" if args.features_bf16 else "false"],
                env, log)
        cmd = [*DISDIFF, "evaluate", str(npz), "--threads", str(args.threads), "--force"]
        if args.quick_dci and step != last:
            cmd += ["--set", "dci.num_train=2000", "--set", "dci.num_test=1000"]
        run(cmd, env, log)
        # evaluate writes a run's representations file's result to <run>/metrics/step=XXXXXXXX.json
        record = json.loads((root / "metrics" / runs.output_name(npz, step)).read_text())
        results["points"][str(step)] = {"headline": record["headline"], "probe": record.get("probe"),
                                        "quick_dci": bool(args.quick_dci and step != last),
                                        "losses": losses_near(root, step)}
        (root / "trial.json").write_text(json.dumps(results, indent=1))
        h = record["headline"]
        print(f"{args.name} step {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in h.items()), flush=True)
        if record.get("probe"):
            p = record["probe"]
            print("  probe " + ", ".join(f"{n} {a:.2f}" for n, a in zip(p["factors"], p["accuracy"])), flush=True)
    (root / "trial.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
