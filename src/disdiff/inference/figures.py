"""The swap and traversal figures of a trained DisDiff model, as image grids.

Library side of ``disdiff swap`` and ``disdiff traverse`` (the commands add argument parsing and
checks), used by the quickstart too. ``model`` is a :class:`disdiff.api.DisDiff` (``encode``,
``generate``, ``swap_grid``, ``module``); ``dataset`` a ground-truth dataset whose images the model
takes.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from disdiff.inference import pca_directions, traverse
from disdiff.utils.images import make_grid


def pick_sources(num_images: int, num_sources: int, seed: int) -> list[int]:
    """``num_sources`` distinct random dataset indices (sorted), drawn from ``RandomState(seed)``."""
    rng = np.random.RandomState(seed)
    return sorted(rng.choice(num_images, size=min(num_sources, num_images), replace=False).tolist())


def swap_figures(model: Any, dataset: Any, indices: Sequence[int], reference: int, steps: int, eta: float, seed: int,
                 modes: Sequence[str] = ("full", "partial"), progress: bool = False) -> dict[str, torch.Tensor]:
    """One grid (C, H, W) per mode in ``modes`` ("full", "partial").

    Layout: column 0 holds the reference image (top) and its own generation; the other columns
    hold the source images (row 0) and their own generations (row 1); row k + 2 is unit k swapped
    (see ``disdiff swap``). One x_T per column, shared by every row.
    """
    sources = torch.from_numpy(dataset.images(list(indices)))
    ref_image = torch.from_numpy(dataset.images([reference]))
    z_src = model.encode(sources)
    z_ref = model.encode(ref_image)
    own = model.generate(torch.cat([z_ref, z_src]), steps, eta, seed=seed)
    blank = torch.ones_like(ref_image)
    out = {}
    for mode in modes:
        grid = model.swap_grid(z_src, z_ref, steps, eta, seed, partial=(mode == "partial"), progress=progress)
        rows = [torch.cat([ref_image, sources]).to(grid), own.to(grid)]
        rows += [torch.cat([blank.to(grid), grid[k]]) for k in range(grid.shape[0])]
        out[mode] = make_grid(torch.cat(rows), ncol=len(indices) + 1)
    return out


def pca_codes(model: Any, dataset: Any, samples: int, seed: int) -> np.ndarray:
    """Codes (M, N, d) of ``samples`` random images, for the traversal's PCA when no export exists."""
    idx = np.sort(np.random.RandomState(seed).choice(len(dataset), size=min(samples, len(dataset)), replace=False))
    return model.encode(torch.from_numpy(dataset.images(idx))).cpu().numpy()


def traverse_figure(model: Any, dataset: Any, index: int, codes: np.ndarray, values: Sequence[float], steps: int,
                    eta: float, seed: int, progress: bool = False) -> torch.Tensor:
    """Grid (C, H, W): row k is image ``index`` (column 0) then unit k moved by ``v * std_k`` for each value.

    The direction of unit k is the first principal component of ``codes[:, k]`` (M, N, d).
    """
    directions, std, _ = pca_directions(codes)
    image = torch.from_numpy(dataset.images([index]))
    z = model.encode(image)[0]
    grid = traverse(model.module, z, directions, std, list(values), steps, eta, seed, progress=progress)
    rows = [torch.cat([image.to(grid), grid[k]]) for k in range(grid.shape[0])]
    return make_grid(torch.cat(rows), ncol=len(values) + 1)


@torch.no_grad()
def training_grids(module: Any, x: torch.Tensor, steps: int, eta: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """The image logger's grids for a stage-3 ``DisDiffModule`` (EMA shift decoder, eval mode).

    ``inputs`` (``x``), ``reconstruction`` (first-stage round trip), ``samples`` (DDIM conditioned
    on each input's own representation), ``samples_swapping`` (row k: unit k of every input
    replaced by input 0's) and ``samples_swapping_partial`` (row k: only ``G_k`` of input 0's unit k
    added). One x_T per column, shared by every row. The module's train/eval mode is restored.
    """
    from disdiff.inference import generate, swap_grid

    x = x.to(module.scale_factor.device)
    was_training = module.training
    module.eval()
    try:
        z = module.encode_representation(x)
        out = {"inputs": x, "reconstruction": module.decode_latents(module.encode_images(x), quantize=True)}
        with module.ema_scope():
            out["samples"] = generate(module, z, steps=steps, eta=eta, seed=seed)
            full = swap_grid(module, z, z[0], steps=steps, eta=eta, seed=seed, partial=False)
            part = swap_grid(module, z, z[0], steps=steps, eta=eta, seed=seed, partial=True)
        out["samples_swapping"] = full.flatten(0, 1)
        out["samples_swapping_partial"] = part.flatten(0, 1)
    finally:
        module.train(was_training)
    return out
