"""Image grids: layout, value mapping and the legibility upscale."""

import numpy as np
import torch

from disdiff.utils.images import make_grid


def test_grid_layout_values_and_nearest_upscale():
    images = torch.stack([torch.full((3, 8, 8), v) for v in (-1.0, 0.0, 1.0)])
    grid = make_grid(images, ncol=2, padding=1, min_tile=16)  # 8x8 tiles enlarged x2 to 16x16
    assert grid.shape == (2 * 17 + 1, 2 * 17 + 1, 3)
    assert np.all(grid[1:17, 1:17] == 0)          # -1 -> 0
    assert np.all(grid[1:17, 18:34] == 128)       # 0 -> 128 (rounded)
    assert np.all(grid[18:34, 1:17] == 255)       # 1 -> 255, second row
    assert np.all(grid[18:34, 18:34] == 255)      # empty slot stays padding
    big = make_grid(images, ncol=3, min_tile=4)    # no enlargement when tiles are large enough
    assert big.shape[0] == 8 + 4
