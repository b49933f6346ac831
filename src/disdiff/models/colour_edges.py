"""The colour-edge map of an image: where its parts meet, nearly whatever their colours (an opt-in input
of the DPM feature encoder, ``encoder_config.edge_features``, a deviation from the paper).

Why (docs/EXPERIMENTS.md, D39-D43): on shapes3d-synth the object's scale and shape are no linear
direction of the frozen UNet features, of the latent or of the pixels, because their effect there is a
product with the hues (a larger object recolours more positions by the object's hue). In the edge map
the hues mostly cancel: FastICA of it finds a scale and a shape component (η² 0.49 and 0.56, no labels),
and of the features and the edge map together, a component for each of the six factors (D43).

For ``x`` of shape ``(B, C, H, W)``:

    e[i, j] = Σ_c |x[c, i, j+1] − x[c, i, j]| + |x[c, i+1, j] − x[c, i, j]|,   0 ≤ i < H−1, 0 ≤ j < W−1,

divided by its maximum over the image (floored at ``eps``), so that how different two colours are
matters less than where they meet; flattened to ``(B, (H−1)(W−1))``. It has no parameters and is
differentiable almost everywhere, so gradients reach the image (the disentangling loss re-encodes
generated images).

Caution (D44, M21): taken on the raw image, the map is hypersensitive to what generation does to an
image. Pixel noise of σ 0.1 moves some ICA units of it by 5-10 of their standard deviations, so the
disentangling loss's re-encodings are meaningless. Stage 3 then learned nothing in one 30-minute
quickstart and diverged in another. The edges of the first stage's reconstruction are as robust as the
UNet features (D45): ``encoder_config.edge_source: reconstruction`` of the DPM encoder takes those.
"""
from __future__ import annotations

import torch

__all__ = ["colour_edge_map", "colour_edge_strength", "num_edge_features"]


def colour_edge_strength(x: torch.Tensor) -> torch.Tensor:
    """``(B, H−1, W−1)``: the L1 norm over channels of the differences to the right and below, summed, of
    images ``x`` ``(B, C, H, W)`` (not normalised)."""
    if x.ndim != 4 or x.shape[-1] < 2 or x.shape[-2] < 2:
        raise ValueError(f"colour_edge_strength expects images (B, C, H, W) with H, W >= 2, got shape {tuple(x.shape)}")
    right = (x[:, :, :-1, 1:] - x[:, :, :-1, :-1]).abs().sum(1)
    down = (x[:, :, 1:, :-1] - x[:, :, :-1, :-1]).abs().sum(1)
    return right + down


def colour_edge_map(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``(B, (H−1)(W−1))`` colour edges of images ``x`` ``(B, C, H, W)``, each image scaled to maximum 1 (module docstring)."""
    edges = colour_edge_strength(x).flatten(1)
    return edges / edges.amax(1, keepdim=True).clamp_min(eps)


def num_edge_features(height: int, width: int) -> int:
    """The width of :func:`colour_edge_map`'s output for ``height x width`` images."""
    return (int(height) - 1) * (int(width) - 1)
