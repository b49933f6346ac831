"""The DisDiff disentangling loss (spec section 4.6, step 7), as functions of tensors.

Per sample b, with the sampled unit ``c_b``:

* no gradient: ``z̃0 = x0(z_t, pred)``, ``X = decode(z̃0)``, ``ẑ = Ê(X)``;
* with gradient: ``ε̂_c = pred + ddim_coef_t·G_{c_b}``, ``z̃0^c = x0(z_t, ε̂_c)``,
  ``X^c = decode(z̃0^c)`` (differentiable, no VQ quantisation), ``ẑ^c = Ê(X^c)``;
* distances per unit k (Euclidean over the unit's d dimensions, ``z`` detached):
  ``a_k = ‖ẑ_k − z_k‖`` (no grad), ``b_k = ‖ẑ^c_k − z_k‖``, ``δ_k = ‖ẑ_k − ẑ^c_k‖``;
* variant logits ``a − b``, invariant logits ``δ``; ``CE_va``, ``CE_in`` = cross-entropy of these
  logits with target ``c_b``;
* constant weight ``w_b``: ``"Z"`` → mean_chw (z̃0 − z̃0^c)², ``"IM"`` → mean_chw (X − X^c)²;
* ``dis_b = w_b · dis_weight · (CE_va + CE_in)``.

Opt-in deviation (``normalize_weight=True``, off by default and not in the paper): ``w_b`` is
divided by its (constant) batch mean, so ``dis_b = (w_b / mean_b' w_b') · dis_weight · (CE_va + CE_in)``.
The published weight is proportional to ``G²`` and therefore vanishes while the shift decoder's
output is small, i.e. for the whole of a short run; the normalised weight keeps the published
per-sample emphasis but gives the loss the scale ``dis_weight · CE`` from the first step.

Opt-in deviation (``flat_in_t=True``, "Z" only): ``w_b = mean_chw G_{c_b}²``. The published "Z"
weight equals ``(1 − ᾱ_t)²/ᾱ_t · mean_chw G_{c_b}²`` (``z̃0 − z̃0^c = −(1 − ᾱ_t)/√ᾱ_t · G_{c_b}``), and
that schedule factor (from ~1e-5 at t = 0 to ~7e3 at t = 999 for the linear schedule) decides which
timesteps the loss acts at; without it every t counts by the size of its field alone.

Opt-in deviation (``weight_floor = ρ > 0``, "Z" only): ``w_b ← max(w_b, ρ · max_k w_{b,k})``, where
``w_{b,k}`` is the weight sample b would have if unit k had been drawn (the same formula with
``G_k``; computed from all N fields, which the caller already has). The published weight is
``∝ G_{c_b}²``, so a unit whose field has died gets almost no weight (EXPERIMENTS, D16: 50-80x less
than a live unit's) and the loss never asks it for an effect of its own; the floor weighs it like
the strongest field of the same sample and t, keeping the published schedule over t.

Opt-in deviation (``weight_cap = c > 0``): ``w_b ← min(w_b, c)`` (after the floor, before the
normalisation). The published weight grows with ``G²``, so when a field grows suddenly the
disentangling term can outweigh L_r by 100x in a few steps, and with Adam the update then follows it
alone; the cap bounds the term at ``c · dis_weight · (CE_va + CE_in)`` (EXPERIMENTS, E116, M20 seed 0).

``G = 0`` (the shift decoder's zero-initialised output layer) gives ``w = 0`` and therefore a loss
of exactly 0 at initialisation.

The re-encoder ``Ê`` is the image encoder with its *current* weights, detached (a frozen copy
refreshed every step, without the cost of a deep copy), run with BatchNorm in eval mode (running
statistics, as published) or train mode (batch statistics; the live running statistics are not
touched). Gradients flow through ``Ê`` and the first-stage decoder to their inputs only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from disdiff.diffusion.schedule import DiffusionSchedule, extract, predict_x0_from_eps
from disdiff.utils.random import draw

__all__ = [
    "DIS_LOSS_TYPES",
    "REENCODER_BN_MODES",
    "sample_concepts",
    "FrozenReencoder",
    "sample_weights",
    "capped_weights",
    "normalized_weights",
    "unit_sample_weights",
    "floored_weights",
    "dis_loss_from_codes",
    "DisLossOutput",
    "disentangling_loss",
]

DIS_LOSS_TYPES = ("Z", "IM")
REENCODER_BN_MODES = ("eval", "train")


def check_dis_loss_type(loss_type: str) -> str:
    if loss_type not in DIS_LOSS_TYPES:
        raise ValueError(f"dis_loss_type must be one of {DIS_LOSS_TYPES}, got {loss_type!r}")
    return loss_type


def sample_concepts(
    batch_size: int, num_units: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """One unit index per sample, uniform over ``{0, …, N−1}``: int64 ``(B,)`` on ``device``.

    Drawn with ``torch.randint`` on the generator's device (any device), then moved.
    """
    return draw(torch.randint, num_units, (batch_size,), generator=generator, device=device)


class FrozenReencoder:
    """``Ê(images)``: the encoder with its current weights detached, in a fixed BatchNorm mode.

    Equivalent to a deep copy of the encoder made every step with ``requires_grad=False``: the
    parameters are detached (no gradient reaches the encoder's weights), buffers are cloned (the
    live BatchNorm statistics never change), and gradients still flow to the input images.
    Not an ``nn.Module``, so it adds nothing to state dicts or parameter lists.
    """

    def __init__(self, bn_mode: str = "eval") -> None:
        if bn_mode not in REENCODER_BN_MODES:
            raise ValueError(f"reencoder_bn_mode must be one of {REENCODER_BN_MODES}, got {bn_mode!r}")
        self.bn_mode = bn_mode

    def __call__(self, encoder: nn.Module, images: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """``encoder(images, **kwargs)`` with the detached weights."""
        state = {name: p.detach() for name, p in encoder.named_parameters()}
        state.update({name: b.detach().clone() for name, b in encoder.named_buffers()})
        was_training = encoder.training
        encoder.train(self.bn_mode == "train")
        try:
            return functional_call(encoder, state, (images,), kwargs)
        finally:
            encoder.train(was_training)


def sample_weights(
    loss_type: str,
    x0: torch.Tensor,
    x0_c: torch.Tensor,
    images: torch.Tensor | None = None,
    images_c: torch.Tensor | None = None,
) -> torch.Tensor:
    """The constant per-sample weight ``w_b`` (no gradient): ``(B,)``."""
    check_dis_loss_type(loss_type)
    if loss_type == "Z":
        diff = x0.detach() - x0_c.detach()
    else:
        if images is None or images_c is None:
            raise ValueError("dis_loss_type 'IM' needs the decoded images")
        diff = images.detach() - images_c.detach()
    return diff.pow(2).flatten(1).mean(dim=1)


def normalized_weights(weight: torch.Tensor, eps: float = 1e-20) -> torch.Tensor:
    """``w_b / mean_b' w_b'`` (detached); all zeros when every weight is zero (G = 0)."""
    weight = weight.detach()
    return weight / weight.mean().clamp_min(eps)


def unit_sample_weights(
    schedule: DiffusionSchedule, t: torch.Tensor, fields: torch.Tensor, flat_in_t: bool = False
) -> torch.Tensor:
    """``w_{b,k}``, the "Z" weight sample b would get with unit k drawn: ``(B, N)``, no gradient.

    ``fields`` is ``(B, N, C, H, W)``. Since ``z̃0 − z̃0^k = −√(1/ᾱ_t − 1)·ddim_coef_t·G_k``,
    ``w_{b,k} = (√(1/ᾱ_t − 1)·ddim_coef_t)² · mean_chw G_{b,k}²`` (the factor is 1 with ``flat_in_t``).
    """
    energy = fields.detach().pow(2).flatten(2).mean(dim=2)
    if flat_in_t:
        return energy
    factor = (extract(schedule.sqrt_recipm1_alphas_cumprod, t, (t.shape[0],))
              * extract(schedule.ddim_coef, t, (t.shape[0],))).to(energy)
    return factor.pow(2).unsqueeze(1) * energy


def floored_weights(weight: torch.Tensor, unit_weights: torch.Tensor, floor: float) -> torch.Tensor:
    """``max(w_b, floor · max_k w_{b,k})`` per sample (detached): ``(B,)``."""
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"weight floor must be in [0, 1], got {floor}")
    return torch.maximum(weight.detach(), floor * unit_weights.detach().amax(dim=1).to(weight))


def capped_weights(weight: torch.Tensor, cap: float) -> torch.Tensor:
    """``min(w_b, cap)`` per sample (detached): ``(B,)``."""
    if not cap > 0:
        raise ValueError(f"weight cap must be > 0, got {cap}")
    return weight.detach().clamp_max(float(cap))


def dis_loss_from_codes(
    z: torch.Tensor,
    z_hat: torch.Tensor,
    z_hat_c: torch.Tensor,
    concept: torch.Tensor,
    weight: torch.Tensor,
    dis_weight: float = 1.0,
    logit_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample ``(dis_b, CE_va, CE_in)`` from codes shaped ``(B, N, d)``.

    ``z`` and ``z_hat`` are detached here; only ``z_hat_c`` carries gradient. ``logit_scale``
    (1 in the paper) multiplies both logit vectors before the softmax (an inverse temperature).
    """
    if not (z.shape == z_hat.shape == z_hat_c.shape) or z.dim() != 3:
        raise ValueError(f"codes must all be (B, N, d), got {tuple(z.shape)}, {tuple(z_hat.shape)}, {tuple(z_hat_c.shape)}")
    z = z.detach()
    z_hat = z_hat.detach()
    a = torch.linalg.vector_norm(z_hat - z, dim=-1)
    b = torch.linalg.vector_norm(z_hat_c - z, dim=-1)
    delta = torch.linalg.vector_norm(z_hat - z_hat_c, dim=-1)
    concept = concept.to(device=z.device, dtype=torch.long)
    if logit_scale != 1.0:
        a, b, delta = a * logit_scale, b * logit_scale, delta * logit_scale
    ce_va = F.cross_entropy(a - b, concept, reduction="none")
    ce_in = F.cross_entropy(delta, concept, reduction="none")
    loss = weight.detach().to(ce_va) * float(dis_weight) * (ce_va + ce_in)
    return loss, ce_va, ce_in


@dataclass
class DisLossOutput:
    loss: torch.Tensor  # (B,) per-sample dis_b, including dis_weight
    ce_variant: torch.Tensor  # (B,)
    ce_invariant: torch.Tensor  # (B,)
    weight: torch.Tensor  # (B,) w_b
    concept: torch.Tensor  # (B,) the sampled units (the CE targets)
    z_hat: torch.Tensor  # (B, N, d) re-encoding of the frozen DPM's x0 prediction (no grad)
    z_hat_c: torch.Tensor  # (B, N, d) re-encoding of the x0 prediction with G_c added


def disentangling_loss(
    *,
    schedule: DiffusionSchedule,
    x_t: torch.Tensor,
    t: torch.Tensor,
    pred: torch.Tensor,
    sub_grad: torch.Tensor,
    z: torch.Tensor,
    concept: torch.Tensor,
    decode: Callable[[torch.Tensor], torch.Tensor],
    reencode: Callable[[torch.Tensor], torch.Tensor],
    loss_type: str = "Z",
    dis_weight: float = 1.0,
    normalize_weight: bool = False,
    flat_in_t: bool = False,
    logit_scale: float = 1.0,
    weight_floor: float = 0.0,
    all_fields: torch.Tensor | None = None,
    weight_cap: float | None = None,
) -> DisLossOutput:
    """Spec 4.6 step 7.

    ``x_t``, ``pred`` and ``sub_grad`` (= ``G_{c_b}`` per sample) are ``(B, C, H, W)`` latents in
    the diffusion (scaled) space; ``z`` is ``(B, N, d)``; ``decode`` maps diffusion-space latents
    to images without VQ quantisation (the caller divides by the scale factor); ``reencode`` maps
    images to codes ``(B, N·d)`` or ``(B, N, d)``. ``all_fields`` ``(B, N, C, H, W)`` (every unit's
    ``G_k``) is needed only with ``weight_floor > 0``. ``weight_cap`` (None: no cap) bounds ``w_b``.
    """
    check_dis_loss_type(loss_type)
    if flat_in_t and loss_type != "Z":
        raise ValueError(f"flat_in_t needs the 'Z' weight, got dis_loss_type {loss_type!r}")
    if weight_floor > 0 and (loss_type != "Z" or all_fields is None):
        raise ValueError("weight_floor needs the 'Z' weight and all_fields (every unit's G_k)")
    num_units = z.shape[1]
    pred = pred.detach()
    with torch.no_grad():
        x0 = predict_x0_from_eps(schedule, x_t, t, pred)
        images = decode(x0)
        z_hat = _units(reencode(images), num_units)
    coef = extract(schedule.ddim_coef, t, x_t.shape).to(x_t)
    eps_c = pred + coef * sub_grad
    x0_c = predict_x0_from_eps(schedule, x_t, t, eps_c)
    images_c = decode(x0_c)
    z_hat_c = _units(reencode(images_c), num_units)
    if flat_in_t:
        weight = sub_grad.detach().pow(2).flatten(1).mean(dim=1)
    else:
        weight = sample_weights(loss_type, x0, x0_c, images, images_c)
    if weight_floor > 0:
        weight = floored_weights(weight, unit_sample_weights(schedule, t, all_fields, flat_in_t), weight_floor)
    if weight_cap is not None:
        weight = capped_weights(weight, weight_cap)
    if normalize_weight:
        weight = normalized_weights(weight)
    loss, ce_va, ce_in = dis_loss_from_codes(z, z_hat, z_hat_c, concept, weight, dis_weight, logit_scale)
    return DisLossOutput(loss=loss, ce_variant=ce_va, ce_invariant=ce_in, weight=weight, concept=concept,
                         z_hat=z_hat, z_hat_c=z_hat_c)


def _units(code: torch.Tensor, num_units: int) -> torch.Tensor:
    return code if code.dim() == 3 else code.reshape(code.shape[0], num_units, -1)
