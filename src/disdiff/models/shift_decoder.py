"""The DisDiff denoiser: a frozen pre-trained UNet plus a trainable shift decoder (spec 4.3–4.5).

For a noisy latent ``x_t``, timestep ``t`` and representation ``z = (z^0 … z^{N−1})``:

1. without gradient, once: ``emb = time_embed(t)``, the frozen encoder half gives the skips ``hs``
   (``h0 = hs[-1]``), and the frozen decoder half gives ``pred = ε_θ(x_t, t)``;
2. for every unit k: ``r_k = repre_embed(z^k)``, ``e_k = part_emb(p_k)`` with ``p_k`` row k of the
   orthogonal part embedding, ``u_k = emb + e_k``, and
   ``G_k = shift_out(shift decoder(h0, hs; time embedding u_k, condition r_k))``.

The shift decoder mirrors the UNet's decoder half with every residual block replaced by
:class:`ResBlockShift` (a second FiLM driven by ``r_k``); its output layer is zero-initialised, so
``G_k = 0`` at initialisation.

How the N unit passes run (same mathematics, different speed; :meth:`shift_fields_loop` is the
plain per-unit reference):

* ``unit_pass``: ``"batched"`` runs **one** pass over ``B·N`` rows (row ``b·N + k`` is sample b,
  unit k); ``"looped"`` runs N passes over ``B`` rows; ``"auto"`` (default) picks by device and
  size, see :meth:`DisDiffDenoiser.resolve_unit_pass`.
* unit-independent work is done once per forward, not N times (``reuse_skip_terms``, on by
  default): the first res block of every decoder block sees ``cat([h_k, s])`` where the skip ``s``
  (a frozen encoder output) is the same for every unit. GroupNorm, SiLU and the convolutions act
  on channel groups independently and linearly, so the contribution of the skip channels to the
  block's input convolution and to its 1×1 skip connection is computed once per sample and added
  to every unit's part (only the skip channels sharing a GroupNorm group with ``h_k`` stay per
  unit). In the middle block the whole input (h0) is shared.

Noise predictions: ``ε̂ = pred + coef_t · Σ_k G_k``, with ``coef = shift_coef`` in the
reconstruction loss and ``coef = ddim_coef`` (−√(1−ᾱ)) when sampling and in the disentangling loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from disdiff.models.part_embedding import PartEmbedding
from disdiff.models.unet import UNetModel, build_decoder_half, run_decoder_half
from disdiff.models.unet_blocks import ConditionedBlock, ResBlock, TimestepBlock, norm_dtype
from disdiff.models.unit_embedding import unit_embedding

__all__ = ["ResBlockShift", "DisDiffDenoiser", "SharedInput", "UNIT_PASSES", "choose_unit_pass"]

UNIT_PASSES = ("auto", "batched", "looped")

#: ``unit_pass="auto"`` on CPU batches the N unit passes while B·N·h·w (rows × latent pixels of one
#: batched shift-decoder pass) is at most this, and loops over the units above it. Measured on one
#: core (published 16×16 shift decoder, N = 6, fused attention, shared skip terms; forward +
#: backward): batched is ~1.2× faster at B = 8, 1.0–1.05× at B = 32, even at B = 64 (= this
#: limit) and ~1.2× slower at B = 128, where the B·N working set makes it memory-bound; the small
#: 8×8 model's shift decoder gains ~1.2× at B = 32, and sampling (forward only, published, B = 4)
#: ~1.3×. Whole training steps at B = 32 are equal within noise (benchmarks/README.md).
AUTO_BATCHED_MAX_ROWS_PIXELS = 98304


def choose_unit_pass(unit_pass: str, batch_size: int, num_units: int, latent_pixels: int, device: torch.device | str) -> str:
    """``"batched"`` or ``"looped"`` for a requested ``unit_pass`` (see :data:`UNIT_PASSES`).

    ``"auto"``: batched on accelerators (one large launch beats N small ones); on CPU batched only
    while ``batch_size · num_units · latent_pixels <= AUTO_BATCHED_MAX_ROWS_PIXELS`` (small
    passes are dominated by per-operator overhead, large ones by memory traffic, which the B·N
    working set makes worse).
    """
    if unit_pass not in UNIT_PASSES:
        raise ValueError(f"unit_pass must be one of {UNIT_PASSES}, got {unit_pass!r}")
    if unit_pass != "auto":
        return unit_pass
    if torch.device(device).type != "cpu":
        return "batched"
    return "batched" if batch_size * num_units * latent_pixels <= AUTO_BATCHED_MAX_ROWS_PIXELS else "looped"


def _repeat_units(x: torch.Tensor, n: int) -> torch.Tensor:
    """``(B, …) → (B·n, …)`` with row ``b·n + k`` = ``x[b]``."""
    if n == 1:
        return x
    return x.unsqueeze(1).expand(x.shape[0], n, *x.shape[1:]).reshape(x.shape[0] * n, *x.shape[1:])


def _add_shared(x: torch.Tensor, shared: torch.Tensor | None, n: int) -> torch.Tensor:
    """``x`` (B·n, …) plus ``shared`` (B, …) broadcast over the n units of each sample."""
    if shared is None:
        return x
    if n == 1:
        return x + shared
    return (x.reshape(shared.shape[0], n, *x.shape[1:]) + shared.unsqueeze(1)).reshape(x.shape)


def _group_boundary(norm: nn.GroupNorm, channels: int) -> int:
    """The first GroupNorm group boundary at or after channel ``channels``."""
    per_group = norm.num_channels // norm.num_groups
    return min(norm.num_channels, -(-channels // per_group) * per_group)


def _group_norm_channels(norm: nn.GroupNorm, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """``norm`` (a GroupNorm32) applied to channels ``[start, stop)`` only, ``x`` holding exactly those.

    ``start``/``stop`` are group boundaries, so this equals the corresponding channels of ``norm``
    applied to the full input (statistics are per group; computed in at least float32 like GroupNorm32).
    """
    per_group = norm.num_channels // norm.num_groups
    weight = norm.weight[start:stop] if norm.weight is not None else None
    bias = norm.bias[start:stop] if norm.bias is not None else None
    return F.group_norm(x.to(norm_dtype(x)), (stop - start) // per_group, weight, bias, norm.eps).type(x.dtype)


@dataclass
class SharedInput:
    """Unit-independent part of a res block whose input is ``cat([h (unit part), s (shared)])``.

    ``unit_channels`` = channels of h; ``head`` = the first channels of ``s`` that share a
    GroupNorm group with h (they stay in the per-unit part), or None; ``conv`` = the input
    convolution's contribution of the other channels of ``s`` (B, out, H, W), or None; ``skip`` =
    the 1×1 skip connection's contribution of ``s`` (B, out, H, W) (``s`` itself for an identity
    skip with no unit part).
    """

    unit_channels: int
    head: torch.Tensor | None
    conv: torch.Tensor | None
    skip: torch.Tensor


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

    # -- the input split into a per-unit and a shared part ----------------------------------------
    def shared_input(self, s: torch.Tensor, unit_channels: int) -> SharedInput:
        """The unit-independent terms of ``forward(cat([h, s]))`` for ``h`` with ``unit_channels`` channels."""
        if self.updown:
            raise ValueError("shared_input: up/down-sampling blocks take no concatenated input")
        norm, act, conv = self.in_layers
        channels = unit_channels + s.shape[1]
        if channels != self.channels:
            raise ValueError(f"shared_input: {unit_channels} + {s.shape[1]} channels, block takes {self.channels}")
        split = _group_boundary(norm, unit_channels)
        n_head = split - unit_channels
        head = s[:, :n_head] if n_head > 0 else None
        conv_part = None
        if split < channels:
            tail = act(_group_norm_channels(norm, s[:, n_head:], split, channels))
            conv_part = F.conv2d(tail, conv.weight[:, split:], conv.bias if split == 0 else None,
                                 conv.stride, conv.padding, conv.dilation, conv.groups)
        if isinstance(self.skip_connection, nn.Identity):
            if unit_channels:
                raise ValueError("shared_input: an identity skip connection cannot be split")
            skip = s
        else:
            sc = self.skip_connection
            skip = F.conv2d(s, sc.weight[:, unit_channels:], sc.bias if unit_channels == 0 else None,
                            sc.stride, sc.padding, sc.dilation, sc.groups)
        return SharedInput(unit_channels, head, conv_part, skip)

    def forward_shared(
        self, h: torch.Tensor | None, shared: SharedInput, emb: torch.Tensor, cond: torch.Tensor | None, n: int = 1
    ) -> torch.Tensor:
        """``forward(cat([h, s]), emb, cond)`` from the per-unit ``h`` (B·n rows, or None when
        ``unit_channels = 0``) and the per-sample terms ``shared`` of :meth:`shared_input`."""
        norm, act, conv = self.in_layers
        split = shared.unit_channels + (0 if shared.head is None else shared.head.shape[1])
        if split > 0:
            x = h if shared.head is None else torch.cat([h, _repeat_units(shared.head, n)], dim=1)
            x = act(_group_norm_channels(norm, x, 0, split))
            hid = F.conv2d(x, conv.weight[:, :split], conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
            hid = _add_shared(hid, shared.conv, n)
        else:
            hid = _repeat_units(shared.conv, n)
        hid = self.modulate(hid, emb, cond)
        hid = self.out_layers[1:](hid)
        if shared.unit_channels:
            sc = self.skip_connection
            res = F.conv2d(h, sc.weight[:, : shared.unit_channels], sc.bias, sc.stride, sc.padding, sc.dilation, sc.groups)
            res = _add_shared(res, shared.skip, n)
        else:
            res = _repeat_units(shared.skip, n)
        return res + hid


class DisDiffDenoiser(nn.Module):
    """Frozen ``unet`` + trainable shift decoder, ``repre_embed``, ``part_emb`` and ``part_latents``.

    ``forward(x_t, t, z) -> (pred, G)``: ``pred`` (B, C, H, W) without gradient, ``G`` (B, N, C, H, W)
    the per-unit fields; with ``units`` (B,) only ``G_{units[b]}`` is computed, shape (B, C, H, W).
    ``z`` is (B, N, d) or the flat (B, N·d).

    Speed options (no effect on the mathematics): ``unit_pass`` (``"auto"``, ``"batched"``,
    ``"looped"``, see :func:`choose_unit_pass`) and the attribute ``reuse_skip_terms`` (default
    True: the skips' unit-independent contributions are computed once per forward).
    """

    def __init__(
        self,
        unet: UNetModel,
        num_units: int = 6,
        unit_dim: int = 32,
        orthogonal_part_embedding: bool = True,
        released_part_convention: bool = False,
        nonorthogonal_part_dim: int = 32,
        unit_pass: str = "auto",
        unit_fourier_features: int = 0,
    ) -> None:
        super().__init__()
        if unit_pass not in UNIT_PASSES:
            raise ValueError(f"unit_pass must be one of {UNIT_PASSES}, got {unit_pass!r}")
        self.unit_pass = unit_pass
        self.reuse_skip_terms = True
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
        # Published: Linear(d, E); opt-in unit_fourier_features lifts z to fixed Fourier features first.
        self.repre_embed = unit_embedding(self.unit_dim, ted, int(unit_fourier_features))
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

    def resolve_unit_pass(self, batch_size: int, device: torch.device | str) -> str:
        """``"batched"`` or ``"looped"``: this denoiser's ``unit_pass`` for a batch (see :func:`choose_unit_pass`)."""
        pixels = int(self.unet.image_size) ** 2
        return choose_unit_pass(self.unit_pass, batch_size, self.num_units, pixels, device)

    def skip_terms(self, hs: Sequence[torch.Tensor]) -> list[SharedInput]:
        """The unit-independent input terms of the middle block and of every output block (per sample)."""
        blocks = [self.shift_middle_block, *self.shift_output_blocks]
        if len(hs) != len(self.shift_output_blocks):
            raise ValueError(f"expected {len(self.shift_output_blocks)} skip tensors, got {len(hs)}")
        terms = [blocks[0][0].shared_input(hs[-1], 0)]
        for j, block in enumerate(self.shift_output_blocks):
            s = hs[-1 - j]
            terms.append(block[0].shared_input(s, block[0].channels - s.shape[1]))
        return terms

    def _shift_from_terms(self, terms: Sequence[SharedInput], emb: torch.Tensor, cond: torch.Tensor, n: int) -> torch.Tensor:
        """The shift decoder on ``emb``/``cond`` of B·n rows (n units per sample) from :meth:`skip_terms`."""
        h = None
        for block, shared in zip([self.shift_middle_block, *self.shift_output_blocks], terms):
            h = block[0].forward_shared(h, shared, emb, cond, n)
            for layer in block[1:]:
                if isinstance(layer, ConditionedBlock):
                    h = layer(h, emb, cond)
                elif isinstance(layer, TimestepBlock):
                    h = layer(h, emb)
                else:
                    h = layer(h)
        return self.shift_out(h)

    def _run_units(self, hs: Sequence[torch.Tensor], emb: torch.Tensor, cond: torch.Tensor, n: int) -> torch.Tensor:
        if self.reuse_skip_terms:
            return self._shift_from_terms(self.skip_terms(hs), emb, cond, n)
        return self._shift([_repeat_units(h, n) for h in hs], emb, cond)

    def shift_fields(
        self, emb: torch.Tensor, hs: Sequence[torch.Tensor], z: torch.Tensor, units: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The fields ``G``: (B, N, C, H, W), or (B, C, H, W) for ``units`` (one unit per sample).

        The N unit passes run batched over B·N rows or looped, per :meth:`resolve_unit_pass`.
        """
        z = self._units(z)
        B, N = z.shape[0], self.num_units
        e = self.part_embeddings()  # (N, E)
        if units is not None:
            units = units.to(device=z.device, dtype=torch.long).reshape(B)
            u = emb + e[units]
            r = self.repre_embed(z[torch.arange(B, device=z.device), units])
            return self._run_units(hs, u, r, 1)
        r = self.repre_embed(z)  # (B, N, E)
        if self.resolve_unit_pass(B, z.device) == "batched":
            u = (emb[:, None, :] + e[None, :, :]).reshape(B * N, -1)
            g = self._run_units(hs, u, r.reshape(B * N, -1), N)
            return g.reshape(B, N, *g.shape[1:])
        if self.reuse_skip_terms:
            terms = self.skip_terms(hs)  # once for all units
            fields = [self._shift_from_terms(terms, emb + e[k], r[:, k], 1) for k in range(N)]
        else:
            fields = [self._shift(hs, emb + e[k], r[:, k]) for k in range(N)]
        return torch.stack(fields, dim=1)

    def shift_fields_loop(self, emb: torch.Tensor, hs: Sequence[torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        """Reference implementation of :meth:`shift_fields`: one plain decoder pass per unit."""
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
