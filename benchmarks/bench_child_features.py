"""The small stage-3 step with its images' frozen features computed (``disdiff train``, and the quickstart
until its features process is done) against looked up (the quickstart's ``child_features_in_training``
afterwards), alternating ``--rounds`` times so that drifts of the machine's speed hit both
(docs/EXPERIMENTS.md D65).

    python benchmarks/bench_child_features.py --threads 2 --steps 12 --rounds 2

The stage-3 config is the quickstart's (8 units, edge features of the reconstruction, the high-pass term,
the weight cap, the latent re-encoding) without the ICA read-out's fit; the disentangling loss is on from
step 0. The looked-up features are the batch's features under the bf16 autocast, as the features process
computes them. Prints one JSON document with the mean seconds per step (zero grad, losses, backward,
AdamW) of every round, and the features' share of the step.
"""

from __future__ import annotations

import torch
from bench_dis_reencode_latent import quickstart_module
from common import alternating_rounds, images, print_rounds, round_arguments, step_seconds


def main() -> None:
    args = round_arguments(__doc__)
    module = quickstart_module(dis_reencode_latent=True)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        looked_up = module.encoder.features(images("small", 32)).float()
    result = alternating_rounds({
        "computed": lambda: step_seconds(module, args.steps, warmup=2),
        "looked_up": lambda: step_seconds(module, args.steps, warmup=2, x0_features=looked_up)}, args.rounds)
    share = [round(1 - b / a, 3) for a, b in zip(result["computed"], result["looked_up"])]
    print_rounds(args, result, saved_fraction=share)

if __name__ == "__main__":
    main()
