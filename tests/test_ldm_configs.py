"""Packaged stage-2 configs: published hyper-parameters and consistency with stage 1."""

import pytest
import torch
from omegaconf import OmegaConf

from disdiff.config import PACKAGED_CONFIG_DIR, ConfigError, instantiate_from_config
from disdiff.training.ldm_module import LatentDiffusionModule

PUBLISHED = [f"{ds}-{kind}" for ds in ("shapes3d", "mpi3d", "cars3d", "celeba") for kind in ("vq", "kl")]




def load(name):
    return OmegaConf.load(PACKAGED_CONFIG_DIR / "ldm" / f"{name}.yaml")


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_ldm_config(name):
    cfg = load(name)
    assert cfg.model.target == "disdiff.training.ldm_module.LatentDiffusionModule"
    assert cfg.model.base_learning_rate == 2e-6
    p = cfg.model.params
    assert OmegaConf.is_missing(p, "first_stage_ckpt")
    assert (p.timesteps, p.beta_schedule, p.linear_start, p.linear_end) == (1000, "linear", 0.0015, 0.0155)
    assert (p.loss_type, p.scale_by_std, p.use_ema, p.ema_decay, p.warmup_steps, p.weight_decay) == (
        "l1", True, True, 0.9999, 10000, 0.01)
    u = p.unet_config.params
    ch = 3 if name.endswith("vq") else 4
    assert (u.image_size, u.in_channels, u.out_channels, u.model_channels) == (16, ch, ch, 64)
    assert list(u.channel_mult) == [1, 2, 4, 4] and list(u.attention_resolutions) == [1, 2, 4]
    assert (u.num_res_blocks, u.num_heads, u.use_scale_shift_norm, u.resblock_updown, u.num_groups) == (2, 8, True, True, 32)
    # the first stage must be the stage-1 autoencoder of the same dataset and kind
    stage1 = OmegaConf.load(PACKAGED_CONFIG_DIR / "autoencoder" / f"{name}-f4.yaml")
    assert OmegaConf.to_container(p.first_stage_config) == OmegaConf.to_container(stage1.model.params.autoencoder_config)


def test_published_config_builds_and_requires_first_stage_ckpt():
    cfg = load("shapes3d-vq")
    unet = instantiate_from_config(cfg.model.params.unet_config)
    assert unet.skip_channels == [64, 64, 64, 64, 128, 128, 128, 256, 256, 256, 256, 256]
    with pytest.raises(ConfigError, match="first_stage_ckpt"):
        instantiate_from_config(cfg.model)


def test_small_config():
    cfg = load("shapes3d-synth-vq-small")
    p = cfg.model.params
    assert OmegaConf.is_missing(p, "first_stage_ckpt")
    # The named first stage is the small stage-1 VQ, and its latents fit the UNet.
    stage1 = OmegaConf.load(PACKAGED_CONFIG_DIR / "autoencoder" / "shapes3d-synth-vq-f4-small.yaml")
    assert p.first_stage_config == stage1.model.params.autoencoder_config
    assert p.warmup_steps == 200
    unet = instantiate_from_config(p.unet_config)
    assert unet.in_channels == 3 and unet.image_size == 8
    with torch.no_grad():
        assert unet(torch.randn(2, 3, 8, 8), torch.tensor([0, 999])).shape == (2, 3, 8, 8)
    with pytest.raises(ConfigError, match="first_stage"):
        LatentDiffusionModule(**OmegaConf.to_container(p))
