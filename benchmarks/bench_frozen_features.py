"""Throughput of the frozen features of the DPM-feature encoder (``DPMFeatureEncoder.features``: the
stage-1 encoder, then the stage-2 UNet's encoder half), which the quickstart computes once for all of
a run's exports, at several batch sizes, in float32 and, with ``--bf16``, under a bfloat16 autocast
as well (``FrozenFeatureCache(bf16=...)``: the quickstart's default on a CPU with native bf16,
``--features-bf16``).

    python benchmarks/bench_frozen_features.py --threads 2 --images 4096 --batch-sizes 128,256,1024 [--bf16]

Prints one JSON document: images per second for each batch size and precision (the best of
``--rounds``), the seconds that rate predicts for shapes3d-synth's 480,000 images, and with
``--bf16`` the relative L2 error of the bf16 features against float32 ones (same images). Small
configs, packaged stage 2.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from common import build_stage3, images, machine

PACKAGED_STAGE2 = "src/disdiff/pretrained/shapes3d-synth-32/stage2.ckpt"
SHAPES3D_SYNTH_IMAGES = 480_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=4096, help="images per timed pass")
    parser.add_argument("--batch-sizes", default="128,256,1024")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bf16", action="store_true", help="also time a bfloat16 autocast and report its error")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    encoder = build_stage3("small", ldm_ckpt=PACKAGED_STAGE2).eval().encoder
    x = images("small", args.images)
    precisions = {"float32": torch.float32, **({"bf16": torch.bfloat16} if args.bf16 else {})}
    rates: dict[str, float] = {}
    outputs: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        encoder.features(x[:64])  # warm-up
        for name, dtype in precisions.items():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is torch.bfloat16):
                for batch in (int(b) for b in args.batch_sizes.split(",")):
                    best = float("inf")
                    for _ in range(args.rounds):
                        start = time.perf_counter()
                        parts = [encoder.features(x[begin:begin + batch]) for begin in range(0, args.images, batch)]
                        best = min(best, time.perf_counter() - start)
                    rates[f"{name}/{batch}"] = round(args.images / best, 1)
                    outputs[name] = torch.cat(parts).float()
    result = {"machine": machine(), "threads": args.threads, "images": args.images, "images_per_second": rates,
              "predicted_seconds_for_480000": {k: round(SHAPES3D_SYNTH_IMAGES / r, 1) for k, r in rates.items()}}
    if "bf16" in outputs:
        reference = outputs["float32"]
        result["bf16_relative_l2_error"] = float((outputs["bf16"] - reference).norm() / reference.norm())
    print(json.dumps(result, indent=1))

if __name__ == "__main__":
    main()
