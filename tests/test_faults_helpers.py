"""Tiny configs and checkpoints shared by the fault, DDP, bad-input and reproducibility tests.

Everything runs through the real ``disdiff train`` command on 16x16 shapes3d-synth images
(2^6 = 64 images held in memory), a 2-level VQ first stage (8x8x3 latents) and a tiny UNet.
This file holds no tests.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import warnings
from pathlib import Path

import torch
from omegaconf import OmegaConf

RESOLUTION = 16
FACTORS = [2, 2, 2, 2, 2, 2]


def first_stage_config(resolution: int = RESOLUTION, z_channels: int = 3) -> dict:
    return {"target": "disdiff.models.autoencoder.VQModel",
            "params": {"embed_dim": z_channels, "n_embed": 16,
                       "ddconfig": dict(double_z=False, z_channels=z_channels, resolution=resolution, in_channels=3,
                                        out_ch=3, ch=8, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[],
                                        dropout=0.0, num_groups=4)}}


def unet_config(latent_size: int = RESOLUTION // 2, channels: int = 3) -> dict:
    return {"target": "disdiff.models.unet.UNetModel",
            "params": dict(image_size=latent_size, in_channels=channels, out_channels=channels, model_channels=8,
                           channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[2], num_heads=2,
                           num_groups=4)}


def data_config(resolution: int = RESOLUTION, batch_size: int = 4, dataset: str = "shapes3d-synth",
                options: dict | None = None) -> dict:
    if options is None:
        options = {"resolution": resolution, "factor_sizes": FACTORS, "storage": "memory"}
    return {"target": "disdiff.data.datamodule.GroundTruthDataModule",
            "params": {"dataset": dataset, "dataset_options": options, "batch_size": batch_size, "val_size": 4,
                       "seed": 0}}


def lightning_config(max_steps: int = 2, every: int = 2) -> dict:
    return {"trainer": {"max_steps": max_steps, "accelerator": "cpu", "limit_val_batches": 0,
                        "num_sanity_val_steps": 0, "enable_progress_bar": False, "enable_model_summary": False,
                        "log_every_n_steps": 1},
            "checkpoint": {"every_n_train_steps": every},
            "image_logger": {"every_n_train_steps": 0}}


def stage2_config(stage1_ckpt: str | Path | None, max_steps: int = 2, every: int = 2, resolution: int = RESOLUTION,
                  **params) -> dict:
    model_params = {"first_stage_config": first_stage_config(resolution),
                    "first_stage_ckpt": None if stage1_ckpt is None else str(stage1_ckpt),
                    "unet_config": unet_config(resolution // 2), "warmup_steps": 1, "log_ddim_steps": 2,
                    "ema_decay": 0.9}
    model_params.update(params)
    return {"model": {"target": "disdiff.training.ldm_module.LatentDiffusionModule", "base_learning_rate": 1e-4,
                      "params": model_params},
            "data": data_config(resolution), "lightning": lightning_config(max_steps, every)}


def stage3_config(ldm_ckpt: str | Path, max_steps: int = 2, every: int = 2, resolution: int = RESOLUTION,
                  **params) -> dict:
    model_params = {"ldm_ckpt": str(ldm_ckpt), "num_units": 3, "unit_dim": 4,
                    "encoder_config": {"width": 8, "resolution": resolution, "in_channels": 3},
                    "dis_loss_type": "Z", "dis_weight": 0.05, "warmup_steps": 1, "log_ddim_steps": 2,
                    "ema_decay": 0.9}
    model_params.update(params)
    return {"model": {"target": "disdiff.training.disdiff_module.DisDiffModule", "base_learning_rate": 1e-4,
                      "params": model_params},
            "data": data_config(resolution), "lightning": lightning_config(max_steps, every)}


def write_config(path: Path, config: dict) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(copy.deepcopy(config))))
    return str(path)


def make_stage1_checkpoint(path: Path, seed: int = 0, resolution: int = RESOLUTION, z_channels: int = 3,
                           record_config: bool = False) -> Path:
    """A stage-1 checkpoint in the Lightning layout (``state_dict`` with ``autoencoder.`` keys), random weights.

    ``record_config``: also store ``hyper_parameters.autoencoder_config``, as AutoencoderModule does.
    """
    from disdiff.config import instantiate_from_config

    torch.manual_seed(seed)
    config = first_stage_config(resolution, z_channels)
    model = instantiate_from_config(config)
    checkpoint = {"state_dict": {f"autoencoder.{k}": v for k, v in model.state_dict().items()}, "global_step": 0}
    if record_config:
        checkpoint["hyper_parameters"] = {"autoencoder_config": config}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


def train(argv: list[str]) -> int:
    """``disdiff train ...`` in this process (warnings silenced)."""
    from disdiff.cli.main import main

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return main(["train", *argv])


def subprocess_env(tmp_path: Path) -> dict:
    """Environment for ``python -m disdiff`` children: one thread, private cache, the package importable."""
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "DISDIFF_CACHE": str(tmp_path / "cache"),
                "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1"})
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env["PYTHONPATH"]]) if env.get("PYTHONPATH") else src
    return env


def run_cli(args: list[str], tmp_path: Path, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """``python -m disdiff ARGS`` in a child process; returns the completed process (text output)."""
    return subprocess.run([sys.executable, "-m", "disdiff", *args], env=subprocess_env(tmp_path), cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def load_weights_only(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def make_stage3_run(root: Path, max_steps: int = 2, seed: int = 0) -> Path:
    """A trained (2 steps) stage-3 run directory on a random tiny stage-2 checkpoint: ``root/s3``."""
    from disdiff_support import make_ldm_checkpoint

    ldm = make_ldm_checkpoint(root / "ldm" / "last.ckpt")
    config = write_config(root / "s3.yaml", stage3_config(ldm, max_steps=max_steps, every=max_steps))
    run = root / "s3"
    assert train(["-b", config, "--run-dir", str(run), "-s", str(seed)]) == 0
    return run


def make_stage2_checkpoint(path: Path, resolution: int = RESOLUTION, seed: int = 0, keep_first_stage: bool = True,
                           first_stage_ckpt: str | None = None) -> Path:
    """A stage-2 (LatentDiffusionModule) checkpoint with random weights for ``resolution``-pixel images."""
    from disdiff.training.ldm_module import LatentDiffusionModule

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ldm = LatentDiffusionModule(unet_config=unet_config(resolution // 2), first_stage_config=first_stage_config(resolution),
                                    first_stage_ckpt=None)
    state = ldm.state_dict()
    hparams = dict(ldm.hparams)
    if not keep_first_stage:
        state = {k: v for k, v in state.items() if not k.startswith("first_stage.")}
        hparams["first_stage_ckpt"] = first_stage_ckpt
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "hyper_parameters": hparams, "global_step": 1}, path)
    return path
