"""Building blocks of the ADM-style UNet (spec 3.1): time embedding, normalisation, residual and
attention blocks, up/down-sampling, and the marker classes that route extra inputs.

Blocks inside an :class:`EmbedSequential` receive extra inputs according to their marker class:
:class:`TimestepBlock` subclasses get ``(x, emb)``, :class:`ConditionedBlock` subclasses get
``(x, emb, cond)``, everything else gets ``x``. The network that assembles them is
:mod:`disdiff.models.unet`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "timestep_embedding",
    "norm_dtype",
    "GroupNorm32",
    "normalization",
    "zero_module",
    "TimestepBlock",
    "ConditionedBlock",
    "EmbedSequential",
    "ResBlock",
    "Upsample",
    "Downsample",
    "AttentionBlock",
    "qkv_attention_legacy",
]


# ---------------------------------------------------------------------------------------------
# small pieces
# ---------------------------------------------------------------------------------------------
def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[cos(t·f), sin(t·f)]`` (cos first) with ``f_i = exp(−ln(max_period)·i/half)``.

    ``half = dim // 2``, ``i = 0 … half−1``; an odd ``dim`` is padded with one zero column.
    ``t`` is a ``(B,)`` tensor (may be fractional); the result is float32 ``(B, dim)``.
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.reshape(-1, 1).float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def norm_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype normalisation is computed in: float32 for half-precision inputs, else the input's (e.g. float64)."""
    return torch.promote_types(x.dtype, torch.float32)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in at least float32 (half-precision inputs in float32), cast back afterwards."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.to(norm_dtype(x))).type(x.dtype)


def normalization(channels: int, num_groups: int = 32) -> GroupNorm32:
    """``GroupNorm32(num_groups, channels)`` (eps 1e-5, affine); ``num_groups`` must divide ``channels``."""
    if channels % num_groups != 0:
        raise ValueError(f"GroupNorm: num_groups={num_groups} does not divide channels={channels}")
    return GroupNorm32(num_groups, channels)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero every parameter of ``module`` in place and return it."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class TimestepBlock(nn.Module):
    """Marker: ``forward(x, emb)`` takes the (time) embedding as second argument."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class ConditionedBlock(nn.Module):
    """Marker: ``forward(x, emb, cond)`` takes the embedding and an extra condition (stage 3)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class EmbedSequential(nn.Sequential):
    """``nn.Sequential`` that routes ``emb`` / ``(emb, cond)`` to the blocks that take them."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ConditionedBlock):
                x = layer(x, emb, cond)
            elif isinstance(layer, TimestepBlock):
                x = layer(x, emb)
            else:
                x = layer(x)
        return x


class Upsample(nn.Module):
    """Nearest ×2 upsampling followed (if ``use_conv``) by a 3×3 conv."""

    def __init__(self, channels: int, use_conv: bool = True, out_channels: int | None = None) -> None:
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.conv = nn.Conv2d(channels, self.out_channels, 3, padding=1) if use_conv else None
        if not use_conv and self.out_channels != channels:
            raise ValueError("Upsample without conv cannot change the channel count")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.conv is not None else x


class Downsample(nn.Module):
    """3×3 stride-2 conv (``use_conv``) or 2×2 average pooling."""

    def __init__(self, channels: int, use_conv: bool = True, out_channels: int | None = None) -> None:
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        if use_conv:
            self.op: nn.Module = nn.Conv2d(channels, self.out_channels, 3, stride=2, padding=1)
        else:
            if self.out_channels != channels:
                raise ValueError("Downsample without conv cannot change the channel count")
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


# ---------------------------------------------------------------------------------------------
# residual block
# ---------------------------------------------------------------------------------------------
class ResBlock(TimestepBlock):
    """ADM residual block, optionally up- or down-sampling.

    ``h = conv3×3(SiLU(GN(x)))`` (with nearest-×2 / avg-pool-2 applied to both h, after GN+SiLU and
    before the conv, and x when ``up``/``down``); ``e = Linear(SiLU(emb))``; then with
    ``use_scale_shift_norm`` ``h = GN(h)·(1 + scale) + shift`` where ``(scale, shift) = chunk(e, 2)``,
    otherwise ``h = GN(h + e)``; finally ``h = zero-conv3×3(Dropout(SiLU(h)))`` and the output is
    ``skip(x) + h`` with ``skip`` the identity or a 1×1 conv.

    Subclasses (e.g. stage 3's ``ResBlockShift``) can override :meth:`modulate` to add further
    conditioning between the normalisation and the output layers.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float = 0.0,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = True,
        up: bool = False,
        down: bool = False,
        num_groups: int = 32,
    ) -> None:
        super().__init__()
        if up and down:
            raise ValueError("ResBlock cannot both upsample and downsample")
        self.channels = channels
        self.emb_channels = emb_channels
        self.out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.updown = up or down
        out = self.out_channels

        self.in_layers = nn.Sequential(
            normalization(channels, num_groups), nn.SiLU(), nn.Conv2d(channels, out, 3, padding=1)
        )
        if up:
            self.h_upd: nn.Module = Upsample(channels, use_conv=False)
            self.x_upd: nn.Module = Upsample(channels, use_conv=False)
        elif down:
            self.h_upd = Downsample(channels, use_conv=False)
            self.x_upd = Downsample(channels, use_conv=False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out if use_scale_shift_norm else out)
        )
        self.out_layers = nn.Sequential(
            normalization(out, num_groups),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            zero_module(nn.Conv2d(out, out, 3, padding=1)),
        )
        self.skip_connection = nn.Identity() if out == channels else nn.Conv2d(channels, out, 1)

    def _in(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.updown:
            in_rest, in_conv = self.in_layers[:-1], self.in_layers[-1]
            h = in_conv(self.h_upd(in_rest(x)))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        return x, h

    def modulate(self, h: torch.Tensor, emb: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the output normalisation and the embedding FiLM; returns the pre-activation h."""
        emb_out = self.emb_layers(emb).type(h.dtype)
        emb_out = emb_out.reshape(*emb_out.shape, *([1] * (h.dim() - emb_out.dim())))
        out_norm = self.out_layers[0]
        if self.use_scale_shift_norm:
            scale, shift = torch.chunk(emb_out, 2, dim=1)
            return out_norm(h) * (1 + scale) + shift
        return out_norm(h + emb_out)

    def _forward(self, x: torch.Tensor, emb: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        x, h = self._in(x)
        h = self.modulate(h, emb, cond)
        h = self.out_layers[1:](h)
        return self.skip_connection(x) + h

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self._forward(x, emb)


# ---------------------------------------------------------------------------------------------
# attention
# ---------------------------------------------------------------------------------------------
def qkv_attention_legacy(qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
    """"Legacy" ADM multi-head attention on a ``(B, 3·H·c, L)`` tensor, returning ``(B, H·c, L)``.

    The heads are split *before* q/k/v: ``qkv`` is reshaped to ``(B·H, 3c, L)`` and split into
    q, k, v of ``(B·H, c, L)``. With q and k each scaled by ``c^{−1/4}``,
    ``out = v · softmax_s(qᵀk)ᵀ``, i.e. ``out[:, :, t] = Σ_s softmax_s(q_t·k_s/√c) v[:, :, s]``.
    Implemented with ``scaled_dot_product_attention`` (scale ``1/√c``), which is the same
    computation; half-precision inputs are computed in float32 (also under autocast). The
    tensors are handed over as 4-d ``(B, H, L, c)`` with unit stride along ``c``: on CPU only that
    layout reaches the fused (flash) kernel, which never materialises the ``L×L`` weights (other
    layouts fall back to bmm + softmax, 2–4× slower on the published 16×16 level).
    """
    bs, width, length = qkv.shape
    if width % (3 * num_heads) != 0:
        raise ValueError(f"qkv width {width} is not divisible by 3·num_heads={3 * num_heads}")
    ch = width // (3 * num_heads)
    dtype = qkv.dtype
    work = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    # (B, H, 3c, L) -> (B, H, L, 3c), one copy, then q, k, v are slices with unit last stride.
    qkv = qkv.reshape(bs, num_heads, 3 * ch, length).transpose(2, 3).to(work).contiguous()
    q, k, v = qkv.split(ch, dim=3)  # (B, H, L, c)
    with torch.autocast(device_type=qkv.device.type, enabled=False):
        a = F.scaled_dot_product_attention(q, k, v, scale=1.0 / math.sqrt(ch))
    return a.to(dtype).transpose(2, 3).reshape(bs, num_heads * ch, length)


class AttentionBlock(nn.Module):
    """Spatial self-attention: ``x + proj(attn(qkv(GN(x))))`` with a zero-initialised 1×1 projection.

    ``num_heads`` heads, or ``channels // num_head_channels`` heads if ``num_head_channels > 0``.
    """

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1, num_groups: int = 32) -> None:
        super().__init__()
        self.channels = channels
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels != 0:
                raise ValueError(f"channels {channels} not divisible by num_head_channels {num_head_channels}")
            self.num_heads = channels // num_head_channels
        if channels % self.num_heads != 0:
            raise ValueError(f"channels {channels} not divisible by num_heads {self.num_heads}")
        self.norm = normalization(channels, num_groups)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        h = qkv_attention_legacy(self.qkv(self.norm(x)), self.num_heads)
        h = self.proj_out(h)
        return (x + h).reshape(b, c, *spatial)
