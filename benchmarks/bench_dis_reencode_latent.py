"""The small stage-3 step with the disentangling loss off, on with the published re-encoding of decoded
images, and on with the opt-in latent re-encoding (``model.params.dis_reencode_latent``), alternating
``--rounds`` times so that drifts of the machine's speed hit every variant (docs/EXPERIMENTS.md D62).

    python benchmarks/bench_dis_reencode_latent.py --threads 2 --steps 12 --rounds 2

The stage-3 config is the quickstart's (8 units, edge features of the reconstruction, the high-pass term,
the weight cap) without the ICA read-out's fit; the disentangling loss is on from step 0 (no ramp). Prints
one JSON document with the mean seconds per step (zero grad, losses, backward, AdamW) of every round.
"""

from __future__ import annotations

from bench_background_features import ENCODER, PACKAGED_STAGE2
from common import alternating_rounds, build_stage3, print_rounds, round_arguments, step_seconds


def quickstart_module(dis_reencode_latent: bool):
    """The quickstart's small stage-3 module (without the ICA fit), the disentangling loss on from step 0."""
    return build_stage3("small", ldm_ckpt=PACKAGED_STAGE2, dis_weight_ramp=None, num_units=8, encoder_config=ENCODER,
                        rec_highpass_weight=3.0, nested_unit_dropout=0.0, encoder_lr_boost=None, dis_weight_cap=0.5,
                        dis_reencode_latent=dis_reencode_latent).train()


def main() -> None:
    args = round_arguments(__doc__)
    modules = {flag: quickstart_module(flag) for flag in (False, True)}
    def timed(module, dis_weight: float | None):
        def seconds() -> float:
            saved = module.dis_weight
            module.dis_weight = saved if dis_weight is None else dis_weight
            try:
                return step_seconds(module, args.steps, warmup=2)
            finally:
                module.dis_weight = saved
        return seconds

    print_rounds(args, alternating_rounds({"dis_loss_off": timed(modules[False], 0.0),
                                           "dis_reencode_images": timed(modules[False], None),
                                           "dis_reencode_latent": timed(modules[True], None)}, args.rounds))

if __name__ == "__main__":
    main()
