"""dSprites: ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` with ``imgs`` (737280, 64, 64) uint8
in {0, 1}, ``latents_classes`` (737280, 6) int and ``metadata`` (a pickled dict, not read).

Ground-truth factors (the constant colour factor of size 1 is dropped)::

    shape 3, scale 6, orientation 40, pos_x 32, pos_y 32          (row-major, pos_y fastest)

Images are returned as 3-channel uint8 0/255. The published archive is compressed, which cannot
be memory-mapped: ``imgs`` is decompressed once, streaming, into the cache folder
(``$DISDIFF_CACHE/extracted``, 3 GB) and memory-mapped from there (``extract=False`` reads it into
RAM instead). ``latents_classes``, when present, are checked to enumerate the grid exactly once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from disdiff.data.base import DatasetError
from disdiff.data.common import ArrayDataset, cache_root, check_array, grid_lookup, parse_factor_sizes
from disdiff.data.files import ArrayFile

FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
FILE_NAMES = ("dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz",)
PUBLISHED = ("dSprites is published by DeepMind at https://github.com/google-deepmind/dsprites-dataset "
             "(file dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz); nothing is downloaded automatically.")


def binary_to_rgb(images: np.ndarray) -> np.ndarray:
    """(n, H, W) in {0, 1} -> (n, H, W, 3) uint8 in {0, 255}."""
    scaled = (np.asarray(images) > 0).astype(np.uint8) * np.uint8(255)
    return np.repeat(scaled[..., None], 3, axis=-1)


def load_dsprites(path: str | Path, factor_sizes: Sequence[int] | None = None, resolution: int | None = None,
                  extract: bool = True, cache_dir: str | Path | None = None) -> ArrayDataset:
    path = Path(path)
    sizes = FACTOR_SIZES if factor_sizes is None else parse_factor_sizes(factor_sizes, 5, str(path))
    total = int(np.prod(sizes))
    extract_dir = (Path(cache_dir) if cache_dir else cache_root() / "extracted") if extract else None
    files = ArrayFile(path, extract_dir=extract_dir)
    if "imgs" not in files:
        raise DatasetError(f"{path}: no array 'imgs' (found: {', '.join(files.keys()) or 'none'}); expected 'imgs' "
                           f"({total}, 64, 64) uint8 in {{0, 1}}. {PUBLISHED}")
    shape, dtype = files.shape("imgs"), files.dtype("imgs")
    check_array(_Meta(shape, dtype), str(path), "imgs",
                (total, 64, 64), "uint8", f"dSprites has {total} images ({dict(zip(FACTOR_NAMES, sizes))}). {PUBLISHED}")
    lookup = None
    labelled = "latents_classes" in files
    if labelled:
        latents = files.read("latents_classes")
        check_array(latents, str(path), "latents_classes", (total, 6), ("i", "u", "f"), PUBLISHED)
        if np.any(latents[:, 0] != 0):
            raise DatasetError(f"{path}: 'latents_classes' column 0 (colour) must be 0 everywhere (dSprites has one colour)")
        lookup = grid_lookup(latents[:, 1:], sizes, str(path), FACTOR_NAMES)
    # opened on first read: the compressed published file is then decompressed into the cache once
    return ArrayDataset(
        factor_names=FACTOR_NAMES, factor_sizes=sizes, opener=files.opener("imgs"),
        stored_image_shape=(64, 64, 3), source=str(path), lookup=lookup, convert=binary_to_rgb, resolution=resolution,
        info={"name": "dsprites", "format": files.kind,
              "latents_classes": ("checked" + (", reordered" if lookup is not None else "")) if labelled else "absent"},
    )


class _Meta:
    def __init__(self, shape: tuple[int, ...], dtype: np.dtype):
        self.shape, self.dtype = shape, dtype
