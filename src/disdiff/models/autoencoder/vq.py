"""VQ autoencoder (spec section 2.2): encoder -> quant_conv -> VectorQuantizer -> post_quant_conv -> decoder."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from .encoder_decoder import Decoder, Encoder, FirstStageContract
from .quantizer import VectorQuantizer


def _plain_ddconfig(ddconfig: Mapping[str, Any]) -> dict:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(ddconfig, DictConfig):
            return dict(OmegaConf.to_container(ddconfig, resolve=True))
    except ImportError:  # pragma: no cover
        pass
    return dict(ddconfig)


class VQModel(FirstStageContract, nn.Module):
    """Vector-quantised autoencoder.

    ``codebook_init_range`` (default None: Uniform(-1/n_embed, 1/n_embed), as published) widens
    the codebook initialisation; short CPU runs converge much faster with codes at the scale of
    the encoder output.

    The diffusion stages work in the continuous pre-quantisation space: ``encode_to_latent``
    returns ``quant_conv(encoder(x))`` and ``decode_latent`` snaps to the codebook first
    (unless ``quantize=False``).
    """

    def __init__(
        self,
        ddconfig: Mapping[str, Any],
        embed_dim: int,
        n_embed: int,
        beta: float = 0.25,
        legacy: bool = True,
        codebook_init_range: float | None = None,
    ):
        super().__init__()
        ddconfig = _plain_ddconfig(ddconfig)
        if ddconfig.get("double_z", False):
            raise ValueError("VQModel needs ddconfig.double_z = false")
        self.ddconfig = ddconfig
        self.embed_dim = int(embed_dim)
        self.n_embed = int(n_embed)
        z_channels = int(ddconfig["z_channels"])
        self.encoder = Encoder(**ddconfig)
        self.decoder = Decoder(**ddconfig)
        self.quantize = VectorQuantizer(
            self.n_embed, self.embed_dim, beta=beta, legacy=legacy, init_range=codebook_init_range
        )
        self.quant_conv = nn.Conv2d(z_channels, self.embed_dim, kernel_size=1)
        self.post_quant_conv = nn.Conv2d(self.embed_dim, z_channels, kernel_size=1)

    def encode_to_latent(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-quantisation latent ``quant_conv(encoder(x))``."""
        return self.quant_conv(self.encoder(x))

    def decode_latent(self, z: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        if quantize:
            z, _, _ = self.quantize(z)
        return self.decoder(self.post_quant_conv(z))

    # -- training ------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(z_q, codebook_loss, indices)``."""
        return self.quantize(self.encode_to_latent(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(reconstruction, codebook_loss)``."""
        z_q, codebook_loss, _ = self.encode(x)
        return self.decoder(self.post_quant_conv(z_q)), codebook_loss
