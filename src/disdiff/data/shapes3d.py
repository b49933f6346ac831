"""DeepMind 3D Shapes: ``3dshapes.h5`` (``images`` (480000, 64, 64, 3) uint8, ``labels`` (480000, 6)
float) or an ``.npz`` conversion with key ``images`` (and optionally ``labels``).

Factors, row-major with orientation fastest (the file's own order)::

    floor_hue 10, wall_hue 10, object_hue 10, scale 8, shape 4, orientation 15

The file is read lazily (HDF5 via h5py; ``.npz`` members memory-mapped when stored
uncompressed). When ``labels`` are present they are checked against the canonical order (each
column's distinct values ranked), and a file stored in another row order is still read correctly.
``factor_sizes`` overrides the sizes (for reduced test files); by default the full grid is required.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from disdiff.data.base import DatasetError
from disdiff.data.common import (
    ArrayDataset,
    cache_root,
    check_array,
    grid_lookup,
    parse_factor_sizes,
    values_to_classes,
)
from disdiff.data.files import ArrayFile, check_readable_tail

FACTOR_NAMES = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
FACTOR_SIZES = (10, 10, 10, 8, 4, 15)
FILE_NAMES = ("3dshapes.h5", "3dshapes.npz")
PUBLISHED = ("3D Shapes is published by DeepMind at https://github.com/google-deepmind/3d-shapes "
             "(file 3dshapes.h5, https://storage.googleapis.com/3d-shapes/3dshapes.h5); nothing is downloaded automatically.")


def load_shapes3d(path: str | Path, factor_sizes: Sequence[int] | None = None, resolution: int | None = None,
                  check_labels: bool = True, cache_dir: str | Path | None = None) -> ArrayDataset:
    path = Path(path)
    sizes = FACTOR_SIZES if factor_sizes is None else parse_factor_sizes(factor_sizes, 6, str(path))
    files = ArrayFile(path, extract_dir=Path(cache_dir) if cache_dir else cache_root() / "extracted")
    if "images" not in files:
        raise DatasetError(f"{path}: no array 'images' (found: {', '.join(files.keys()) or 'none'}); expected 'images' "
                           f"({int(np.prod(sizes))}, 64, 64, 3) uint8. {PUBLISHED}")
    total = int(np.prod(sizes))
    images = files.lazy("images")
    note = "" if factor_sizes is None else f" (factor_sizes={list(sizes)})"
    check_array(images, str(path), "images", (total, 64, 64, 3), "uint8",
                f"3D Shapes has {total} images{note}. {PUBLISHED}")
    check_readable_tail(images, str(path), "images")
    lookup = None
    labelled = "labels" in files
    if labelled and check_labels:
        labels = files.read("labels")
        check_array(labels, str(path), "labels", (total, 6), ("f", "i", "u"), PUBLISHED)
        classes, found_sizes, _ = values_to_classes(labels)
        if tuple(found_sizes) != tuple(sizes):
            raise DatasetError(f"{path}: 'labels' have {dict(zip(FACTOR_NAMES, found_sizes))} distinct values per factor, "
                               f"expected {dict(zip(FACTOR_NAMES, sizes))}. {PUBLISHED}")
        lookup = grid_lookup(classes, sizes, str(path), FACTOR_NAMES)
    return ArrayDataset(
        factor_names=FACTOR_NAMES, factor_sizes=sizes, opener=files.opener("images"), storage=images,
        stored_image_shape=images.shape[1:], source=str(path), lookup=lookup, resolution=resolution,
        info={"name": "shapes3d", "format": files.kind,
              "labels": ("checked" + (", reordered to canonical order" if lookup is not None else ""))
              if labelled and check_labels else ("not checked" if labelled else "absent (file order assumed canonical)")},
    )
