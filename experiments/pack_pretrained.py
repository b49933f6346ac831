"""Write the stage-1/2 checkpoints that ship inside the package (src/disdiff/pretrained/...).

    python experiments/pack_pretrained.py runs/s2_mc32/checkpoints/last.ckpt src/disdiff/pretrained/shapes3d-synth-32/stage2.ckpt
    python experiments/pack_pretrained.py runs/s1/checkpoints/last.ckpt src/disdiff/pretrained/shapes3d-synth-32/stage1.ckpt

Stage 2: keeps what stage 3 needs (the UNet's raw and EMA weights, the first stage, the scale
factor and schedule buffers, the hyper-parameters and the global step). Stage 1: keeps the
autoencoder and drops the loss module (discriminator). Both drop the optimiser, scheduler,
loop and callback states. Network weights are stored as float16 to halve the file; they are cast
back to float32 when loaded (load_state_dict copies into float32 parameters). The scale factor and
the schedule buffers stay float32.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

HALF_PREFIXES = ("unet.", "ema.", "first_stage.", "autoencoder.")


def pack(source: Path, target: Path) -> None:
    ckpt = torch.load(source, map_location="cpu", weights_only=False)
    state = {}
    for key, value in ckpt["state_dict"].items():
        if key.startswith("loss."):
            continue  # stage 1's discriminator and LPIPS: training only
        if key.startswith("ema.") and not value.is_floating_point():
            state[key] = value  # EMA counters
        elif key.startswith(HALF_PREFIXES) and value.is_floating_point():
            state[key] = value.to(torch.float16)
        else:
            state[key] = value
    packed = {"state_dict": state, "hyper_parameters": dict(ckpt["hyper_parameters"]),
              "global_step": int(ckpt["global_step"]), "epoch": int(ckpt.get("epoch", 0)),
              "pytorch-lightning_version": ckpt.get("pytorch-lightning_version", "")}
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    torch.save(packed, tmp)
    tmp.replace(target)
    print(f"wrote {target}: {target.stat().st_size / 1e6:.2f} MB from {source} (step {packed['global_step']})")


if __name__ == "__main__":
    pack(Path(sys.argv[1]), Path(sys.argv[2]))
