"""Stage-1 LightningModule: trains a VQ or KL autoencoder against a PatchGAN (spec 1.5, 1.6, 2).

Manual optimisation: on every batch the autoencoder (generator) optimiser steps, then the
discriminator optimiser. Both are Adam(betas=(0.5, 0.9)) with lr ``self.learning_rate``.

Lightning counts every optimiser step in ``trainer.global_step``, so it advances by **2 per
batch** here (``max_steps`` in a trainer config is in those units). The loss's ``disc_start`` is in
batches: ``batch_step = global_step // 2``.
"""

from __future__ import annotations

from typing import Any, Mapping

import lightning as L
import torch

from disdiff.config import instantiate_from_config, plain

OPTIMIZER_STEPS_PER_BATCH = 2


class AutoencoderModule(L.LightningModule):
    def __init__(
        self,
        autoencoder_config: Mapping[str, Any],
        loss_config: Mapping[str, Any],
        image_key: str = "image",
        monitor: str | None = None,
        learning_rate: float = 4.5e-6,
        lpips_weights: str | None = None,
        vgg_weights: str | None = None,
    ):
        super().__init__()
        autoencoder_config = plain(autoencoder_config)
        loss_config = plain(loss_config)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.image_key = image_key
        self.monitor = monitor
        self.learning_rate = float(learning_rate)
        self.autoencoder = instantiate_from_config(autoencoder_config)
        extra: dict[str, Any] = {}
        if lpips_weights is not None:
            extra["lpips_weights"] = lpips_weights
        if vgg_weights is not None:
            extra["vgg_weights"] = vgg_weights
        self.loss = instantiate_from_config(loss_config, **extra)

    # -- helpers -------------------------------------------------------------------------------
    @property
    def batch_step(self) -> int:
        """Number of training batches done (what ``disc_start`` is compared with)."""
        return int(self.global_step) // OPTIMIZER_STEPS_PER_BATCH

    def get_input(self, batch: Any) -> torch.Tensor:
        x = batch[self.image_key] if isinstance(batch, Mapping) else batch
        if isinstance(x, (tuple, list)):
            x = x[0]
        if x.dim() == 3:
            x = x[None]
        return x.to(memory_format=torch.contiguous_format).float()

    def forward(self, x: torch.Tensor):
        return self.autoencoder(x)

    def _log_scalars(self, log: Mapping[str, torch.Tensor], prog_bar_keys: set[str], **kwargs: Any) -> None:
        for key, value in log.items():
            self.log(key, value, prog_bar=key in prog_bar_keys, **kwargs)

    # -- training ------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = self.get_input(batch)
        opt_g, opt_d = self.optimizers()
        step = self.batch_step
        xrec, extra = self.autoencoder(x)
        bs = x.shape[0]

        ae_loss, log_g = self.loss(
            extra, x, xrec, 0, step, last_layer=self.autoencoder.last_layer, split="train"
        )
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(ae_loss)
        opt_g.step()

        d_loss, log_d = self.loss(extra, x, xrec.detach(), 1, step, last_layer=None, split="train")
        opt_d.zero_grad(set_to_none=True)  # also drops the generator pass's gradients on D
        if d_loss.requires_grad:
            self.manual_backward(d_loss)
        opt_d.step()  # a no-op (no gradients) while the discriminator is inactive

        main = {"train/rec_loss", "train/total_loss", "train/disc_loss", "train/g_loss"}
        self._log_scalars(log_g, main, on_step=True, on_epoch=False, batch_size=bs)
        self._log_scalars(log_d, main, on_step=True, on_epoch=False, batch_size=bs)
        return ae_loss.detach()  # seen by callbacks (e.g. the non-finite loss guard) as outputs["loss"]

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x = self.get_input(batch)
        xrec, _ = self.autoencoder(x)
        rec_loss = torch.mean(torch.abs(x - xrec))
        a = ((x + 1.0) / 2.0).clamp(0.0, 1.0)
        b = ((xrec + 1.0) / 2.0).clamp(0.0, 1.0)
        mse = torch.mean((a - b) ** 2, dim=[1, 2, 3]).clamp_min(1e-10)
        psnr = torch.mean(10.0 * torch.log10(1.0 / mse))
        bs = x.shape[0]
        self.log("val/rec_loss", rec_loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=bs, sync_dist=True)
        self.log("val/psnr", psnr, prog_bar=True, on_step=False, on_epoch=True, batch_size=bs, sync_dist=True)

    def configure_optimizers(self):
        lr = float(self.learning_rate)
        opt_g = torch.optim.Adam(self.autoencoder.parameters(), lr=lr, betas=(0.5, 0.9))
        opt_d = torch.optim.Adam(self.loss.discriminator.parameters(), lr=lr, betas=(0.5, 0.9))
        return [opt_g, opt_d]

    # -- images --------------------------------------------------------------------------------
    @torch.no_grad()
    def log_images(self, batch: Any, max_images: int = 8, **kwargs: Any) -> dict[str, torch.Tensor]:
        x = self.get_input(batch)[:max_images].to(self.device)
        xrec, _ = self.autoencoder(x)
        return {"inputs": x.clamp(-1.0, 1.0), "reconstructions": xrec.clamp(-1.0, 1.0)}
