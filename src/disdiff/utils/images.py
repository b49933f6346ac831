"""Image grids and PNG output without torchvision."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from disdiff.utils.io import atomic_path


def to_uint8_hwc(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """(B, C, H, W) float in [-1, 1] -> uint8 (B, H, W, C); values outside [-1, 1] are clamped."""
    if isinstance(images, torch.Tensor):
        images = images.detach().float().cpu().numpy()
    images = np.clip((np.asarray(images, dtype=np.float32) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    if images.shape[1] == 1:
        images = np.repeat(images, 3, axis=1)
    return images.transpose(0, 2, 3, 1)


def make_grid(images: torch.Tensor | np.ndarray, ncol: int, padding: int = 2, pad_value: int = 255,
              min_tile: int = 64) -> np.ndarray:
    """Tile (B, C, H, W) images in [-1, 1] row by row into one uint8 (H', W', 3) array.

    Tiles smaller than ``min_tile`` pixels are enlarged by an integer factor (nearest neighbour,
    so no pixel is invented) to stay legible: a 32x32 image becomes a 64x64 tile.
    """
    tiles = to_uint8_hwc(images)
    factor = max(1, min_tile // max(tiles.shape[1], 1))
    if factor > 1:
        tiles = tiles.repeat(factor, axis=1).repeat(factor, axis=2)
    count, height, width, channels = tiles.shape
    ncol = max(1, min(ncol, count))
    nrow = (count + ncol - 1) // ncol
    grid = np.full(
        (nrow * (height + padding) + padding, ncol * (width + padding) + padding, channels), pad_value, dtype=np.uint8
    )
    for i in range(count):
        row, col = divmod(i, ncol)
        top, left = padding + row * (height + padding), padding + col * (width + padding)
        grid[top : top + height, left : left + width] = tiles[i]
    return grid


def save_png(array: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 (H, W, 3) array as PNG, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
    return path


def save_grid(images: torch.Tensor | np.ndarray, path: str | Path, ncol: int = 8) -> Path:
    return save_png(make_grid(images, ncol=ncol), path)
