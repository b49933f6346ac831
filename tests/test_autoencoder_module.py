"""Stage-1 LightningModule and load_first_stage: tiny training run, checkpoint round trip, errors."""

from __future__ import annotations

import logging

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset

from disdiff.config import ConfigError
from disdiff.models.autoencoder import VQModel, load_first_stage
from disdiff.training.autoencoder_module import AutoencoderModule

DD = dict(ch=8, out_ch=3, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[], dropout=0.0,
          in_channels=3, resolution=16, z_channels=3, double_z=False, num_groups=4)
VQ_CFG = {"target": "disdiff.models.autoencoder.VQModel", "params": {"ddconfig": DD, "embed_dim": 3, "n_embed": 16}}
KL_CFG = {"target": "disdiff.models.autoencoder.AutoencoderKL",
          "params": {"ddconfig": dict(DD, z_channels=4, double_z=True), "embed_dim": 4}}
VQ_LOSS = {"target": "disdiff.models.autoencoder.losses.VQLPIPSWithDiscriminator",
           "params": {"disc_start": 0, "disc_weight": 0.75, "disc_ndf": 8, "disc_num_layers": 2}}
KL_LOSS = {"target": "disdiff.models.autoencoder.losses.LPIPSWithDiscriminator",
           "params": {"disc_start": 0, "kl_weight": 1e-6, "disc_weight": 0.5, "disc_ndf": 8, "disc_num_layers": 2}}


class _Images(Dataset):
    def __init__(self, n=8, res=16):
        self.x = torch.rand(n, 3, res, res, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"image": self.x[i], "index": i}


def _fit(module, tmp_path, max_steps=3):
    trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=1,
                        num_sanity_val_steps=0, default_root_dir=str(tmp_path))
    loader = DataLoader(_Images(), batch_size=4)
    trainer.fit(module, loader, DataLoader(_Images(4), batch_size=4))
    return trainer


def _params(m):
    return [p.detach().clone() for p in m.parameters()]


@pytest.mark.parametrize("ae_cfg,loss_cfg,extra_key", [(VQ_CFG, VQ_LOSS, "train/codebook_loss"), (KL_CFG, KL_LOSS, "train/kl_loss")])
def test_tiny_training_steps_both_optimisers(tmp_path, ae_cfg, loss_cfg, extra_key):
    torch.manual_seed(0)
    module = AutoencoderModule(OmegaConf.create(ae_cfg), OmegaConf.create(loss_cfg), learning_rate=1e-3)
    assert isinstance(module.hparams["autoencoder_config"], dict)  # plain containers, not DictConfig
    ae0, d0 = _params(module.autoencoder), _params(module.loss.discriminator)
    trainer = _fit(module, tmp_path)
    assert trainer.global_step >= 3 and module.batch_step == trainer.global_step // 2
    assert any(not torch.equal(a, b) for a, b in zip(ae0, module.autoencoder.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d0, module.loss.discriminator.parameters()))
    opt_g, opt_d = trainer.optimizers
    assert opt_g.param_groups[0]["lr"] == 1e-3 and opt_g.param_groups[0]["betas"] == (0.5, 0.9)
    assert len(opt_g.state) > 0 and len(opt_d.state) > 0
    metrics = trainer.logged_metrics
    for key in ("train/rec_loss", "train/total_loss", extra_key, "train/d_weight", "train/disc_loss",
                "train/g_loss", "val/rec_loss", "val/psnr"):
        assert key in metrics and torch.isfinite(torch.as_tensor(metrics[key])), key
    images = module.log_images({"image": _Images(3).x}, max_images=2)
    assert set(images) == {"inputs", "reconstructions"} and images["reconstructions"].shape == (2, 3, 16, 16)
    assert images["reconstructions"].abs().max() <= 1


def test_checkpoint_round_trip_and_frozen(tmp_path):
    torch.manual_seed(0)
    module = AutoencoderModule(VQ_CFG, VQ_LOSS)
    trainer = _fit(module, tmp_path, max_steps=2)
    ckpt = tmp_path / "stage1.ckpt"
    trainer.save_checkpoint(ckpt)
    ae = load_first_stage(OmegaConf.create(VQ_CFG), str(ckpt))
    assert isinstance(ae, VQModel) and not ae.training
    assert not any(p.requires_grad for p in ae.parameters())
    for (k, v), (k2, v2) in zip(ae.state_dict().items(), module.autoencoder.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    parent = torch.nn.Sequential(ae)
    parent.train()
    assert not ae.training  # train() is a no-op on the frozen first stage
    # the rebuilt Lightning module loads back too (weights_only checkpoint with plain hparams)
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    rebuilt = AutoencoderModule(**raw["hyper_parameters"])
    rebuilt.load_state_dict(raw["state_dict"])


def test_load_first_stage_handmade_checkpoint_and_errors(tmp_path):
    torch.manual_seed(0)
    src = VQModel(DD, embed_dim=3, n_embed=16)
    state = {f"autoencoder.{k}": v for k, v in src.state_dict().items()}
    state["loss.discriminator.main.0.weight"] = torch.zeros(1)
    path = tmp_path / "hand.ckpt"
    torch.save({"state_dict": state}, path)
    ae = load_first_stage(VQ_CFG, str(path))
    assert torch.equal(ae.quantize.embedding.weight, src.quantize.embedding.weight)

    with pytest.raises(ConfigError, match="missing.ckpt"):
        load_first_stage(VQ_CFG, str(tmp_path / "missing.ckpt"))
    other = {"target": VQ_CFG["target"], "params": dict(VQ_CFG["params"], embed_dim=4)}
    with pytest.raises(ConfigError, match=r"hand\.ckpt.*quant_conv\.weight.*\(3, 3, 1, 1\).*\(4, 3, 1, 1\)"):
        load_first_stage(other, str(path))
    with pytest.raises(ConfigError, match="hand.ckpt"):
        load_first_stage(KL_CFG, str(path))


def test_load_first_stage_without_checkpoint_warns(caplog):
    with caplog.at_level(logging.WARNING):
        ae = load_first_stage(KL_CFG, None)
    assert not ae.training and "random" in caplog.text
