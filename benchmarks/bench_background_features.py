"""Is it worth computing the quickstart's frozen features in a second process while stage 3 trains
(``QuickstartSettings.background_features``)? Times, on the machine as it is:

- the small stage-3 step (batch 32, the disentangling loss on) on 2 threads and on 1 thread;
- the frozen features (stage-1 encoding and decoding for the reconstruction's edges, the UNet encoder
  half; bf16 autocast as the quickstart's default) on 2 threads and on 1 thread;
- both at once: the step on 1 thread while a child process computes features on 1 thread.

    python benchmarks/bench_background_features.py --steps 40 --images 2048 --budget-seconds 1500

The stage-3 config is M23's (docs/EXPERIMENTS.md): 8 units, edge features of the reconstruction, the
high-pass term; the ICA read-out is left out (a linear layer of the same size as its fit, which needs
5,000 images). Prints one JSON document with the measured rates and what they predict for a stage 3
of ``--budget-seconds`` on shapes3d-synth's 480,000 images: steps when the features come first on 2
threads, and steps when they run beside training (1 + 1 threads, then 2 once they are done).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch
from common import build_stage3, images, machine, step_seconds

PACKAGED_STAGE2 = "src/disdiff/pretrained/shapes3d-synth-32/stage2.ckpt"
NUM_IMAGES = 480_000
ENCODER = {"backbone": "dpm", "hidden": 256, "edge_features": True, "edge_source": "reconstruction",
           "resolution": 32, "in_channels": 3}


def build():
    return build_stage3("small", ldm_ckpt=PACKAGED_STAGE2, dis_weight_ramp=None, num_units=8, encoder_config=ENCODER,
                        rec_highpass_weight=3.0, nested_unit_dropout=0.0, encoder_lr_boost=None)


def features_rate(encoder, count: int, seconds: float | None = None) -> float:
    """Images per second of ``encoder.features`` in batches of 256 (the export's), bf16 autocast;
    with ``seconds``, repeat passes for at least that long."""
    x = images("small", 256)
    done, start = 0, time.perf_counter()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        encoder.features(x[:32])  # warm-up
        start = time.perf_counter()
        while done < count or (seconds is not None and time.perf_counter() - start < seconds):
            encoder.features(x)
            done += x.shape[0]
    return done / (time.perf_counter() - start)


def child(seconds: float) -> None:
    torch.set_num_threads(1)
    encoder = build().eval().encoder
    print(json.dumps({"images_per_second": features_rate(encoder, 256, seconds)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="timed training steps per measurement")
    parser.add_argument("--images", type=int, default=2048, help="images per features measurement")
    parser.add_argument("--budget-seconds", type=float, default=1500.0, help="stage 3's time for the prediction")
    parser.add_argument("--child-seconds", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_seconds is not None:
        child(args.child_seconds)
        return
    module = build().train()
    rates: dict[str, float] = {}
    steps: dict[str, float] = {}
    for threads in (2, 1):
        torch.set_num_threads(threads)
        steps[f"threads{threads}"] = step_seconds(module, args.steps)
        rates[f"threads{threads}"] = features_rate(module.encoder.eval(), args.images)
        module.train()
    # Both at once: the child computes features for as long as the parent's timed steps take (and more).
    torch.set_num_threads(1)
    guess = 1.3 * (3 + args.steps) * steps["threads1"] + 20.0  # + the child's start-up
    proc = subprocess.Popen([sys.executable, __file__, "--child-seconds", str(guess)], stdout=subprocess.PIPE, text=True)
    time.sleep(15.0)  # the child's imports and model build, so that the steps are timed beside its features
    steps["threads1_beside_features"] = step_seconds(module, args.steps)
    out, _ = proc.communicate()
    rates["threads1_beside_training"] = json.loads(out.strip().splitlines()[-1])["images_per_second"]

    budget = args.budget_seconds
    first = NUM_IMAGES / rates["threads2"]
    sequential_steps = max(budget - first, 0.0) / steps["threads2"]
    beside = NUM_IMAGES / rates["threads1_beside_training"]
    overlap_steps = (min(beside, budget) / steps["threads1_beside_features"]
                     + max(budget - beside, 0.0) / steps["threads2"])
    print(json.dumps({
        "machine": machine(), "batch": 32, "steps": args.steps, "images": args.images,
        "seconds_per_step": {k: round(v, 4) for k, v in steps.items()},
        "features_images_per_second": {k: round(v, 1) for k, v in rates.items()},
        "prediction": {"budget_seconds": budget, "features_first_seconds": round(first, 1),
                       "features_beside_seconds": round(beside, 1), "steps_features_first": round(sequential_steps),
                       "steps_features_beside": round(overlap_steps)},
    }, indent=1))


if __name__ == "__main__":
    main()
