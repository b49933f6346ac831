"""Stage-2 LatentDiffusionModule: training, scale-by-std, EMA, resume, load_pretrained_ldm."""

import copy
import warnings

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from disdiff.config import ConfigError
from disdiff.diffusion.lr_schedule import linear_warmup
from disdiff.training.ldm_loading import load_pretrained_ldm
from disdiff.training.ldm_module import LatentDiffusionModule, scale_factor_from_latents


class TinyFirstStage(nn.Module):
    """Stand-in autoencoder with the first-stage contract: 8×8×3 images <-> 4×4×3 latents."""

    def __init__(self, channels: int = 3):
        super().__init__()
        self.enc = nn.Conv2d(3, channels, 2, stride=2)
        self.dec = nn.Conv2d(channels, 3, 3, padding=1)
        self.latent_channels = channels
        self.downsample_factor = 2

    def encode_to_latent(self, x):
        return 3.0 * self.enc(x)

    def decode_latent(self, z, quantize=True):
        if quantize:
            z = torch.round(z * 8) / 8
        return self.dec(F.interpolate(z, scale_factor=2, mode="nearest"))


UNET = {"target": "disdiff.models.unet.UNetModel",
        "params": dict(image_size=4, in_channels=3, model_channels=8, out_channels=3, num_res_blocks=1,
                       attention_resolutions=[2], channel_mult=[1, 2], num_heads=2, num_groups=4)}
FIRST_STAGE = {"target": f"{__name__}.TinyFirstStage", "params": {"channels": 3}}


class Images(Dataset):
    def __init__(self, n=16, scale=1.0, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = (torch.rand(n, 3, 8, 8, generator=g) * 2 - 1) * scale

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"image": self.x[i]}


def make_module(**kw):
    torch.manual_seed(0)
    args = dict(unet_config=UNET, first_stage_config=FIRST_STAGE, warmup_steps=4, learning_rate=1e-2,
                log_ddim_steps=3, ema_decay=0.99)
    args.update(kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LatentDiffusionModule(**args)


def make_trainer(max_steps, callbacks=()):
    return pl.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks),
                      limit_val_batches=0, num_sanity_val_steps=0)


def loader(scale=1.0):
    return DataLoader(Images(scale=scale), batch_size=4, shuffle=False)




@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    module = make_module()
    before = {k: v.detach().clone() for k, v in module.state_dict().items()}
    trainer = make_trainer(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, train_dataloaders=loader())
    path = tmp_path_factory.mktemp("ldm") / "stage2.ckpt"
    trainer.save_checkpoint(path)
    return module, before, trainer, path


def test_trains_unet_only(trained):
    module, before, trainer, _ = trained
    assert trainer.global_step == 3
    after = module.state_dict()
    unet_keys = [k for k in before if k.startswith("unet.")]
    fs_keys = [k for k in before if k.startswith("first_stage.")]
    assert unet_keys and fs_keys
    assert all(not torch.equal(before[k], after[k]) for k in unet_keys if before[k].is_floating_point())
    assert all(torch.equal(before[k], after[k]) for k in fs_keys)
    assert not any(p.requires_grad for p in module.first_stage.parameters())
    assert not module.first_stage.training
    opt = trainer.optimizers[0]
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in module.unet.parameters()}
    assert opt.param_groups[0]["weight_decay"] == 0.01
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 * linear_warmup(4)(3))
    assert int(module.ema.num_updates) == 3


def test_scale_by_std_from_first_batch(trained):
    module, *_ = trained
    x = next(iter(loader()))["image"]
    z = module.first_stage.encode_to_latent(x)
    assert float(module.scale_factor) == pytest.approx(1.0 / z.flatten().std().item(), rel=1e-5)
    torch.testing.assert_close(module.encode_images(x), module.scale_factor * z)


def test_scale_factor_global_statistics():
    torch.manual_seed(0)
    z = torch.randn(10, 3, 4, 4) * 2.5 + 0.3
    parts = [z[:3], z[3:]]  # two "ranks" with unequal batches
    stats = []
    def collect(s):
        stats.append(s)
        return s
    for p in parts:
        scale_factor_from_latents(p, collect)
    total = stats[0] + stats[1]
    values = [scale_factor_from_latents(p, lambda s: total) for p in parts]
    assert values[0] == values[1] == pytest.approx(1.0 / z.double().flatten().std().item(), rel=1e-9)


def test_fixed_or_disabled_scale_factor_is_kept():
    batch = next(iter(loader()))
    m = make_module(scale_factor=0.5)
    m.on_train_batch_start(batch, 0)
    assert float(m.scale_factor) == 0.5
    m = make_module(scale_by_std=False)
    m.on_train_batch_start(batch, 0)
    assert float(m.scale_factor) == 1.0
    m = make_module()
    m.on_train_batch_start(batch, 0)
    assert float(m.scale_factor) != 1.0


def test_validation_sampling_and_log_images(trained):
    module, *_ = trained
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False).validate(module, DataLoader(Images(8, seed=1), batch_size=4))
    assert "val/loss_simple_ema" in res[0] and res[0]["val/loss_simple_ema"] > 0
    module.eval()
    batch = next(iter(loader()))
    live = [p.detach().clone() for p in module.unet.parameters()]
    imgs = module.log_images(batch, max_images=3)
    assert set(imgs) == {"samples", "inputs", "reconstructions"}
    assert all(v.shape == (3, 3, 8, 8) for v in imgs.values())
    assert all(torch.equal(p, q) for p, q in zip(module.unet.parameters(), live))  # EMA swapped back
    x_T = torch.randn(2, 3, 4, 4)
    a = module.sample(2, ddim_steps=3, eta=0.0, x_T=x_T)
    b = module.sample(2, ddim_steps=3, eta=0.0, x_T=x_T)
    assert torch.equal(a, b) and a.shape == (2, 3, 8, 8)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(module.sample(2, ddim_steps=3, generator=g1), module.sample(2, ddim_steps=3, generator=g2))
    with module.ema.average_parameters(module.unet):
        ema_out = module.sample_latents(2, 3, 0.0, x_T=x_T, use_ema=False)
    torch.testing.assert_close(module.sample_latents(2, 3, 0.0, x_T=x_T), ema_out)


def test_resume_restores_step_optimizer_ema_scale(trained):
    module, _, trainer, path = trained
    saved_state = copy.deepcopy(trainer.optimizers[0].state_dict())
    seen = {}

    class Probe(pl.Callback):
        def on_train_start(self, tr, m):
            seen["step"] = tr.global_step
            seen["ema"] = int(m.ema.num_updates)
            seen["scale"] = float(m.scale_factor)
            seen["shadow"] = {k: v.clone() for k, v in m.ema.shadow_state_dict().items()}
            seen["opt"] = copy.deepcopy(tr.optimizers[0].state_dict())
            seen["lr_sched_epoch"] = tr.lr_scheduler_configs[0].scheduler.last_epoch

    fresh = make_module(learning_rate=1e-2)
    tr = make_trainer(5, [Probe()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # different data: a recomputed scale factor would differ
        tr.fit(fresh, train_dataloaders=loader(scale=0.3), ckpt_path=str(path))
    assert seen["step"] == 3 and seen["ema"] == 3 and seen["lr_sched_epoch"] == 3
    assert seen["scale"] == pytest.approx(float(module.scale_factor))
    for k, v in module.ema.shadow_state_dict().items():
        torch.testing.assert_close(seen["shadow"][k], v)
    for pid, st in saved_state["state"].items():
        torch.testing.assert_close(seen["opt"]["state"][pid]["exp_avg"], st["exp_avg"])
    assert tr.global_step == 5 and int(fresh.ema.num_updates) == 5
    assert float(fresh.scale_factor) == pytest.approx(float(module.scale_factor))


def test_load_pretrained_ldm_round_trip(trained, tmp_path):
    module, _, _, path = trained
    out = load_pretrained_ldm(path)
    unet = out["unet"]
    assert not unet.training and not any(p.requires_grad for p in unet.parameters())
    ema = module.ema.shadow_state_dict()
    for name, p in unet.named_parameters():
        torch.testing.assert_close(p, ema[name])
    raw = load_pretrained_ldm(path, use_ema=False)["unet"]
    for (name, p), q in zip(raw.named_parameters(), module.unet.parameters()):
        torch.testing.assert_close(p, q)
    assert any(not torch.equal(p, q) for p, q in zip(unet.parameters(), raw.parameters()))
    assert out["scale_factor"] == pytest.approx(float(module.scale_factor))
    assert out["unet_config"] == UNET and out["first_stage_config"] == FIRST_STAGE
    assert out["first_stage_ckpt"] is None and out["schedule_config"]["timesteps"] == 1000
    fs = out["first_stage"]
    assert not fs.training and not any(p.requires_grad for p in fs.parameters())
    for (n1, p), q in zip(fs.state_dict().items(), module.first_stage.state_dict().values()):
        torch.testing.assert_close(p, q)
    x = torch.rand(2, 3, 8, 8)
    module.eval()
    with module.ema.average_parameters(module.unet):
        torch.testing.assert_close(unet(x[:, :, :4, :4], torch.tensor([3, 9])), module.unet(x[:, :, :4, :4], torch.tensor([3, 9])))

    with pytest.raises(ConfigError, match="nope.ckpt"):
        load_pretrained_ldm(tmp_path / "nope.ckpt")
    other = tmp_path / "stage1.ckpt"
    torch.save({"state_dict": {"autoencoder.w": torch.zeros(1)}, "hyper_parameters": {}}, other)
    with pytest.raises(ConfigError, match="not a stage-2 checkpoint"):
        load_pretrained_ldm(other)


def test_load_pretrained_ldm_without_ema(tmp_path):
    m = make_module(use_ema=False)
    assert m.ema is None
    trainer = make_trainer(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(m, train_dataloaders=loader())
    path = tmp_path / "noema.ckpt"
    trainer.save_checkpoint(path)
    with pytest.raises(ConfigError, match="use_ema=False"):
        load_pretrained_ldm(path)
    assert load_pretrained_ldm(path, use_ema=False)["unet"] is not None


def test_hyperparameters_are_plain_containers():
    from omegaconf import OmegaConf

    m = make_module(unet_config=OmegaConf.create(UNET))
    assert type(m.hparams["unet_config"]) is dict
    assert m.hparams["learning_rate"] == 1e-2
    with pytest.raises(ConfigError):
        make_module(loss_type="huber")
    bad = copy.deepcopy(UNET)
    bad["params"]["in_channels"] = 4
    with pytest.raises(ConfigError, match="latent_channels"):
        make_module(unet_config=bad)


def test_with_real_vq_first_stage(tmp_path):
    vq = {"target": "disdiff.models.autoencoder.VQModel",
          "params": {"embed_dim": 3, "n_embed": 16, "ddconfig": dict(
              double_z=False, z_channels=3, resolution=8, in_channels=3, out_ch=3, ch=8, ch_mult=[1, 2],
              num_res_blocks=1, attn_resolutions=[], dropout=0.0, num_groups=4)}}
    unet = copy.deepcopy(UNET)
    unet["params"]["image_size"] = 4
    m = make_module(first_stage_config=vq, unet_config=unet)
    assert m.first_stage.downsample_factor == 2
    trainer = make_trainer(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(m, train_dataloaders=loader())
    path = tmp_path / "vq.ckpt"
    trainer.save_checkpoint(path)
    out = load_pretrained_ldm(path)
    assert type(out["first_stage"]).__name__ == "VQModel"
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    torch.testing.assert_close(out["first_stage"].encode_to_latent(x), m.first_stage.encode_to_latent(x))
    m.eval()
    assert m.log_images({"image": x}, max_images=2)["samples"].shape == (2, 3, 8, 8)
