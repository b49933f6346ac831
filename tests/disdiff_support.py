"""Tiny stage-2 checkpoints and DisDiff modules shared by the tests/test_disdiff_*.py files."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

IMAGE_SIZE = 16

FIRST_STAGE = {
    "target": "disdiff.models.autoencoder.VQModel",
    "params": {
        "embed_dim": 3,
        "n_embed": 16,
        "ddconfig": dict(ch=8, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[], dropout=0.0, in_channels=3,
                         out_ch=3, resolution=IMAGE_SIZE, z_channels=3, double_z=False, num_groups=4),
    },
}

UNET = {
    "target": "disdiff.models.unet.UNetModel",
    "params": dict(image_size=IMAGE_SIZE // 2, in_channels=3, model_channels=8, out_channels=3, num_res_blocks=1,
                   attention_resolutions=[2], channel_mult=[1, 2], num_heads=2, num_groups=4),
}


def random_images(n: int, seed: int = 0) -> torch.Tensor:
    """``n`` uniform random images in [-1, 1] of the test resolution."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g) * 2 - 1


class ImageBatches(torch.utils.data.Dataset):
    """``n`` random images as training batches of a DisDiffModule (``image``, ``factors``, ``index``)."""

    def __init__(self, n: int = 8) -> None:
        self.x = random_images(n, seed=5)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.x[i], "factors": torch.zeros(2, dtype=torch.long), "index": torch.tensor(i)}


def make_ldm_checkpoint(path: Path, seed: int = 0, scale_factor: float = 0.7, perturb_ema: bool = True) -> Path:
    """A stage-2 checkpoint in the LatentDiffusionModule format (random weights, non-zero outputs)."""
    from disdiff.training.ldm_module import LatentDiffusionModule

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ldm = LatentDiffusionModule(unet_config=UNET, first_stage_config=FIRST_STAGE, first_stage_ckpt=None)
    with torch.no_grad():
        # Give the zero-initialised output layers some weight so that pred depends on the input.
        for p in ldm.unet.parameters():
            if p.abs().sum() == 0 and p.dim() > 1:
                p.normal_(0, 0.05)
        ldm.ema = type(ldm.ema)(ldm.unet, decay=0.99)  # shadow = the perturbed weights
        if perturb_ema:
            for name in ldm.ema.param_to_shadow.values():
                getattr(ldm.ema, name).add_(0.01)
        ldm.scale_factor.fill_(scale_factor)
    ckpt = {"state_dict": ldm.state_dict(), "hyper_parameters": dict(ldm.hparams), "global_step": 3}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


def make_module(ldm_ckpt: Path, seed: int = 0, **kwargs):
    from disdiff.training.disdiff_module import DisDiffModule

    torch.manual_seed(seed)
    args = dict(ldm_ckpt=str(ldm_ckpt), encoder_config={"width": 8}, num_units=3, unit_dim=4, warmup_steps=2,
                learning_rate=1e-3, log_ddim_steps=3, ema_decay=0.9)
    args.update(kwargs)
    return DisDiffModule(**args)


def randomize_shift_output(module, std: float = 0.05, seed: int = 1) -> None:
    """Move G away from 0 (as training would) by giving the zero-initialised shift layers weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.denoiser.trainable_parameters():
            if p.abs().sum() == 0 and p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * std)


def assert_gradient_reaches_only_the_trained_parts(module) -> None:
    """After a backward pass: the shift decoder and the image encoder have a nonzero gradient, and no
    frozen parameter of the denoiser (the pre-trained UNet) has one."""
    decoder_grad = sum(p.grad.abs().sum() for p in module.denoiser.trainable_parameters() if p.grad is not None)
    encoder_grad = sum(p.grad.abs().sum() for p in module.encoder.parameters() if p.grad is not None)
    assert decoder_grad > 0 and encoder_grad > 0
    frozen = [p for p in module.denoiser.parameters() if not p.requires_grad]
    assert frozen and all(p.grad is None for p in frozen)


def losses_with_opt_in_term(ldm_ckpt: Path, term: str, **switch):
    """The published module's losses on 6 random images have no ``term`` and L = L_r; returns the module
    built with ``switch`` (its zero-initialised shift output moved off 0, as training would) and its
    losses on the same images and draws."""
    x = random_images(6)
    published = make_module(ldm_ckpt, dis_weight=0.0)
    out = published.compute_losses(x, generator=torch.Generator().manual_seed(0))
    assert term not in out and torch.equal(out["loss"], out["loss_rec"])
    module = make_module(ldm_ckpt, dis_weight=0.0, **switch)
    randomize_shift_output(module)  # at initialisation G = 0, where no gradient reaches the encoder
    return module, module.compute_losses(x, generator=torch.Generator().manual_seed(0))


class ImageSet:
    """A dataset's image interface (``len``, ``images(indices)``) over fixed random images, as export reads it."""

    def __init__(self, n: int, seed: int = 3) -> None:
        self.x = random_images(n, seed=seed).numpy()

    def __len__(self) -> int:
        return len(self.x)

    def images(self, indices):
        return self.x[indices]


def count_feature_calls(monkeypatch) -> list[int]:
    """From now on, the batch size of every pass through the frozen networks
    (``DPMFeatureEncoder.features``) is appended to the returned list."""
    from disdiff.models.dpm_feature_encoder import DPMFeatureEncoder

    calls: list[int] = []
    features = DPMFeatureEncoder.features
    monkeypatch.setattr(DPMFeatureEncoder, "features", lambda self, x: calls.append(len(x)) or features(self, x))
    return calls


def save_module_checkpoint(module, path: Path, global_step: int = 0) -> Path:
    """``module`` as a stage-3 checkpoint file that ``DisDiff.load`` reads (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "global_step": global_step}, path)
    return path


class BrightnessGrid:
    """A ground-truth dataset of 4 x ``others`` images: factor 0 sets the images' brightness (plus a
    little fixed noise), factor 1 nothing."""

    factor_names = ("brightness", "nothing")

    def __init__(self, others: int = 8) -> None:
        self.factors = np.array([[b, k] for b in range(4) for k in range(others)])
        self.noise = np.random.RandomState(1).uniform(-0.05, 0.05, (len(self.factors), 3, IMAGE_SIZE, IMAGE_SIZE)
                                                      ).astype(np.float32)

    def __len__(self) -> int:
        return len(self.factors)

    def factors_of(self, idx):
        return self.factors[np.asarray(idx)]

    def images(self, idx):
        b = self.factors[np.asarray(idx), 0].astype(np.float32)
        return (b[:, None, None, None] / 2.0 - 0.75) + self.noise[np.asarray(idx)]
