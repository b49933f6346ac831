"""The packaged stage-1 configs build, with the published shapes and the small CPU variants."""

from __future__ import annotations

import pytest
import torch

from disdiff.config import PACKAGED_CONFIG_DIR, instantiate_from_config, load_configs
from disdiff.models.autoencoder import AutoencoderKL, VectorQuantizer, VQModel

PUBLISHED = [f"{ds}-{kind}-f4.yaml" for ds in ("shapes3d", "mpi3d", "cars3d", "celeba") for kind in ("vq", "kl")]
SMALL = ["shapes3d-synth-vq-f4-small.yaml", "shapes3d-synth-kl-f4-small.yaml"]


def test_all_autoencoder_configs_are_listed():
    found = sorted(p.name for p in (PACKAGED_CONFIG_DIR / "autoencoder").glob("*.yaml"))
    assert found == sorted(PUBLISHED + SMALL)


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_configs(name):
    full = load_configs([f"autoencoder/{name}"])
    cfg = full.model
    assert cfg.target == "disdiff.training.autoencoder_module.AutoencoderModule"
    # The published absolute lr 1.152e-3 (= 2 x 128 x 4.5e-6) at batch 128 without accumulation.
    assert cfg.base_learning_rate * full.data.params.batch_size == pytest.approx(2 * 128 * 4.5e-6)
    ae_cfg, loss = cfg.params.autoencoder_config, cfg.params.loss_config.params
    dd = ae_cfg.params.ddconfig
    assert (dd.ch, list(dd.ch_mult), dd.num_res_blocks, dd.resolution, dd.num_groups) == (32, [1, 2, 4], 2, 64, 32)
    if "-vq-" in name:
        assert (ae_cfg.params.embed_dim, ae_cfg.params.n_embed, dd.double_z) == (3, 2048, False)
        assert (loss.disc_start, loss.disc_weight, loss.codebook_weight) == (0, 0.75, 1.0)
    else:
        assert (ae_cfg.params.embed_dim, dd.z_channels, dd.double_z) == (4, 4, True)
        assert (loss.disc_start, loss.kl_weight, loss.disc_weight) == (50001, 1e-6, 0.5)


def test_published_model_builds_with_16x16_latents():
    module = instantiate_from_config(load_configs(["autoencoder/shapes3d-vq-f4.yaml"]).model)
    ae = module.autoencoder
    assert isinstance(ae, VQModel) and ae.downsample_factor == 4 and ae.latent_channels == 3
    assert ae.quantize.embedding.weight.shape == (2048, 3)
    assert ae.quantize.embedding.weight.abs().max() <= 1 / 2048
    with torch.no_grad():
        assert ae.encode_to_latent(torch.zeros(1, 3, 64, 64)).shape == (1, 3, 16, 16)


@pytest.mark.parametrize("name", SMALL)
def test_small_configs_build_8x8x3(name):
    module = instantiate_from_config(load_configs([f"autoencoder/{name}"]).model)
    ae = module.autoencoder
    assert isinstance(ae, VQModel if "-vq-" in name else AutoencoderKL)
    with torch.no_grad():
        z = ae.encode_to_latent(torch.zeros(1, 3, 32, 32))
        assert z.shape == (1, 3, 8, 8) and ae.decode_latent(z).shape == (1, 3, 32, 32)


def test_codebook_init_range_option():
    assert VectorQuantizer(64, 3).embedding.weight.abs().max() <= 1 / 64
    w = VectorQuantizer(64, 3, init_range=1.0).embedding.weight
    assert w.abs().max() <= 1.0 and w.abs().max() > 0.5
