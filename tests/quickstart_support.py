"""Tiny quickstart settings and datasets shared by the tests/test_quickstart*.py files."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import torch

from disdiff.pipeline.quickstart import QuickstartSettings

# Tiny networks and a few steps per stage, so that a whole quickstart takes seconds on a CPU.
# Stage 3 checkpoints every 3 steps: the metric curve has 4 checkpoints to choose from.
TINY_OVERRIDES = {
    "autoencoder": ["model.params.autoencoder_config.params.ddconfig.ch=8",
                    "model.params.autoencoder_config.params.ddconfig.num_groups=4",
                    "model.params.autoencoder_config.params.n_embed=32",
                    "data.params.batch_size=8", "lightning.checkpoint.every_n_train_steps=4",
                    "lightning.trainer.max_steps=8", "lightning.trainer.log_every_n_steps=1"],
    "ldm": ["model.params.unet_config.params.model_channels=16", "model.params.unet_config.params.num_groups=8",
            "model.params.unet_config.params.num_heads=2", "model.params.log_ddim_steps=3",
            "data.params.batch_size=8", "lightning.checkpoint.every_n_train_steps=4", "lightning.trainer.max_steps=6",
            "lightning.trainer.log_every_n_steps=1"],
    # The small config's ICA fits 12 components, more than a 16-image dataset's first training batch holds:
    # one per unit here (N·d, null).
    "disdiff": ["model.params.encoder_config.width=16", "model.params.log_ddim_steps=3",
                "model.params.encoder_config.ica_components=null",
                "data.params.batch_size=8", "lightning.checkpoint.every_n_train_steps=3",
                "lightning.trainer.max_steps=12", "lightning.trainer.log_every_n_steps=1"],
}
TINY_METRICS = ["beta_vae.num_train=200", "beta_vae.num_eval=100", "factor_vae.num_train=200",
                "factor_vae.num_eval=100", "factor_vae.num_variance_estimate=500", "dci.num_train=200",
                "dci.num_test=100", "mig.num_train=500"]
#: The intermediate curve points use fewer DCI points than the final one (as the defaults do).
TINY_CURVE = ["dci.num_train=100", "dci.num_test=50"]
#: What every console line of the quickstart looks like: "[i/n] title: detail | 12m03s left overall".
STAGE_LINE = re.compile(r"^\[\d+/\d+\] [^:]+: .+ \| \d+m\d\ds left overall$")


def tiny_settings(out: Path, **changes) -> QuickstartSettings:
    """Stages end by their max_steps above; the budget is generous, so that a slow or busy machine
    still has time for every step (the metric curve is only evaluated while the budget lasts)."""
    settings = QuickstartSettings(out=out, minutes=30.0, seed=0, resolution=16, overrides=TINY_OVERRIDES,
                                  figure_steps=2, metrics_settings=list(TINY_METRICS), curve_settings=list(TINY_CURVE),
                                  line_interval=0.0)
    for key, value in changes.items():
        setattr(settings, key, value)
    return settings


def make_grid_npz(path: Path, sizes=(4, 4), size: int = 32, grey: bool = True) -> Path:
    """A bring-your-own dataset: a square whose side follows factor 0 and whose brightness follows factor 1."""
    images = []
    for a in range(sizes[0]):
        for b in range(sizes[1]):
            image = np.zeros((size, size), dtype=np.uint8)
            side = 6 + 5 * a
            image[4:4 + side, 4:4 + side] = 60 + 60 * b
            images.append(image)
    images = np.stack(images)
    if not grey:
        images = np.repeat(images[..., None], 3, axis=-1)
    np.savez(path, images=images, factor_sizes=np.array(sizes), factor_names=np.array(["side", "brightness"]))
    return path


def make_pretrained(folder: Path, resolution: int = 32) -> Path:
    """Tiny stage-1 and stage-2 checkpoints made with the project's own modules, as the package ships them."""
    from disdiff.training.autoencoder_module import AutoencoderModule
    from disdiff.training.ldm_module import LatentDiffusionModule

    folder.mkdir(parents=True, exist_ok=True)
    vq = {"target": "disdiff.models.autoencoder.VQModel",
          "params": {"embed_dim": 3, "n_embed": 32, "codebook_init_range": 1.0,
                     "ddconfig": dict(double_z=False, z_channels=3, resolution=resolution, in_channels=3, out_ch=3,
                                      ch=8, ch_mult=[1, 2, 4], num_res_blocks=1, attn_resolutions=[], dropout=0.0,
                                      num_groups=4)}}
    unet = {"target": "disdiff.models.unet.UNetModel",
            "params": dict(image_size=resolution // 4, in_channels=3, out_channels=3, model_channels=16,
                           channel_mult=[1, 2, 2], num_res_blocks=1, attention_resolutions=[2], num_heads=2,
                           num_groups=8, use_scale_shift_norm=True, resblock_updown=True)}
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stage1 = AutoencoderModule(autoencoder_config=vq, loss_config={
            "target": "disdiff.models.autoencoder.losses.VQLPIPSWithDiscriminator",
            "params": {"disc_start": 0, "disc_ndf": 8, "disc_num_layers": 1, "perceptual_weight": 0.0}})
        torch.save({"state_dict": stage1.state_dict(), "hyper_parameters": dict(stage1.hparams), "global_step": 7},
                   folder / "stage1.ckpt")
        stage2 = LatentDiffusionModule(unet_config=unet, first_stage_config=vq,
                                       first_stage_ckpt=str(folder / "stage1.ckpt"), log_ddim_steps=2)
    with torch.no_grad():  # non-zero output layers, so that the frozen model's prediction depends on its input
        for p in stage2.unet.parameters():
            if p.abs().sum() == 0 and p.dim() > 1:
                p.normal_(0, 0.05)
        stage2.scale_factor.fill_(0.8)
    torch.save({"state_dict": stage2.state_dict(), "hyper_parameters": dict(stage2.hparams), "global_step": 9},
               folder / "stage2.ckpt")
    (folder / "README.md").write_text("tiny test checkpoints\n")
    return folder
