"""Convolutional encoder and decoder shared by the VQ and KL autoencoders (spec section 2.1).

Both classes take the same ``ddconfig`` keyword set (``ch, out_ch, ch_mult, num_res_blocks,
attn_resolutions, dropout, in_channels, resolution, z_channels, double_z, num_groups``); each
ignores the keys it does not use, so one dict can build both.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .blocks import AttnBlock, Downsample, ResnetBlock, Upsample, normalize, swish


class _Level(nn.Module):
    """One resolution level: residual blocks (each optionally followed by attention) and a resampler."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()
        self.resample: nn.Module = nn.Identity()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn) > 0:
                h = self.attn[i](h)
        return self.resample(h)


class _Middle(nn.Module):
    def __init__(self, channels: int, dropout: float, num_groups: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout=dropout, num_groups=num_groups)
        self.attn_1 = AttnBlock(channels, num_groups=num_groups)
        self.block_2 = ResnetBlock(channels, channels, dropout=dropout, num_groups=num_groups)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


def _check_common(ch: int, ch_mult: Sequence[int], resolution: int) -> None:
    if len(ch_mult) < 1:
        raise ValueError("ch_mult must have at least one entry")
    factor = 2 ** (len(ch_mult) - 1)
    if resolution % factor != 0:
        raise ValueError(f"resolution {resolution} is not divisible by the downsampling factor {factor}")


class Encoder(nn.Module):
    """conv_in -> levels of residual blocks with downsampling -> middle (res, attn, res) -> GN, swish, conv_out."""

    def __init__(
        self,
        *,
        ch: int = 32,
        ch_mult: Sequence[int] = (1, 2, 4),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (),
        dropout: float = 0.0,
        in_channels: int = 3,
        resolution: int = 64,
        z_channels: int = 3,
        double_z: bool = False,
        num_groups: int = 32,
        **ignored,
    ):
        super().__init__()
        ch_mult = tuple(ch_mult)
        _check_common(ch, ch_mult, resolution)
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        self.conv_in = nn.Conv2d(in_channels, ch, kernel_size=3, stride=1, padding=1)

        curr_res = resolution
        in_mult = (1,) + ch_mult
        self.down = nn.ModuleList()
        block_in = ch
        for i_level in range(self.num_resolutions):
            level = _Level()
            block_in = ch * in_mult[i_level]
            block_out = ch * ch_mult[i_level]
            for _ in range(num_res_blocks):
                level.block.append(ResnetBlock(block_in, block_out, dropout=dropout, num_groups=num_groups))
                block_in = block_out
                if curr_res in attn_resolutions:
                    level.attn.append(AttnBlock(block_in, num_groups=num_groups))
            if i_level != self.num_resolutions - 1:
                level.resample = Downsample(block_in)
                curr_res //= 2
            self.down.append(level)

        self.mid = _Middle(block_in, dropout, num_groups)
        self.norm_out = normalize(block_in, num_groups)
        self.conv_out = nn.Conv2d(block_in, 2 * z_channels if double_z else z_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    """conv_in -> middle (res, attn, res) -> levels of num_res_blocks+1 residual blocks with upsampling -> GN, swish, conv_out.

    There is no output nonlinearity (no tanh).
    """

    def __init__(
        self,
        *,
        ch: int = 32,
        out_ch: int = 3,
        ch_mult: Sequence[int] = (1, 2, 4),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (),
        dropout: float = 0.0,
        resolution: int = 64,
        z_channels: int = 3,
        num_groups: int = 32,
        **ignored,
    ):
        super().__init__()
        ch_mult = tuple(ch_mult)
        _check_common(ch, ch_mult, resolution)
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        block_in = ch * ch_mult[-1]
        curr_res = resolution // 2 ** (self.num_resolutions - 1)
        self.z_channels = z_channels
        self.conv_in = nn.Conv2d(z_channels, block_in, kernel_size=3, stride=1, padding=1)
        self.mid = _Middle(block_in, dropout, num_groups)

        # Stored in forward order (lowest resolution first).
        self.up = nn.ModuleList()
        for i_level in reversed(range(self.num_resolutions)):
            level = _Level()
            block_out = ch * ch_mult[i_level]
            for _ in range(num_res_blocks + 1):
                level.block.append(ResnetBlock(block_in, block_out, dropout=dropout, num_groups=num_groups))
                block_in = block_out
                if curr_res in attn_resolutions:
                    level.attn.append(AttnBlock(block_in, num_groups=num_groups))
            if i_level != 0:
                level.resample = Upsample(block_in)
                curr_res *= 2
            self.up.append(level)

        self.norm_out = normalize(block_in, num_groups)
        self.conv_out = nn.Conv2d(block_in, out_ch, kernel_size=3, stride=1, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in self.up:
            h = level(h)
        return self.conv_out(swish(self.norm_out(h)))


class FirstStageContract:
    """The part of the first-stage contract (docs/INTERFACES.md) that VQ and KL models share.

    Mixed into ``VQModel`` and ``AutoencoderKL``, which set ``embed_dim``, ``ddconfig`` and ``decoder``.
    """

    embed_dim: int
    ddconfig: dict
    decoder: Decoder

    @property
    def latent_channels(self) -> int:
        return self.embed_dim

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ddconfig.get("ch_mult", (1, 2, 4))) - 1)

    @property
    def last_layer(self) -> torch.Tensor:
        """The decoder's final conv weight (the adaptive GAN weight's reference layer)."""
        return self.decoder.conv_out.weight

