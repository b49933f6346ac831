"""Stage-1 losses: reconstruction (L1 + optional LPIPS), codebook or KL term, PatchGAN hinge loss
with the adaptive generator weight (spec sections 2.2 and 2.3).

Both loss modules are called as ``loss(extra, inputs, reconstructions, optimizer_idx, global_step,
last_layer=None, split="train") -> (loss, log_dict)``, where ``extra`` is the codebook loss (VQ) or
the posterior (KL), ``optimizer_idx`` 0 is the autoencoder (generator) step and 1 the
discriminator step, and ``global_step`` counts training batches (used for ``disc_start``).

While the discriminator is inactive (``global_step < disc_start``) it is not run at all: the
generator term and the adaptive weight are 0 and the discriminator loss is a constant 0 without a
graph. This gives the same updates as evaluating it with a zero factor, at lower cost.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .discriminator import NLayerDiscriminator
from .lpips import build_perceptual_loss


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (torch.mean(F.relu(1.0 - logits_real)) + torch.mean(F.relu(1.0 + logits_fake)))


def vanilla_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (torch.mean(F.softplus(-logits_real)) + torch.mean(F.softplus(logits_fake)))


_D_LOSSES = {"hinge": hinge_d_loss, "vanilla": vanilla_d_loss}


def adopt_weight(weight: float, global_step: int, threshold: int = 0, value: float = 0.0) -> float:
    """``weight`` once ``global_step >= threshold``, else ``value``."""
    return weight if global_step >= threshold else value


def calculate_adaptive_weight(
    nll_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor, disc_weight: float
) -> torch.Tensor:
    """``disc_weight * clamp(||d nll/dW|| / (||d g/dW|| + 1e-4), 0, 1e4)``, detached."""
    nll_grads = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
    g_grads = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    d_weight = torch.norm(nll_grads) / (torch.norm(g_grads) + 1e-4)
    d_weight = torch.clamp(d_weight, 0.0, 1e4).detach()
    return d_weight * disc_weight


class _GANLossBase(nn.Module):
    def __init__(
        self,
        disc_start: int,
        pixelloss_weight: float,
        disc_num_layers: int,
        disc_in_channels: int,
        disc_ndf: int,
        disc_factor: float,
        disc_weight: float,
        perceptual_weight: float,
        disc_conditional: bool,
        disc_loss: str,
        lpips_weights: str | Path | None,
        vgg_weights: str | Path | None,
    ):
        super().__init__()
        if disc_loss not in _D_LOSSES:
            raise ValueError(f"disc_loss must be one of {sorted(_D_LOSSES)}, got {disc_loss!r}")
        if disc_conditional:
            raise ValueError("disc_conditional=True is not supported (the published configs use false)")
        self.disc_start = int(disc_start)
        self.pixel_weight = float(pixelloss_weight)
        self.perceptual_weight = float(perceptual_weight)
        self.perceptual_loss = build_perceptual_loss(lpips_weights, vgg_weights) if self.perceptual_weight > 0 else None
        self.discriminator = NLayerDiscriminator(input_nc=disc_in_channels, ndf=disc_ndf, n_layers=disc_num_layers)
        self.disc_loss = _D_LOSSES[disc_loss]
        self.disc_factor = float(disc_factor)
        self.discriminator_weight = float(disc_weight)

    def rec_loss(self, inputs: torch.Tensor, reconstructions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel ``pixel_weight*|x - x_rec| + perceptual_weight*LPIPS`` and the mean perceptual term."""
        rec = self.pixel_weight * torch.abs(inputs.contiguous() - reconstructions.contiguous())
        if self.perceptual_loss is not None:
            p_loss = self.perceptual_loss(inputs.contiguous(), reconstructions.contiguous())
            rec = rec + self.perceptual_weight * p_loss
            return rec, p_loss.mean()
        return rec, rec.new_zeros(())

    def generator_term(
        self, nll_loss: torch.Tensor, reconstructions: torch.Tensor, global_step: int, last_layer: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """``(g_loss, d_weight, disc_factor)``; all zero while the discriminator is inactive."""
        disc_factor = adopt_weight(self.disc_factor, global_step, threshold=self.disc_start)
        zero = nll_loss.new_zeros(())
        if disc_factor <= 0.0:
            return zero, zero, disc_factor
        logits_fake = self.discriminator(reconstructions.contiguous())
        g_loss = -torch.mean(logits_fake)
        if last_layer is not None and torch.is_grad_enabled() and nll_loss.requires_grad and g_loss.requires_grad:
            d_weight = calculate_adaptive_weight(nll_loss, g_loss, last_layer, self.discriminator_weight)
        else:
            d_weight = zero
        return g_loss, d_weight, disc_factor

    def discriminator_step(
        self, inputs: torch.Tensor, reconstructions: torch.Tensor, global_step: int, split: str
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        disc_factor = adopt_weight(self.disc_factor, global_step, threshold=self.disc_start)
        if disc_factor <= 0.0:
            zero = inputs.new_zeros(())
            return zero, {f"{split}/disc_loss": zero, f"{split}/logits_real": zero, f"{split}/logits_fake": zero}
        logits_real = self.discriminator(inputs.contiguous().detach())
        logits_fake = self.discriminator(reconstructions.contiguous().detach())
        d_loss = disc_factor * self.disc_loss(logits_real, logits_fake)
        log = {
            f"{split}/disc_loss": d_loss.detach(),
            f"{split}/logits_real": logits_real.detach().mean(),
            f"{split}/logits_fake": logits_fake.detach().mean(),
        }
        return d_loss, log


class VQLPIPSWithDiscriminator(_GANLossBase):
    """VQ loss: ``mean(rec) + d_weight*f*g + codebook_weight*codebook_loss`` (taming's form)."""

    def __init__(
        self,
        disc_start: int,
        codebook_weight: float = 1.0,
        pixelloss_weight: float = 1.0,
        disc_num_layers: int = 3,
        disc_in_channels: int = 3,
        disc_factor: float = 1.0,
        disc_weight: float = 1.0,
        perceptual_weight: float = 1.0,
        disc_conditional: bool = False,
        disc_ndf: int = 64,
        disc_loss: str = "hinge",
        lpips_weights: str | Path | None = None,
        vgg_weights: str | Path | None = None,
    ):
        super().__init__(
            disc_start, pixelloss_weight, disc_num_layers, disc_in_channels, disc_ndf, disc_factor, disc_weight,
            perceptual_weight, disc_conditional, disc_loss, lpips_weights, vgg_weights,
        )
        self.codebook_weight = float(codebook_weight)

    def forward(
        self,
        codebook_loss: torch.Tensor,
        inputs: torch.Tensor,
        reconstructions: torch.Tensor,
        optimizer_idx: int,
        global_step: int,
        last_layer: torch.Tensor | None = None,
        split: str = "train",
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if optimizer_idx == 1:
            return self.discriminator_step(inputs, reconstructions, global_step, split)
        rec, p_loss = self.rec_loss(inputs, reconstructions)
        nll_loss = torch.mean(rec)
        g_loss, d_weight, disc_factor = self.generator_term(nll_loss, reconstructions, global_step, last_layer)
        codebook_loss = codebook_loss.mean()
        loss = nll_loss + d_weight * disc_factor * g_loss + self.codebook_weight * codebook_loss
        log = {
            f"{split}/total_loss": loss.detach(),
            f"{split}/codebook_loss": codebook_loss.detach(),
            f"{split}/nll_loss": nll_loss.detach(),
            f"{split}/rec_loss": rec.detach().mean(),
            f"{split}/p_loss": p_loss.detach(),
            f"{split}/d_weight": torch.as_tensor(d_weight).detach(),
            f"{split}/disc_factor": torch.tensor(float(disc_factor)),
            f"{split}/g_loss": g_loss.detach(),
        }
        return loss, log


class LPIPSWithDiscriminator(_GANLossBase):
    """KL loss: ``sum(nll)/B + kl_weight*sum(KL)/B + d_weight*f*g`` with ``nll = rec/exp(logvar) + logvar``.

    ``logvar`` is a scalar parameter initialised to ``logvar_init`` that no optimiser updates
    (requires_grad False), as in the published training.
    """

    def __init__(
        self,
        disc_start: int,
        logvar_init: float = 0.0,
        kl_weight: float = 1.0,
        pixelloss_weight: float = 1.0,
        disc_num_layers: int = 3,
        disc_in_channels: int = 3,
        disc_factor: float = 1.0,
        disc_weight: float = 1.0,
        perceptual_weight: float = 1.0,
        disc_conditional: bool = False,
        disc_ndf: int = 64,
        disc_loss: str = "hinge",
        lpips_weights: str | Path | None = None,
        vgg_weights: str | Path | None = None,
    ):
        super().__init__(
            disc_start, pixelloss_weight, disc_num_layers, disc_in_channels, disc_ndf, disc_factor, disc_weight,
            perceptual_weight, disc_conditional, disc_loss, lpips_weights, vgg_weights,
        )
        self.kl_weight = float(kl_weight)
        self.logvar = nn.Parameter(torch.full((), float(logvar_init)), requires_grad=False)

    def forward(
        self,
        posterior,
        inputs: torch.Tensor,
        reconstructions: torch.Tensor,
        optimizer_idx: int,
        global_step: int,
        last_layer: torch.Tensor | None = None,
        split: str = "train",
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if optimizer_idx == 1:
            return self.discriminator_step(inputs, reconstructions, global_step, split)
        batch = inputs.shape[0]
        rec, p_loss = self.rec_loss(inputs, reconstructions)
        nll = rec / torch.exp(self.logvar) + self.logvar
        nll_loss = torch.sum(nll) / batch
        kl_loss = torch.sum(posterior.kl()) / batch
        g_loss, d_weight, disc_factor = self.generator_term(nll_loss, reconstructions, global_step, last_layer)
        loss = nll_loss + self.kl_weight * kl_loss + d_weight * disc_factor * g_loss
        log = {
            f"{split}/total_loss": loss.detach(),
            f"{split}/logvar": self.logvar.detach().clone(),
            f"{split}/kl_loss": kl_loss.detach(),
            f"{split}/nll_loss": nll_loss.detach(),
            f"{split}/rec_loss": rec.detach().mean(),
            f"{split}/p_loss": p_loss.detach(),
            f"{split}/d_weight": torch.as_tensor(d_weight).detach(),
            f"{split}/disc_factor": torch.tensor(float(disc_factor)),
            f"{split}/g_loss": g_loss.detach(),
        }
        return loss, log
