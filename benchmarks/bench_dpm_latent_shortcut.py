"""The small stage-3 step with the DPM-feature encoder, reading the code from the training latent
(``DPMFeatureEncoder.reads_training_latent``, the default on a VQ first stage) or encoding the
images a second time, alternating ``--rounds`` times so that drifts of the machine's speed hit both.

    python benchmarks/bench_dpm_latent_shortcut.py --threads 2 --steps 60 --rounds 2

Prints one JSON document: the mean seconds per step (zero grad, losses, backward, AdamW step; the
disentangling loss on from step 0) of every round of each variant, batch 32, packaged stage 2.
"""

from __future__ import annotations

from bench_background_features import PACKAGED_STAGE2
from common import alternating_rounds, build_stage3, print_rounds, round_arguments, step_seconds

from disdiff.models.dpm_feature_encoder import DPMFeatureEncoder

def main() -> None:
    args = round_arguments(__doc__, threads=1, steps=60)
    module = build_stage3("small", ldm_ckpt=PACKAGED_STAGE2, dis_weight_ramp=None).train()

    shared = DPMFeatureEncoder.reads_training_latent

    def timed(flag):
        def seconds() -> float:
            DPMFeatureEncoder.reads_training_latent = flag
            return step_seconds(module, args.steps, warmup=5)
        return seconds

    try:
        result = alternating_rounds({"shared_latent": timed(shared), "encode_twice": timed(property(lambda self: False))},
                                    args.rounds)
    finally:
        DPMFeatureEncoder.reads_training_latent = shared
    print_rounds(args, result)

if __name__ == "__main__":
    main()
