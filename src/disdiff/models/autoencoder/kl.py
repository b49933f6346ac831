"""KL-regularised autoencoder (spec section 2.3)."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from .encoder_decoder import Decoder, Encoder, FirstStageContract
from .vq import _plain_ddconfig


class DiagonalGaussianDistribution:
    """Diagonal Gaussian from moments (B, 2C, H, W) = [mean, logvar]; logvar clamped to [-30, 20]."""

    def __init__(self, parameters: torch.Tensor, deterministic: bool = False):
        self.parameters = parameters
        self.mean, logvar = torch.chunk(parameters, 2, dim=1)
        self.logvar = torch.clamp(logvar, -30.0, 20.0)
        self.deterministic = deterministic
        if deterministic:
            self.logvar = torch.zeros_like(self.mean)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.deterministic:
            return self.mean
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self, other: "DiagonalGaussianDistribution | None" = None) -> torch.Tensor:
        """Per-sample KL divergence, summed over (C, H, W); to N(0, I) when ``other`` is None."""
        if self.deterministic:
            return torch.zeros(self.mean.shape[0], device=self.mean.device, dtype=self.mean.dtype)
        if other is None:
            return 0.5 * torch.sum(self.mean.pow(2) + self.var - 1.0 - self.logvar, dim=[1, 2, 3])
        return 0.5 * torch.sum(
            (self.mean - other.mean).pow(2) / other.var + self.var / other.var - 1.0 - self.logvar + other.logvar,
            dim=[1, 2, 3],
        )


class AutoencoderKL(FirstStageContract, nn.Module):
    """encoder (2*z_channels out) -> quant_conv -> posterior -> sample -> post_quant_conv -> decoder."""

    def __init__(self, ddconfig: Mapping[str, Any], embed_dim: int):
        super().__init__()
        ddconfig = _plain_ddconfig(ddconfig)
        if not ddconfig.get("double_z", False):
            raise ValueError("AutoencoderKL needs ddconfig.double_z = true (the encoder outputs mean and logvar)")
        self.ddconfig = ddconfig
        self.embed_dim = int(embed_dim)
        z_channels = int(ddconfig["z_channels"])
        self.encoder = Encoder(**ddconfig)
        self.decoder = Decoder(**ddconfig)
        self.quant_conv = nn.Conv2d(2 * z_channels, 2 * self.embed_dim, kernel_size=1)
        self.post_quant_conv = nn.Conv2d(self.embed_dim, z_channels, kernel_size=1)

    def encode(self, x: torch.Tensor) -> DiagonalGaussianDistribution:
        return DiagonalGaussianDistribution(self.quant_conv(self.encoder(x)))

    def encode_to_latent(self, x: torch.Tensor) -> torch.Tensor:
        """A posterior sample ``mean + std * eps`` (what stages 2/3 diffuse)."""
        return self.encode(x).sample()

    def decode_latent(self, z: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        """Decode a latent; ``quantize`` is accepted for interface compatibility and ignored."""
        return self.decoder(self.post_quant_conv(z))

    def forward(self, x: torch.Tensor, sample_posterior: bool = True) -> tuple[torch.Tensor, DiagonalGaussianDistribution]:
        """``(reconstruction, posterior)``."""
        posterior = self.encode(x)
        z = posterior.sample() if sample_posterior else posterior.mode()
        return self.decode_latent(z), posterior
