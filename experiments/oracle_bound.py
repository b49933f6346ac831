"""Diagnostic for docs/EXPERIMENTS.md: the decoder-side bound of issue 12 (an "oracle" code).

The image encoder is replaced by the true factors, one unit per factor (d = 1, each factor's index
mapped linearly onto [-1, 1]); only the shift decoder trains, with L_r alone (the disentangling
loss needs a re-encoder of generated images, which an oracle does not have). Everything else is
the small stage-3 config: the frozen stage 2, batch 32, the same lr, warm-up and AdamW.

It answers: given a perfect code, how fast does the shift decoder learn to use each factor? At
chosen steps it prints L_r (mean of the last 100 steps) and, per timestep bucket, the increase of
the L1 eps error when one factor's unit is given the value of a resampled factor (the L_r that
knowing the factor saves; the same measure as experiments/gain_per_t.py applies to a trained
encoder). If geometry saves L_r here within the quickstart's step budget, the decoder can use it
and the bottleneck for the learned code is the encoder side.

    python experiments/oracle_bound.py --ldm src/disdiff/pretrained/shapes3d-synth-32/stage2.ckpt \
        --steps 3600 --report-steps 400,1200,3600 [--threads 1] [--seed 0] [--out runs/exp/oracle.json] \
        [--swap-check PAIRS]

With ``--swap-check``, it ends with `disdiff swap-check`'s figures for the oracle code (docs/EXPERIMENTS.md D69).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from disdiff.config import instantiate_from_config, load_configs
from disdiff.data.registry import load_dataset
from disdiff.diffusion.lr_schedule import linear_warmup
from disdiff.diffusion.schedule import extract, q_sample
from synth_sample import scaled_factors

CONFIGS = ["disdiff/shapes3d-synth-vq-small-dis.yaml", "quickstart/disdiff-run.yaml"]
BUCKETS = (0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000)


def oracle_code(factors: np.ndarray, sizes: np.ndarray) -> torch.Tensor:
    """(n, K) factor indices -> (n, K, 1) units in [-1, 1] (unit k is factor k)."""
    return torch.from_numpy(scaled_factors(factors, sizes).astype(np.float32))[:, :, None]


@torch.no_grad()
def factor_gains(module, data, sizes: np.ndarray, n: int, rng: np.random.RandomState) -> dict:
    """Per t bucket: the L1 eps error with the oracle code, and its increase per resampled factor."""
    factors = data.sample_factors(n, rng)
    x = torch.from_numpy(data.sample_observations_from_factors(factors)).float()
    z0 = module.encode_images(x)
    code = oracle_code(factors, sizes)
    rows = {}
    for lo, hi in zip(BUCKETS[:-1], BUCKETS[1:]):
        t = torch.randint(lo, hi, (n,))
        noise = torch.randn_like(z0)
        z_t = q_sample(module.schedule, z0, t, noise)
        coef = extract(module.schedule.shift_coef, t, z_t.shape)

        def err(c: torch.Tensor) -> float:
            pred, fields = module.denoiser(z_t, t, c)
            return (noise - pred - coef * fields.sum(1)).abs().mean().item()

        full = err(code)
        row = {"full": round(full, 4)}
        for k, name in enumerate(data.factor_names):
            f2 = factors.copy()
            f2[:, k] = rng.randint(sizes[k], size=n)
            row[name] = round(err(oracle_code(f2, sizes)) - full, 4)
        rows[f"{lo}-{hi}"] = row
    return rows


def oracle_swap_check(module, data, sizes: np.ndarray, pairs: int, seed: int) -> dict:
    """`disdiff swap-check`'s figures (disdiff.inference.swap_check) with the oracle code as the code:
    how well the trained shift decoder and the frozen LDM render each factor from a perfect code."""
    from disdiff.inference.swap_check import check_swaps

    module.eval()
    check = check_swaps(module, data, pairs=pairs, seed=seed,
                        code_of=lambda indices: oracle_code(np.asarray(data.factors_of(indices)), sizes))
    return check.record()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ldm", required=True)
    parser.add_argument("--steps", type=int, default=3600)
    parser.add_argument("--report-steps", default="400,1200,3600")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=256, help="images per t bucket in the gain table")
    parser.add_argument("--out", default="runs/exp/oracle_bound.json")
    parser.add_argument("--swap-check", type=int, default=0, metavar="PAIRS",
                        help="at the end, swap-check's figures for this many pairs with the oracle code (0: none)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.RandomState(args.seed)

    # backbone=cnn: the DPM-feature head reads the training latent inside compute_losses, past
    # encode_representation, so with it the oracle code below would silently not be used.
    config = load_configs(CONFIGS, [f"model.params.ldm_ckpt={args.ldm}", "model.params.unit_dim=1",
                                    "model.params.dis_weight=0", "model.params.encoder_config.backbone=cnn",
                                    *args.overrides])
    module = instantiate_from_config(config.model)
    if getattr(module.encoder, "reads_training_latent", False):
        raise SystemExit("the oracle needs encoder_config.backbone=cnn (the DPM head bypasses encode_representation)")
    module.train()
    data = load_dataset("shapes3d-synth", resolution=32)
    sizes = np.asarray(data.factor_sizes)
    if module.num_units != len(sizes):
        raise SystemExit(f"model.params.num_units={module.num_units}, but the oracle needs one unit per factor "
                         f"({len(sizes)})")
    batch = int(config.data.params.batch_size)
    lr = float(config.model.base_learning_rate) * batch  # scale_lr, as `disdiff train` on one device
    params = list(module.denoiser.trainable_parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=float(config.model.params.get("weight_decay", 0.01)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_warmup(int(config.model.params.warmup_steps)))

    current: dict[str, torch.Tensor] = {}
    module.encode_representation = lambda x: current["code"]  # the oracle replaces the encoder
    report_steps = {int(s) for s in args.report_steps.split(",")}
    history, results, started = [], {"ldm": args.ldm, "overrides": args.overrides, "lr": lr, "points": {}}, time.time()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for step in range(1, args.steps + 1):
        factors = data.sample_factors(batch, rng)
        x = torch.from_numpy(data.sample_observations_from_factors(factors)).float()
        current["code"] = oracle_code(factors, sizes)
        # The module's total loss: L_r plus any opt-in term an override turns on (dis_weight is 0 here).
        # (Until 2026-12-06 this read only "loss_rec", so D30's rec_highpass_weight never reached the optimizer.)
        terms = module.compute_losses(x)
        loss, loss_rec = terms["loss"], terms["loss_rec"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history.append(loss_rec.item())
        if step in report_steps:
            module.eval()
            gains = factor_gains(module, data, sizes, args.n, np.random.RandomState(1000 + step))
            module.train()
            point = {"loss_rec_last100": round(float(np.mean(history[-100:])), 4),
                     "minutes": round((time.time() - started) / 60, 2), "gains": gains}
            results["points"][str(step)] = point
            out.write_text(json.dumps(results, indent=1))
            print(f"step {step}: L_r {point['loss_rec_last100']} ({point['minutes']} min)", flush=True)
            for bucket, row in gains.items():
                print(f"  {bucket} {json.dumps(row)}", flush=True)
    results["loss_rec_every_100"] = [round(float(np.mean(history[i:i + 100])), 4) for i in range(0, len(history), 100)]
    if args.swap_check:
        results["swap_check"] = oracle_swap_check(module, data, sizes, args.swap_check, args.seed)
        print(json.dumps(results["swap_check"]), flush=True)
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
