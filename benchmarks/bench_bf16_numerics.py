"""How far the bf16 switches move the stage-3 loss and gradients of a *trained* model from float32.

    python benchmarks/bench_bf16_numerics.py RUN_OR_CHECKPOINT [--batches 3] [--batch 32]

The tests (tests/test_speed_options.py) bound the bf16 error on tiny random models; this measures
it where it matters, on a trained DisDiff checkpoint and real batches of its dataset (the run's
``shapes3d-synth`` resolution is read from its config). For each batch (fixed timesteps, noise
and units), the gradient of the trained parameters is computed in float32 and with

* ``bf16``: ``autocast_bf16`` (denoiser and image encoder in bf16),
* ``bf16_all``: ``autocast_bf16`` + ``autocast_bf16_dis_path`` (the first-stage decoder and the
  re-encoder of the disentangling loss too; an opt-in since issue 13, the published configs ship
  ``autocast_bf16: auto`` with ``autocast_bf16_dis_path: false``, i.e. ``bf16`` on a CPU with
  native bf16),
* ``fp32_perturbed``: float32 with the frozen UNet's weights multiplied by (1 + 0.4 % noise), the
  size of one bf16 rounding: the yardstick of how sensitive the gradient is to any change of
  that size,

separately for the total loss and for the disentangling loss alone. Prints one JSON document:
per batch and variant, the relative loss difference, the relative L2 error and the cosine of
the gradient against float32.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import compare, perturb_frozen_unet  # noqa: E402


def gradient(module, params, key: str, x, t, noise, concept) -> tuple[float, torch.Tensor]:
    """Loss and gradient of one evaluation; the module's buffers are restored afterwards.

    A training-mode pass moves the image encoder's BatchNorm running statistics, which the
    re-encoder of the disentangling loss uses; without the restore every compared variant would
    start from a different state (runs of this script before issue 13 did not restore them).
    """
    saved = {name: b.detach().clone() for name, b in module.named_buffers()}
    for p in params:
        p.grad = None
    out = module.compute_losses(x, t=t, noise=noise, concept=concept)
    out[key].backward()
    with torch.no_grad():
        for name, b in module.named_buffers():
            b.copy_(saved[name])
    grads = torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel()) for p in params])
    return float(out[key].detach()), grads


def rounded(stats: dict[str, float]) -> dict[str, float]:
    return {k: (round(v, 5) if k == "grad_cosine" else float(f"{v:.3e}")) for k, v in stats.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a stage-3 run directory or checkpoint")
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from disdiff.api import DisDiff
    from disdiff.data.registry import load_dataset

    model = DisDiff.load(args.checkpoint, use_ema=False)  # the weights being trained, not their EMA
    module = model.module
    module.train()
    params = list(module.trainable_parameters())
    for p in params:
        p.requires_grad_(True)
    dataset = load_dataset("shapes3d-synth", resolution=int(module.encoder.resolution[0]))
    unet = module.denoiser.unet
    frozen = {name: p.detach().clone() for name, p in unet.named_parameters()}
    rs = np.random.RandomState(0)
    rows = []
    with torch.enable_grad():
        for b in range(args.batches):
            x = torch.from_numpy(dataset.images(rs.randint(0, dataset.num_images, args.batch)))
            g = torch.Generator().manual_seed(b)
            t = torch.randint(0, module.schedule.num_timesteps, (args.batch,), generator=g)
            noise = torch.randn((args.batch, *module.latent_shape), generator=g)
            concept = torch.randint(module.num_units, (args.batch,), generator=g)
            for key in ("loss", "loss_dis"):
                module.autocast_bf16, module.autocast_bf16_dis_path = False, False
                loss0, grads0 = gradient(module, params, key, x, t, noise, concept)
                row = {"batch": b, "loss": key, "float32": loss0}
                for name, switches in (("bf16", (True, False)), ("bf16_all", (True, True))):
                    module.autocast_bf16, module.autocast_bf16_dis_path = switches
                    row[name] = rounded(compare(*gradient(module, params, key, x, t, noise, concept), loss0, grads0))
                module.autocast_bf16, module.autocast_bf16_dis_path = False, False
                perturb_frozen_unet(module, seed=100 + b)
                row["fp32_perturbed"] = rounded(compare(*gradient(module, params, key, x, t, noise, concept),
                                                        loss0, grads0))
                with torch.no_grad():
                    for name, p in unet.named_parameters():
                        p.copy_(frozen[name])
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    print(json.dumps({"checkpoint": str(model.checkpoint), "step": model.global_step, "batch": args.batch,
                      "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
