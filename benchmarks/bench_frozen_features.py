"""Throughput of the frozen features of the DPM-feature encoder (``DPMFeatureEncoder.features``: the
stage-1 encoder, then the stage-2 UNet's encoder half), which the quickstart computes once for all of
a run's exports, at several batch sizes.

    python benchmarks/bench_frozen_features.py --threads 2 --images 4096 --batch-sizes 128,256,1024

Prints one JSON document: images per second for each batch size (the best of ``--rounds``), and
the seconds that rate predicts for shapes3d-synth's 480,000 images. Small configs, packaged stage 2.
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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    encoder = build_stage3("small", ldm_ckpt=PACKAGED_STAGE2).eval().encoder
    x = images("small", args.images)
    rates: dict[str, float] = {}
    with torch.no_grad():
        encoder.features(x[:64])  # warm-up
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            best = float("inf")
            for _ in range(args.rounds):
                start = time.perf_counter()
                for begin in range(0, args.images, batch):
                    encoder.features(x[begin:begin + batch])
                best = min(best, time.perf_counter() - start)
            rates[str(batch)] = round(args.images / best, 1)
    print(json.dumps({"machine": machine(), "threads": args.threads, "images": args.images,
                      "images_per_second": rates,
                      "predicted_seconds_for_480000": {b: round(SHAPES3D_SYNTH_IMAGES / r, 1) for b, r in rates.items()}},
                     indent=1))


if __name__ == "__main__":
    main()
