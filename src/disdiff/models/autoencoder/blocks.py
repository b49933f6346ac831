"""Building blocks of the stage-1 convolutional encoder/decoder (spec section 2.1).

GroupNorm (eps 1e-6, affine) + swish residual blocks, a stride-2 downsampling convolution that
pads only on the right and bottom, nearest-neighbour upsampling followed by a 3x3 convolution, and
a single-head full self-attention block with 1x1 projections.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def normalize(channels: int, num_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with ``num_groups`` groups, eps 1e-6, affine."""
    if channels % num_groups != 0:
        raise ValueError(
            f"GroupNorm: {channels} channels are not divisible into {num_groups} groups; "
            "choose num_groups dividing every channel count (ch * ch_mult)"
        )
    return nn.GroupNorm(num_groups=num_groups, num_channels=channels, eps=1e-6, affine=True)


def swish(x: torch.Tensor) -> torch.Tensor:
    return F.silu(x)


class ResnetBlock(nn.Module):
    """GN -> swish -> conv3x3 -> GN -> swish -> dropout -> conv3x3, plus a (1x1 conv) shortcut."""

    def __init__(self, in_channels: int, out_channels: int | None = None, dropout: float = 0.0, num_groups: int = 32):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.norm1 = normalize(in_channels, num_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.norm2 = normalize(out_channels, num_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut: nn.Module = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        else:
            self.nin_shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        return self.nin_shortcut(x) + h


class Downsample(nn.Module):
    """Zero-pad right/bottom by one pixel, then a 3x3 stride-2 convolution without padding."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample(nn.Module):
    """Nearest-neighbour x2 upsampling followed by a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class AttnBlock(nn.Module):
    """Single-head full self-attention over all spatial positions, residual, 1x1 q/k/v/proj."""

    def __init__(self, channels: int, num_groups: int = 32):
        super().__init__()
        self.norm = normalize(channels, num_groups)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        hn = self.norm(x)
        q = self.q(hn).reshape(b, c, h * w).transpose(1, 2)  # (B, HW, C)
        k = self.k(hn).reshape(b, c, h * w)  # (B, C, HW)
        v = self.v(hn).reshape(b, c, h * w)  # (B, C, HW)
        weights = torch.softmax(torch.bmm(q, k) * (c ** -0.5), dim=2)  # (B, HW_query, HW_key)
        out = torch.bmm(v, weights.transpose(1, 2)).reshape(b, c, h, w)
        return x + self.proj_out(out)
