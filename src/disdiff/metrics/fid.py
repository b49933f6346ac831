"""FID, the Frechet Inception Distance (Heusel et al., 2017).

Definition. With (mu_1, Sigma_1) and (mu_2, Sigma_2) the mean and covariance of the Inception
pool3 features (2048-d) of two image sets,

    FID = ||mu_1 - mu_2||^2 + Tr(Sigma_1 + Sigma_2 - 2 (Sigma_1 Sigma_2)^(1/2)).

If the matrix square root is not finite, 1e-6 is added to both diagonals and it is recomputed
(as pytorch-fid does); a negligible imaginary part from round-off is dropped.

**No Inception weights ship with disdiff** (they cannot be redistributed here and there is no
network access). The user supplies a TorchScript file (``--inception-weights PATH``; or a
``torch.export`` program saved as ``.pt2``) holding a module that maps float images (N, 3, 299, 299) scaled to [-1, 1] to features (N, 2048): for
example pytorch-fid's ``InceptionV3([3], resize_input=False, normalize_input=False)`` built
with its FID weights ``pt_inception-2015-12-05-6726825d.pth`` (released at
https://github.com/mseitzer/pytorch-fid/releases), traced and saved, see
:data:`WEIGHTS_HELP`. disdiff itself resizes images bilinearly to 299x299.

Fixed bug of the original (spec 6.5): it converted images to floats in [0, 255] that were never
rescaled, so Inception saw [0, 255] instead of its expected range. Here images in [-1, 1] (or
uint8 in [0, 255], converted to [-1, 1]) reach the network in [-1, 1], and activations are
accumulated for any number of images (no fixed 10000-row buffer).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from scipy import linalg

from disdiff.metrics.utils import MetricError

WEIGHTS_HELP = (
    "No Inception weights ship with disdiff. Provide a TorchScript file with --inception-weights: a module mapping "
    "float images (N, 3, 299, 299) in [-1, 1] to (N, 2048) pool3 features. To make one, in an environment with "
    "pytorch-fid (pip install pytorch-fid; it downloads its FID weights pt_inception-2015-12-05-6726825d.pth from "
    "https://github.com/mseitzer/pytorch-fid/releases): "
    "`m = pytorch_fid.inception.InceptionV3([3], resize_input=False, normalize_input=False).eval(); "
    "f = lambda x: m(x)[0].flatten(1)` wrapped in an nn.Module, then "
    "`torch.jit.trace(module, torch.zeros(1, 3, 299, 299)).save('inception_fid.pt')`."
)


class InceptionWeightsMissing(FileNotFoundError):
    """The Inception feature extractor needed for FID was not supplied or cannot be read."""


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Frechet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, dtype=np.float64)), np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64)), np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise MetricError(f"FID: mismatched statistics shapes {mu1.shape}, {sigma1.shape}, {mu2.shape}, {sigma2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise MetricError(f"FID: matrix square root has a large imaginary part ({np.max(np.abs(covmean.imag)):.3g})")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def activation_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (ddof=1, rows are samples) of features (n, F)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise MetricError(f"FID: need features (n >= 2, F), got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def load_inception(path: str | Path | None):
    """Load the user's TorchScript Inception feature extractor (see :data:`WEIGHTS_HELP`)."""
    if path is None:
        raise InceptionWeightsMissing("FID needs Inception weights and none were given. " + WEIGHTS_HELP)
    path = Path(path).expanduser()
    if not path.is_file():
        raise InceptionWeightsMissing(f"{path}: Inception weights file not found. " + WEIGHTS_HELP)
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            if path.suffix == ".pt2":
                return torch.export.load(str(path)).module()
            model = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # a state dict, a pickle, or garbage
        raise InceptionWeightsMissing(
            f"{path}: not a TorchScript module or exported program ({type(exc).__name__}). A plain state dict such "
            "as pt_inception-2015-12-05-6726825d.pth must first be loaded into pytorch-fid's InceptionV3 and traced. "
            + WEIGHTS_HELP) from exc
    model.eval()
    return model


def to_model_range(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) / (N, 3, H, W) or float in [-1, 1] -> float32 (N, 3, H, W) in [-1, 1]."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise MetricError(f"FID: images must be 4-d (N, 3, H, W) or (N, H, W, 3), got shape {images.shape}")
    if images.shape[1] != 3 and images.shape[-1] == 3:
        images = images.transpose(0, 3, 1, 2)
    if images.shape[1] != 3:
        raise MetricError(f"FID: images must have 3 channels, got shape {images.shape}")
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 127.5 - 1.0
    images = images.astype(np.float32)
    if images.size and (images.min() < -1.0001 or images.max() > 1.0001):
        raise MetricError(f"FID: float images must be in [-1, 1], got range [{images.min():.3g}, {images.max():.3g}]")
    return images


def compute_activations(images: np.ndarray, model, batch_size: int = 50) -> np.ndarray:
    """Features (N, F) of images (see :func:`to_model_range`), resized bilinearly to 299x299."""
    import torch
    import torch.nn.functional as F

    images = to_model_range(images)
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(images[start:start + batch_size])
            if batch.shape[-2:] != (299, 299):
                batch = F.interpolate(batch, size=(299, 299), mode="bilinear", align_corners=False)
            features = model(batch)
            if isinstance(features, (list, tuple)):
                features = features[0]
            out.append(features.reshape(features.shape[0], -1).double().cpu().numpy())
    return np.concatenate(out, axis=0)


def compute_fid(images_a: np.ndarray, images_b: np.ndarray, model, batch_size: int = 50) -> float:
    """FID between two image sets with the given feature extractor."""
    mu1, s1 = activation_statistics(compute_activations(images_a, model, batch_size))
    mu2, s2 = activation_statistics(compute_activations(images_b, model, batch_size))
    return frechet_distance(mu1, s1, mu2, s2)


def load_images_or_statistics(path: str | Path, model=None, batch_size: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) from an npz of precomputed statistics (``mu``, ``sigma``) or of images
    (``arr_0`` or ``images``: (N, 3, H, W) in [-1, 1] or uint8)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with np.load(path) as data:
        keys = set(data.files)
        if {"mu", "sigma"} <= keys:
            return data["mu"], data["sigma"]
        key = "arr_0" if "arr_0" in keys else "images" if "images" in keys else None
        if key is None:
            raise MetricError(f"{path}: expected arrays 'mu' and 'sigma' or images under 'arr_0'/'images'; found {sorted(keys)}")
        images = data[key]
    if model is None:
        raise InceptionWeightsMissing(f"{path} holds images, so FID needs Inception features. " + WEIGHTS_HELP)
    return activation_statistics(compute_activations(images, model, batch_size))
