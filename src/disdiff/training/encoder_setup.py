"""One-off preparation of the image encoder before stage 3's first training step.

Two opt-in fits of the DPM head, each on training images: its fixed feature whitening
(``encoder_config.whiten_features``, :class:`disdiff.models.feature_whitening.FixedWhitening`) and its
ICA read-out (``encoder_config.ica_init``, :class:`disdiff.models.ica_readout.ICAReadout`). The frozen
features they are fitted on never change, so each is fitted once rather than tracked.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Iterator

import torch

log = logging.getLogger(__name__)

__all__ = ["feature_moments", "fit_feature_whitening", "fit_ica_readout"]


def first_images_features(features_of: Callable[[torch.Tensor], torch.Tensor],
                          image_batches: Iterable[torch.Tensor], max_images: int) -> Iterator[torch.Tensor]:
    """The features of the first ``max_images`` images of ``image_batches``, a batch at a time (fewer
    images if the batches run out)."""
    count = 0
    for images in image_batches:
        h = features_of(images[: max_images - count])
        count += len(h)
        yield h
        if count >= max_images:
            break


@torch.no_grad()
def feature_moments(features_of: Callable[[torch.Tensor], torch.Tensor], image_batches: Iterable[torch.Tensor],
                    max_images: int) -> tuple[int, torch.Tensor, torch.Tensor]:
    """``(n, Σ h, Σ h hᵀ)`` in float64 over the features ``h`` of the first ``max_images`` images of
    ``image_batches`` (fewer if they run out)."""
    count, total, outer = 0, None, None
    for h in first_images_features(features_of, image_batches, max_images):
        h = h.double()
        total = h.sum(0) if total is None else total + h.sum(0)
        outer = h.T @ h if outer is None else outer + h.T @ h
        count += len(h)
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


def fit_ica_readout(encoder: torch.nn.Module, loader: Iterable[Any], to_images: Callable[[Any], torch.Tensor],
                    broadcast: Callable[[Any], Any] = lambda obj: obj) -> bool:
    """Fit ``encoder``'s ICA read-out (and zero its head's last layer) when it has one that is not fitted
    yet (a run resumed from a checkpoint has it fitted); return whether it fitted.

    ``broadcast`` sends an object from the first process to all (a distributed run's processes see
    different images, and FastICA's answer depends on them): every process loads the first one's fit.
    The global random state is restored afterwards, as in :func:`fit_feature_whitening`.
    """
    readout = getattr(encoder, "ica", None)
    if readout is None or bool(readout.fitted):
        return False
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        chunks = [h.cpu() for h in first_images_features(encoder.features, (to_images(batch) for batch in loader),
                                                          encoder.ica_images)]
    if not chunks:
        raise ValueError("no training images to fit the ICA read-out on (the training dataloader is empty)")
    features = torch.cat(chunks)
    components = int(readout.num_components)
    if len(features) <= components:
        raise ValueError(f"the ICA read-out (model.params.encoder_config.ica_components = {components}) needs more "
                         f"than {components} training images, and the training data gave {len(features)}: use a "
                         "larger dataset, fewer ica_components, or ica_init: false")
    kurtosis = encoder.fit_ica(features)
    fitted = broadcast({key: value.detach().cpu() for key, value in encoder.state_dict().items()
                        if key.startswith(("ica.", "head."))})
    encoder.load_state_dict(fitted, strict=False)
    log.info("fitted the DPM head's ICA read-out on %d training images; excess kurtosis of its components: %s",
             len(features), " ".join(f"{k:+.2f}" for k in kurtosis))
    return True
