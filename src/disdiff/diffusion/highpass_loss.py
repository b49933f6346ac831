"""A reconstruction term on the spatial differences of the eps error (stage 3's opt-in ``rec_highpass_weight``).

For the eps error ``e = ε − ε̂`` on a latent of shape (B, C, H, W), the forward differences along
height and width, ``D e = (e[.., i+1, j] − e[.., i, j], e[.., i, j+1] − e[.., i, j])``, and

    L_hp = mean |D e|        (loss_type "l1")
    L_hp = mean (D e)²       (loss_type "l2")

averaged over the C·((H−1)·W + H·(W−1)) differences of each sample, then over the batch.

Why: a colour that fills the floor or the wall is a nearly constant offset over a large region of the
latent, and ``D`` removes constants, while the object's shape, size and pose move its edges, which
``D`` keeps. Measured on shapes3d-synth's stage-2 latents, resampling the wall hue changes the latent
3.9-4.8x more than resampling shape, scale or orientation in mean |Δ|, but only 1.5-2.1x more in mean
|D Δ| (docs/EXPERIMENTS.md, session 24). Added to L_r with a weight, it asks the shift decoder, and
through it the encoder, relatively more for the geometry.

Measured on the oracle bound (docs/EXPERIMENTS.md, D30b against D32: the true factors as the code,
weight 3): at 2,400 steps the shift decoder used scale 14x and shape 8x more than with L_r alone, the
hues ~1.2x, and L_r itself ended lower. With a learned encoder (E105, E105r: seed 1 and 2, 4,000
steps) it put orientation in a unit of its own by 2,000 steps, earlier than the default, but no
unit took scale or shape. No shipped config uses it.

With ``l2`` the sum ``L_r + w·L_hp`` is the quadratic form ``eᵀ (I + w DᵀD) e`` up to per-element
normalisation, which is positive definite, so its minimiser over ε̂ is still the conditional mean
``E[ε | x_t, z]``: the term reweights which errors the gradient sees first, not what the model learns
to predict at the optimum.
"""

from __future__ import annotations

import torch

__all__ = ["spatial_differences", "highpass_reconstruction_loss"]


def spatial_differences(error: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C·((H−1)·W + H·(W−1))): the forward differences along H and along W, flattened."""
    if error.dim() != 4 or error.shape[-1] < 2 or error.shape[-2] < 2:
        raise ValueError(f"expected an error of shape (B, C, H, W) with H, W >= 2, got {tuple(error.shape)}")
    along_h = error[:, :, 1:, :] - error[:, :, :-1, :]
    along_w = error[:, :, :, 1:] - error[:, :, :, :-1]
    return torch.cat([along_h.flatten(1), along_w.flatten(1)], dim=1)


def highpass_reconstruction_loss(error: torch.Tensor, loss_type: str) -> torch.Tensor:
    """L_hp of the module docstring for the eps error ``error`` (B, C, H, W): a scalar."""
    if loss_type not in ("l1", "l2"):
        raise ValueError(f"loss_type must be 'l1' or 'l2', got {loss_type!r}")
    d = spatial_differences(error)
    per_elem = d.abs() if loss_type == "l1" else d * d
    return per_elem.mean(1).mean()
