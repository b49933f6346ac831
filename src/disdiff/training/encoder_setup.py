"""One-off preparation of the image encoder before stage 3's first training step.

Today one thing: the DPM head's opt-in fixed feature whitening (``encoder_config.whiten_features``,
:class:`disdiff.models.feature_whitening.FixedWhitening`) is fitted on the training images. The frozen
features it whitens never change, so their statistics are estimated once rather than tracked.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable

import torch

log = logging.getLogger(__name__)

__all__ = ["feature_moments", "fit_feature_whitening"]


@torch.no_grad()
def feature_moments(features_of: Callable[[torch.Tensor], torch.Tensor], image_batches: Iterable[torch.Tensor],
                    max_images: int) -> tuple[int, torch.Tensor, torch.Tensor]:
    """``(n, Σ h, Σ h hᵀ)`` in float64 over the features ``h`` of the first ``max_images`` images of
    ``image_batches`` (fewer if they run out)."""
    count, total, outer = 0, None, None
    for images in image_batches:
        images = images[: max_images - count]
        h = features_of(images).double()
        total = h.sum(0) if total is None else total + h.sum(0)
        outer = h.T @ h if outer is None else outer + h.T @ h
        count += len(h)
        if count >= max_images:
            break
    if total is None:
        raise ValueError("no training images to fit the feature whitening on (the training dataloader is empty)")
    return count, total, outer


def fit_feature_whitening(encoder: torch.nn.Module, loader: Iterable[Any], to_images: Callable[[Any], torch.Tensor],
                          reduce_sum: Callable[[torch.Tensor], torch.Tensor] = lambda tensor: tensor) -> bool:
    """Fit ``encoder.whitening`` when it exists and is not fitted yet (a run resumed from a checkpoint
    has it fitted); return whether it fitted.

    ``loader`` yields training batches and ``to_images`` takes a batch to images on the encoder's
    device. ``reduce_sum`` adds a tensor over the processes of a distributed run, so that every process
    fits the same whitening from all of their images. The global random state is restored afterwards:
    drawing the batches (a shuffled sampler draws a seed) does not change the run's later draws.
    """
    whitening = getattr(encoder, "whitening", None)
    if whitening is None or bool(whitening.fitted):
        return False
    with torch.random.fork_rng(devices=[]):
        count, total, outer = feature_moments(encoder.features, (to_images(batch) for batch in loader),
                                              encoder.whitening_images)
    count_tensor = reduce_sum(torch.tensor(float(count), dtype=torch.float64, device=total.device))
    whitening.fit(float(count_tensor), reduce_sum(total), reduce_sum(outer))
    log.info("fitted the DPM head's feature whitening on %d training images (eps %g)", int(count_tensor),
             whitening.eps)
    return True
