"""ADM-style UNet (Dhariwal & Nichol) as used by the stage-2 latent diffusion model (spec 3.1).

The network is split into two halves so that stage 3 can reuse the decoder half:

* the **encoder half** — ``time_embed`` and ``input_blocks`` — is run by :meth:`UNetModel.encode`,
  which returns the time embedding and every input-block output ``hs`` (``hs[-1]`` is h0);
* the **decoder half** — ``middle_block``, ``output_blocks`` and ``out`` — is built by
  :func:`build_decoder_half` (with a pluggable res-block factory) and run by
  :func:`run_decoder_half`, which consumes the skips ``hs`` without mutating them.

The blocks (residual, attention, up/down-sampling, time embedding) are in
:mod:`disdiff.models.unet_blocks`.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from disdiff.models.unet_blocks import (
    AttentionBlock,
    Downsample,
    EmbedSequential,
    ResBlock,
    Upsample,
    normalization,
    timestep_embedding,
    zero_module,
)

__all__ = ["encoder_skip_channels", "build_decoder_half", "run_decoder_half", "UNetModel"]


# ---------------------------------------------------------------------------------------------
# the two halves
# ---------------------------------------------------------------------------------------------
def encoder_skip_channels(model_channels: int, channel_mult: Sequence[int], num_res_blocks: int) -> list[int]:
    """Channel count of every input-block output (the skips ``hs``), in order.

    For (64, [1,2,4,4], 2): [64, 64, 64, 64, 128, 128, 128, 256, 256, 256, 256, 256].
    """
    chans = [model_channels]
    ch = model_channels
    for level, mult in enumerate(channel_mult):
        for _ in range(num_res_blocks):
            ch = mult * model_channels
            chans.append(ch)
        if level != len(channel_mult) - 1:
            chans.append(ch)
    return chans


MakeResBlock = Callable[[int, int, bool], nn.Module]


def build_decoder_half(
    model_channels: int,
    channel_mult: Sequence[int],
    num_res_blocks: int,
    attention_resolutions: Iterable[int],
    num_heads: int,
    dropout: float,
    time_embed_dim: int,
    out_channels: int,
    num_groups: int = 32,
    use_scale_shift_norm: bool = True,
    resblock_updown: bool = True,
    make_resblock: MakeResBlock | None = None,
    num_head_channels: int = -1,
    conv_resample: bool = True,
) -> tuple[EmbedSequential, nn.ModuleList, nn.Sequential]:
    """Build ``(middle_block, output_blocks, out)`` of the UNet described by the arguments.

    ``attention_resolutions`` are downsampling rates (1 = full resolution). ``make_resblock(ch,
    out_ch, up)`` builds each residual block — the two in the middle block (``up=False``), the
    first ``num_res_blocks+1`` blocks of each level (``up=False``) and, with ``resblock_updown``,
    the upsampling block ending each level but the last (``up=True``). By default it builds a
    :class:`ResBlock` on ``time_embed_dim``; stage 3 passes a factory of its conditioned blocks.
    """
    attn = {int(a) for a in attention_resolutions}
    if make_resblock is None:

        def make_resblock(ch: int, out_ch: int, up: bool) -> nn.Module:
            return ResBlock(
                ch, time_embed_dim, dropout, out_channels=out_ch,
                use_scale_shift_norm=use_scale_shift_norm, up=up, num_groups=num_groups,
            )

    def make_attn(ch: int) -> AttentionBlock:
        return AttentionBlock(ch, num_heads=num_heads, num_head_channels=num_head_channels, num_groups=num_groups)

    skip_chans = encoder_skip_channels(model_channels, channel_mult, num_res_blocks)
    ch = skip_chans[-1]
    ds = 2 ** (len(channel_mult) - 1)

    middle_block = EmbedSequential(make_resblock(ch, ch, False), make_attn(ch), make_resblock(ch, ch, False))

    output_blocks = nn.ModuleList()
    for level, mult in list(enumerate(channel_mult))[::-1]:
        for i in range(num_res_blocks + 1):
            ich = skip_chans.pop()
            layers: list[nn.Module] = [make_resblock(ch + ich, model_channels * mult, False)]
            ch = model_channels * mult
            if ds in attn:
                layers.append(make_attn(ch))
            if level and i == num_res_blocks:
                layers.append(make_resblock(ch, ch, True) if resblock_updown else Upsample(ch, conv_resample))
                ds //= 2
            output_blocks.append(EmbedSequential(*layers))

    out = nn.Sequential(
        normalization(ch, num_groups), nn.SiLU(), zero_module(nn.Conv2d(ch, out_channels, 3, padding=1))
    )
    return middle_block, output_blocks, out


def run_decoder_half(
    middle: nn.Module,
    output_blocks: Sequence[nn.Module],
    out: nn.Module,
    hs: Sequence[torch.Tensor],
    emb: torch.Tensor,
    cond: torch.Tensor | None = None,
) -> torch.Tensor:
    """``out(output_blocks(middle(h0), skips))`` with h0 = ``hs[-1]``; ``hs`` is not modified.

    Output block j concatenates ``hs[-1-j]`` to its input along channels before running.
    """
    if len(hs) != len(output_blocks):
        raise ValueError(f"expected {len(output_blocks)} skip tensors, got {len(hs)}")
    h = middle(hs[-1], emb, cond)
    for j, block in enumerate(output_blocks):
        h = torch.cat([h, hs[-1 - j]], dim=1)
        h = block(h, emb, cond)
    return out(h)


# ---------------------------------------------------------------------------------------------
# full model
# ---------------------------------------------------------------------------------------------
class UNetModel(nn.Module):
    """Unconditional ADM UNet predicting ε from ``(x_t, t)``.

    ``attention_resolutions`` are **downsampling rates** (as in the original configs): attention is
    used at every level whose rate ``ds = 2^level`` is in the set, e.g. [1, 2, 4] on a 16² latent
    means attention at 16², 8² and 4². ``image_size`` is informational (the network is fully
    convolutional). ``num_groups`` is the GroupNorm group count (32 in the published model).
    """

    def __init__(
        self,
        image_size: int = 16,
        in_channels: int = 3,
        model_channels: int = 64,
        out_channels: int = 3,
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (1, 2, 4),
        channel_mult: Sequence[int] = (1, 2, 4, 4),
        num_heads: int = 8,
        dropout: float = 0.0,
        use_scale_shift_norm: bool = True,
        resblock_updown: bool = True,
        num_groups: int = 32,
        num_head_channels: int = -1,
        conv_resample: bool = True,
    ) -> None:
        super().__init__()
        self.image_size = image_size
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.num_res_blocks = num_res_blocks
        self.attention_resolutions = tuple(int(a) for a in attention_resolutions)
        self.channel_mult = tuple(int(m) for m in channel_mult)
        self.num_heads = num_heads
        self.num_head_channels = num_head_channels
        self.dropout = dropout
        self.use_scale_shift_norm = use_scale_shift_norm
        self.resblock_updown = resblock_updown
        self.num_groups = num_groups
        self.conv_resample = conv_resample
        self.time_embed_dim = ted = model_channels * 4
        attn = set(self.attention_resolutions)

        self.time_embed = nn.Sequential(nn.Linear(model_channels, ted), nn.SiLU(), nn.Linear(ted, ted))

        def make_attn(ch: int) -> AttentionBlock:
            return AttentionBlock(ch, num_heads=num_heads, num_head_channels=num_head_channels, num_groups=num_groups)

        def make_res(ch: int, out_ch: int, down: bool = False) -> ResBlock:
            return ResBlock(
                ch, ted, dropout, out_channels=out_ch,
                use_scale_shift_norm=use_scale_shift_norm, down=down, num_groups=num_groups,
            )

        self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(in_channels, model_channels, 3, padding=1))])
        ch, ds = model_channels, 1
        for level, mult in enumerate(self.channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [make_res(ch, mult * model_channels)]
                ch = mult * model_channels
                if ds in attn:
                    layers.append(make_attn(ch))
                self.input_blocks.append(EmbedSequential(*layers))
            if level != len(self.channel_mult) - 1:
                down = make_res(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample)
                self.input_blocks.append(EmbedSequential(down))
                ds *= 2

        self.middle_block, self.output_blocks, self.out = build_decoder_half(**self.decoder_half_kwargs())

    def decoder_half_kwargs(self) -> dict:
        """Keyword arguments of :func:`build_decoder_half` that rebuild this model's decoder half."""
        return dict(
            model_channels=self.model_channels,
            channel_mult=self.channel_mult,
            num_res_blocks=self.num_res_blocks,
            attention_resolutions=self.attention_resolutions,
            num_heads=self.num_heads,
            dropout=self.dropout,
            time_embed_dim=self.time_embed_dim,
            out_channels=self.out_channels,
            num_groups=self.num_groups,
            use_scale_shift_norm=self.use_scale_shift_norm,
            resblock_updown=self.resblock_updown,
            num_head_channels=self.num_head_channels,
            conv_resample=self.conv_resample,
        )

    @property
    def skip_channels(self) -> list[int]:
        return encoder_skip_channels(self.model_channels, self.channel_mult, self.num_res_blocks)

    def embed_time(self, t: torch.Tensor) -> torch.Tensor:
        """``time_embed(sinusoid(t))``, shape ``(B, 4·model_channels)``."""
        sinusoid = timestep_embedding(t, self.model_channels)
        return self.time_embed(sinusoid.to(self.time_embed[0].weight.dtype))

    def encode(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the encoder half: returns ``(emb, hs)``, hs = every input-block output (hs[-1] = h0)."""
        emb = self.embed_time(t)
        hs: list[torch.Tensor] = []
        h = x
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        return emb, hs

    def decode(self, hs: Sequence[torch.Tensor], emb: torch.Tensor) -> torch.Tensor:
        """Run the decoder half on the skips ``hs`` (not modified) and the embedding ``emb``."""
        return run_decoder_half(self.middle_block, self.output_blocks, self.out, hs, emb)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb, hs = self.encode(x, t)
        return self.decode(hs, emb)
