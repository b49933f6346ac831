"""Stage 2: an unconditional latent diffusion model (ε-prediction ADM UNet on first-stage latents).

Spec sections 1 and 3. Only the UNet trains; the first-stage autoencoder is frozen. The latents
the UNet sees are ``z = scale_factor · encode_to_latent(x)``; images come back through
``decode_latent(z / scale_factor)``.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

import lightning.pytorch as pl
import torch
from torch import nn

from disdiff.config import ConfigError, instantiate_from_config, plain
from disdiff.diffusion.ema import EMA
from disdiff.diffusion.lr_schedule import linear_warmup
from disdiff.diffusion.sampling import ddim_sample
from disdiff.diffusion.schedule import DiffusionSchedule, extract, q_sample
from disdiff.training.batches import images_from_batch
from disdiff.training.ema_step import BatchEMAUpdate

log = logging.getLogger(__name__)

__all__ = ["LatentDiffusionModule", "scale_factor_from_latents"]


def scale_factor_from_latents(
    z: torch.Tensor, all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> float:
    """``1 / std(z)`` over every element of the (global) batch, unbiased like ``torch.std``.

    Each rank contributes ``(Σz, Σz², n)``; ``all_reduce_sum`` sums them across ranks (identity on
    a single process), so every rank computes the identical value from the global statistics:
    ``var = (Σz² − (Σz)²/n)/(n − 1)``.
    """
    dtype = torch.float32 if z.device.type == "mps" else torch.float64
    zf = z.detach().to(dtype)
    stats = torch.stack([zf.sum(), (zf * zf).sum(), torch.tensor(float(zf.numel()), dtype=dtype, device=z.device)])
    if all_reduce_sum is not None:
        stats = all_reduce_sum(stats)
    s1, s2, n = (float(v) for v in stats)
    if n < 2:
        raise ValueError("scale_by_std needs at least two latent values")
    var = max(s2 - s1 * s1 / n, 0.0) / (n - 1)
    if var <= 0.0:
        raise ValueError("scale_by_std: the first-stage latents of the first batch have zero variance")
    return 1.0 / var**0.5


class LatentDiffusionModule(BatchEMAUpdate, pl.LightningModule):
    """Stage-2 LDM: trains ``unet`` to predict ε on scaled latents of a frozen ``first_stage``.

    Attributes: ``unet``, ``first_stage`` (frozen, eval), ``schedule`` (:class:`DiffusionSchedule`),
    ``ema`` (:class:`EMA` of the UNet, if ``use_ema``) and the buffer ``scale_factor``.

    ``scale_by_std``: at the first training batch of a fresh run (global step 0, not restored from
    a checkpoint, ``scale_factor`` still 1) set ``scale_factor = 1/std(z)`` over all elements of
    the batch's latents, computed from statistics all-reduced across ranks so that every rank holds
    the same value. A ``scale_factor`` other than 1 given in the config is kept as is.

    ``autocast_bf16`` (speed switch, default false; changes numerics): the UNet pass of the
    training/validation loss runs under bfloat16 autocast (parameters, GroupNorm, attention, the
    latents and the loss arithmetic stay float32; sampling is unaffected). tests/test_speed_options.py
    bounds the difference to float32.
    """

    def __init__(
        self,
        unet_config: dict,
        first_stage_config: dict,
        first_stage_ckpt: str | None = None,
        timesteps: int = 1000,
        beta_schedule: str = "linear",
        linear_start: float = 0.0015,
        linear_end: float = 0.0155,
        loss_type: str = "l1",
        scale_by_std: bool = True,
        scale_factor: float = 1.0,
        use_ema: bool = True,
        ema_decay: float = 0.9999,
        warmup_steps: int = 10000,
        weight_decay: float = 0.01,
        image_key: str = "image",
        log_ddim_steps: int = 50,
        learning_rate: float = 2e-6,
        monitor: str | None = None,
        autocast_bf16: bool = False,
    ) -> None:
        super().__init__()
        unet_config = plain(unet_config)
        first_stage_config = plain(first_stage_config)
        first_stage_ckpt = None if first_stage_ckpt is None else str(first_stage_ckpt)
        if first_stage_ckpt == "???":
            raise ConfigError(
                "model.params.first_stage_ckpt is required: pass the stage-1 checkpoint, "
                "e.g. model.params.first_stage_ckpt=<stage-1 run>/checkpoints/last.ckpt"
            )
        for key, value in (("unet_config", unet_config), ("first_stage_config", first_stage_config)):
            if not isinstance(value, Mapping) or "target" not in value:
                raise ConfigError(f"model.params.{key} must be a target/params block, got {value!r}")
        if loss_type not in ("l1", "l2"):
            raise ConfigError(f"loss_type must be 'l1' or 'l2', got {loss_type!r}")
        self.save_hyperparameters()

        from disdiff.models.autoencoder import load_first_stage

        self.unet = instantiate_from_config(unet_config)
        self.first_stage = load_first_stage(first_stage_config, first_stage_ckpt)
        self._freeze_first_stage()
        self.schedule = DiffusionSchedule(timesteps, beta_schedule, linear_start, linear_end)
        self.ema = EMA(self.unet, decay=ema_decay) if use_ema else None
        self.register_buffer("scale_factor", torch.tensor(float(scale_factor), dtype=torch.float32))

        self.loss_type = loss_type
        self.scale_by_std = bool(scale_by_std)
        self.use_ema = bool(use_ema)
        self.warmup_steps = int(warmup_steps)
        self.weight_decay = float(weight_decay)
        self.image_key = image_key
        self.log_ddim_steps = int(log_ddim_steps)
        self.learning_rate = float(learning_rate)
        self.monitor = monitor
        self._restored = False
        self.autocast_bf16 = bool(autocast_bf16)

        unet_in = getattr(self.unet, "in_channels", None)
        fs_ch = getattr(self.first_stage, "latent_channels", None)
        if unet_in is not None and fs_ch is not None and int(unet_in) != int(fs_ch):
            raise ConfigError(
                f"unet in_channels={unet_in} does not match the first stage's latent_channels={fs_ch}"
            )
        from disdiff.models.autoencoder import latent_shape_of

        latent = latent_shape_of(first_stage_config)
        unet_size = getattr(self.unet, "image_size", None)
        if latent is not None and unet_size is not None and int(unet_size) != latent[1]:
            raise ConfigError(
                f"unet_config image_size={unet_size} but the first stage makes latents {'x'.join(map(str, latent))} "
                f"(first_stage_config); set unet_config.params.image_size={latent[1]}"
            )

    # -- modes ----------------------------------------------------------------------------------
    def _freeze_first_stage(self) -> None:
        self.first_stage.eval()
        for p in self.first_stage.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> "LatentDiffusionModule":
        super().train(mode)
        self.first_stage.eval()  # the frozen autoencoder never leaves eval mode
        return self

    # -- latents --------------------------------------------------------------------------------
    def get_input(self, batch: Any) -> torch.Tensor:
        return images_from_batch(batch, self.image_key)

    @torch.no_grad()
    def encode_first_stage(self, x: torch.Tensor) -> torch.Tensor:
        """Unscaled first-stage latent (VQ: pre-quantisation; KL: posterior sample)."""
        return self.first_stage.encode_to_latent(x)

    @torch.no_grad()
    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled latents ``z = scale_factor · E(x)`` (no gradient)."""
        return self.scale_factor * self.encode_first_stage(x)

    def decode_latents(self, z: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        """Images ``D(z / scale_factor)``; differentiable w.r.t. ``z`` (the decoder itself is frozen)."""
        return self.first_stage.decode_latent(z / self.scale_factor, quantize=quantize)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of the latents the UNet works on."""
        size = int(self.unet.image_size)
        return int(self.unet.in_channels), size, size

    # -- training -------------------------------------------------------------------------------
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._restored = True

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_start(batch, batch_idx)  # marks this batch's EMA update as pending
        if not self.scale_by_std or self._restored:
            return
        if self.global_step != 0 or self.current_epoch != 0 or batch_idx != 0:
            return
        trainer = self._trainer
        if trainer is not None and getattr(trainer, "ckpt_path", None):
            return
        if float(self.scale_factor) != 1.0:
            return  # a fixed value from the config (or already set)
        z = self.encode_first_stage(self.get_input(batch))
        reduce = None
        if trainer is not None and trainer.world_size > 1:
            reduce = lambda s: trainer.strategy.reduce(s, reduce_op="sum")  # noqa: E731
        value = scale_factor_from_latents(z, reduce)
        self.scale_factor.fill_(value)
        log.info("scale_by_std: scale_factor set to %.6g (1/std of the first batch's latents)", value)

    def diffusion_loss(
        self, z0: torch.Tensor, t: torch.Tensor | None = None, noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample loss ``mean_chw |ε − ε̂_θ(z_t, t)|`` (or squared for l2) and the t used."""
        B = z0.shape[0]
        if t is None:
            if generator is None:
                t = torch.randint(0, self.schedule.num_timesteps, (B,), device=z0.device)
            else:
                t = torch.randint(0, self.schedule.num_timesteps, (B,), generator=generator).to(z0.device)
        if noise is None:
            if generator is None:
                noise = torch.randn_like(z0)
            else:
                noise = torch.randn(z0.shape, generator=generator, dtype=z0.dtype).to(z0.device)
        z_t = q_sample(self.schedule, z0, t, noise)
        with torch.autocast(device_type=z_t.device.type, dtype=torch.bfloat16, enabled=self.autocast_bf16):
            eps = self.unet(z_t, t)
        eps = eps.float()
        diff = noise - eps
        per_elem = diff.abs() if self.loss_type == "l1" else diff * diff
        return per_elem.flatten(1).mean(1), t

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = self.get_input(batch)
        z0 = self.encode_images(x)
        loss_per_sample, t = self.diffusion_loss(z0)
        loss_simple = loss_per_sample.mean()
        loss_vlb = (extract(self.schedule.lvlb_weights, t, (t.shape[0],)) * loss_per_sample).mean()
        loss = loss_simple  # l_simple_weight 1, logvar 0, original_elbo_weight 0 (spec 1.2)
        B = x.shape[0]
        self.log("train/loss_simple", loss_simple, prog_bar=True, on_step=True, on_epoch=True, batch_size=B)
        self.log("train/loss_vlb", loss_vlb, on_step=True, on_epoch=True, batch_size=B)
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=B)
        if self._trainer is not None and self.trainer.optimizers:
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]
            self.log("lr_abs", lr, prog_bar=True, on_step=True, on_epoch=False, batch_size=B)
        return loss

    def ema_target(self) -> nn.Module:
        return self.unet  # the EMA is updated after every batch (training/ema_step.py)

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = self.get_input(batch)
        z0 = self.encode_images(x)
        # Fixed noise and timesteps per batch index, so validation curves are comparable.
        gen = torch.Generator().manual_seed(1234 + batch_idx)
        if self.ema is not None:
            with self.ema.average_parameters(self.unet):
                loss = self.diffusion_loss(z0, generator=gen)[0].mean()
            name = "val/loss_simple_ema"
        else:
            loss = self.diffusion_loss(z0, generator=gen)[0].mean()
            name = "val/loss_simple"
        self.log(name, loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=x.shape[0], sync_dist=True)
        return loss

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(self.unet.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_warmup(self.warmup_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    # -- sampling -------------------------------------------------------------------------------
    def eps_fn(self, x_t: torch.Tensor, t: torch.Tensor, coef: torch.Tensor | None = None) -> torch.Tensor:
        """The sampler interface ``eps_fn(x_t, t, coef)``; the unconditional LDM ignores ``coef``."""
        return self.unet(x_t, t)

    @torch.no_grad()
    def sample_latents(
        self, n: int, ddim_steps: int | None = None, eta: float = 1.0, generator: torch.Generator | None = None,
        x_T: torch.Tensor | None = None, use_ema: bool = True, progress: bool = False,
    ) -> torch.Tensor:
        """DDIM samples in the scaled latent space, shape (n, C, h, w)."""
        steps = self.log_ddim_steps if ddim_steps is None else int(ddim_steps)
        shape = (int(n), *self.latent_shape)

        def run() -> torch.Tensor:
            return ddim_sample(self.eps_fn, self.schedule, shape, steps=steps, eta=eta, x_T=x_T,
                               generator=generator, progress=progress, device=self.scale_factor.device)

        if use_ema and self.ema is not None:
            with self.ema.average_parameters(self.unet):
                return run()
        return run()

    @torch.no_grad()
    def sample(
        self, n: int, ddim_steps: int | None = None, eta: float = 1.0, generator: torch.Generator | None = None,
        x_T: torch.Tensor | None = None, use_ema: bool = True, progress: bool = False,
    ) -> torch.Tensor:
        """Decoded DDIM samples (n, C, H, W) (VQ: decoded with quantisation), EMA weights by default."""
        z = self.sample_latents(n, ddim_steps, eta, generator, x_T, use_ema, progress)
        return self.decode_latents(z, quantize=True)

    @torch.no_grad()
    def log_images(self, batch: Any, max_images: int = 8, ddim_steps: int | None = None, eta: float = 1.0) -> dict[str, torch.Tensor]:
        """``{"inputs", "reconstructions", "samples"}``, each (≤ max_images, C, H, W) in ~[-1, 1]."""
        x = self.get_input(batch)[:max_images].to(self.scale_factor.device)
        out = {"inputs": x, "reconstructions": self.decode_latents(self.encode_images(x), quantize=True)}
        out["samples"] = self.sample(x.shape[0], ddim_steps=ddim_steps, eta=eta, use_ema=True)
        return out
