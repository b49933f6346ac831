"""The small stage-3 step with the DPM-feature encoder, reading the code from the training latent
(``DPMFeatureEncoder.reads_training_latent``, the default on a VQ first stage) or encoding the
images a second time, alternating ``--rounds`` times so that drifts of the machine's speed hit both.

    python benchmarks/bench_dpm_latent_shortcut.py --threads 2 --steps 60 --rounds 2

Prints one JSON document: the mean seconds per step (zero grad, losses, backward, AdamW step; the
disentangling loss on from step 0) of every round of each variant, batch 32, packaged stage 2.
"""

from __future__ import annotations

import json

from common import build_stage3, machine, round_arguments, step_seconds

from disdiff.models.dpm_feature_encoder import DPMFeatureEncoder

PACKAGED_STAGE2 = "src/disdiff/pretrained/shapes3d-synth-32/stage2.ckpt"


def main() -> None:
    args = round_arguments(__doc__, threads=1, steps=60)
    module = build_stage3("small", ldm_ckpt=PACKAGED_STAGE2, dis_weight_ramp=None).train()

    shared = DPMFeatureEncoder.reads_training_latent
    variants = {"shared_latent": shared, "encode_twice": property(lambda self: False)}
    result: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for _ in range(args.rounds):
            for name, flag in variants.items():
                DPMFeatureEncoder.reads_training_latent = flag
                result[name].append(round(step_seconds(module, args.steps, warmup=5), 4))
    finally:
        DPMFeatureEncoder.reads_training_latent = shared
    print(json.dumps({"machine": machine(), "threads": args.threads, "batch": 32, "steps": args.steps,
                      "seconds_per_step": result}, indent=1))


if __name__ == "__main__":
    main()
