"""The DisDiff denoiser: a frozen pre-trained UNet plus a trainable shift decoder (spec 4.3–4.5).

For a noisy latent ``x_t``, timestep ``t`` and representation ``z = (z^0 … z^{N−1})``:

1. without gradient, once: ``emb = time_embed(t)``, the frozen encoder half gives the skips ``hs``
   (``h0 = hs[-1]``), and the frozen decoder half gives ``pred = ε_θ(x_t, t)``;
2. for every unit k: ``r_k = repre_embed(z^k)``, ``e_k = part_emb(p_k)`` with ``p_k`` row k of the
   orthogonal part embedding, ``u_k = emb + e_k``, and
   ``G_k = shift_out(shift decoder(h0, hs; time embedding u_k, condition r_k))``.

The shift decoder mirrors the UNet's decoder half with every residual block replaced by
:class:`ResBlockShift` (a second FiLM driven by ``r_k``); its output layer is zero-initialised, so
``G_k = 0`` at initialisation. The N unit passes run as **one** batched pass over ``B·N`` samples
(row ``b·N + k`` is sample b, unit k) that reuses ``emb`` and ``hs``; :meth:`shift_fields_loop` is
the per-unit reference loop.

Noise predictions: ``ε̂ = pred + coef_t · Σ_k G_k``, with ``coef = shift_coef`` in the
reconstruction loss and ``coef = ddim_coef`` (−√(1−ᾱ)) when sampling and in the disentangling loss.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch import nn

from disdiff.models.part_embedding import PartEmbedding
from disdiff.models.unet import ConditionedBlock, ResBlock, UNetModel, build_decoder_half, run_decoder_half

__all__ = ["ResBlockShift", "DisDiffDenoiser"]


class ResBlockShift(ResBlock, ConditionedBlock):
    """ADM residual block with a second FiLM from the representation embedding.

    After ``in_layers``: ``h ← GN(h)·(1 + s_u) + b_u``; ``h ← h·(1 + s_r) + b_r``;
    ``h ← zero-conv(Dropout(SiLU(h)))``; output ``skip(x) + h``, where
    ``(s_u, b_u) = chunk(emb_layers(u))`` (time + part embedding) and
    ``(s_r, b_r) = chunk(cond_emb_layers(r))`` (representation embedding), both ``SiLU → Linear``.
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
        cond_channels: int | None = None,
    ) -> None:
        super().__init__(channels, emb_channels, dropout, out_channels, use_scale_shift_norm, up, down, num_groups)
        self.cond_emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(cond_channels or emb_channels, 2 * self.out_channels))

    def modulate(self, h: torch.Tensor, emb: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = super().modulate(h, emb)
        if cond is None:
            raise ValueError("ResBlockShift needs the representation embedding (cond)")
        cond_out = self.cond_emb_layers(cond).type(h.dtype)
        cond_out = cond_out.reshape(*cond_out.shape, *([1] * (h.dim() - cond_out.dim())))
        scale, shift = torch.chunk(cond_out, 2, dim=1)
        return h * (1 + scale) + shift

    def forward(self, x: torch.Tensor, emb: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        return self._forward(x, emb, cond)


def _repeat_units(x: torch.Tensor, n: int) -> torch.Tensor:
    """``(B, …) → (B·n, …)`` with row ``b·n + k`` = ``x[b]``."""
    return x.unsqueeze(1).expand(x.shape[0], n, *x.shape[1:]).reshape(x.shape[0] * n, *x.shape[1:])


class DisDiffDenoiser(nn.Module):
    """Frozen ``unet`` + trainable shift decoder, ``repre_embed``, ``part_emb`` and ``part_latents``.

    ``forward(x_t, t, z) -> (pred, G)``: ``pred`` (B, C, H, W) without gradient, ``G`` (B, N, C, H, W)
    the per-unit fields; with ``units`` (B,) only ``G_{units[b]}`` is computed, shape (B, C, H, W).
    ``z`` is (B, N, d) or the flat (B, N·d).
    """

    def __init__(
        self,
        unet: UNetModel,
        num_units: int = 6,
        unit_dim: int = 32,
        orthogonal_part_embedding: bool = True,
        released_part_convention: bool = False,
        nonorthogonal_part_dim: int = 32,
    ) -> None:
        super().__init__()
        self.unet = unet
        for p in self.unet.parameters():
            p.requires_grad_(False)
        self.unet.eval()
        self.num_units = int(num_units)
        self.unit_dim = int(unit_dim)
        ted = int(unet.time_embed_dim)
        self.time_embed_dim = ted
        kwargs = unet.decoder_half_kwargs()
        num_groups = kwargs["num_groups"]
        use_ssn = kwargs["use_scale_shift_norm"]
        dropout = kwargs["dropout"]

        def make_resblock(ch: int, out_ch: int, up: bool) -> ResBlockShift:
            return ResBlockShift(ch, ted, dropout, out_channels=out_ch, use_scale_shift_norm=use_ssn, up=up,
                                 num_groups=num_groups, cond_channels=ted)

        self.shift_middle_block, self.shift_output_blocks, self.shift_out = build_decoder_half(
            **kwargs, make_resblock=make_resblock
        )
        self.repre_embed = nn.Linear(self.unit_dim, ted)
        part_dim = ted // 2 if orthogonal_part_embedding else int(nonorthogonal_part_dim)
        self.part_latents = PartEmbedding(self.num_units, part_dim, orthogonal=orthogonal_part_embedding,
                                          released_convention=released_part_convention)
        self.part_emb = nn.Linear(part_dim, ted)

    # -- parameters and modes -------------------------------------------------------------------
    TRAINABLE = ("shift_middle_block", "shift_output_blocks", "shift_out", "repre_embed", "part_emb", "part_latents")

    def trainable_modules(self) -> list[nn.Module]:
        return [getattr(self, name) for name in self.TRAINABLE]

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Exactly the parameters stage 3 trains here (the frozen UNet's are excluded)."""
        for module in self.trainable_modules():
            yield from module.parameters()

    def train(self, mode: bool = True) -> "DisDiffDenoiser":
        super().train(mode)
        self.unet.eval()  # the pre-trained UNet never leaves eval mode
        return self

    # -- pieces ---------------------------------------------------------------------------------
    def _units(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() == 2:
            z = z.reshape(z.shape[0], self.num_units, -1)
        if z.dim() != 3 or z.shape[1] != self.num_units or z.shape[2] != self.unit_dim:
            raise ValueError(f"expected z of shape (B, {self.num_units}, {self.unit_dim}), got {tuple(z.shape)}")
        return z

    @torch.no_grad()
    def frozen_pass(self, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """``(emb, hs, pred)`` of the frozen UNet, without gradient."""
        emb, hs = self.unet.encode(x_t, t)
        pred = self.unet.decode(hs, emb)
        return emb, hs, pred

    def part_embeddings(self) -> torch.Tensor:
        """``e = part_emb(p)``: (N, time_embed_dim)."""
        return self.part_emb(self.part_latents())

    def _shift(self, hs: Sequence[torch.Tensor], emb: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return run_decoder_half(self.shift_middle_block, self.shift_output_blocks, self.shift_out, hs, emb, cond)

    def shift_fields(
        self, emb: torch.Tensor, hs: Sequence[torch.Tensor], z: torch.Tensor, units: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The fields ``G``: (B, N, C, H, W) in one pass over B·N samples, or (B, C, H, W) for ``units``."""
        z = self._units(z)
        B, N = z.shape[0], self.num_units
        e = self.part_embeddings()  # (N, E)
        if units is not None:
            units = units.to(device=z.device, dtype=torch.long).reshape(B)
            u = emb + e[units]
            r = self.repre_embed(z[torch.arange(B, device=z.device), units])
            return self._shift(hs, u, r)
        u = (emb[:, None, :] + e[None, :, :]).reshape(B * N, -1)
        r = self.repre_embed(z.reshape(B * N, self.unit_dim))
        hs_rep = [_repeat_units(h, N) for h in hs]
        g = self._shift(hs_rep, u, r)
        return g.reshape(B, N, *g.shape[1:])

    def shift_fields_loop(self, emb: torch.Tensor, hs: Sequence[torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        """Reference implementation of :meth:`shift_fields`: one decoder pass per unit."""
        z = self._units(z)
        e = self.part_embeddings()
        fields = [self._shift(hs, emb + e[k], self.repre_embed(z[:, k])) for k in range(self.num_units)]
        return torch.stack(fields, dim=1)

    # -- full passes ----------------------------------------------------------------------------
    def forward(
        self, x_t: torch.Tensor, t: torch.Tensor, z: torch.Tensor, units: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        emb, hs, pred = self.frozen_pass(x_t, t)
        return pred, self.shift_fields(emb, hs, z, units)

    def eps(
        self, x_t: torch.Tensor, t: torch.Tensor, z: torch.Tensor, coef: torch.Tensor, units: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``pred + coef·Σ_k G_k`` (or ``pred + coef·G_{units}``); ``coef`` broadcasts as (B, 1, 1, 1)."""
        pred, g = self(x_t, t, z, units)
        field = g if units is not None else g.sum(dim=1)
        return pred + coef.to(field) * field
