"""Bring-your-own ground-truth dataset: one ``.npz`` or HDF5 (``.h5``) file.

Arrays (keys at the top level of the file):

``images``
    uint8 (M, H, W, C) with C = 1 or 3 (a 3-D (M, H, W) array is read as C = 1).
and **either** (a)
``factor_sizes``
    int (K,): the number of values of each factor, with the images stored in canonical
    row-major order (the last factor varying fastest), so M = prod(factor_sizes);
``factor_names`` (optional, recommended)
    str (K,): one name per factor (default ``factor_0``, ``factor_1``...);
**or** (b)
``factors``
    int (M, K): the factor classes of each image, in any row order. Each column's distinct
    values, sorted, become the classes 0..n_k-1. The rows must form a complete grid (every
    combination exactly once); a lookup table then serves images in canonical order, so
    ``index_of``/``factors_of`` work as for (a). ``factor_names`` optional as above.

If both ``factor_sizes`` and ``factors`` are given, the labels must use classes 0..size-1.
In an ``.npz`` store ``images`` uncompressed (``np.savez``, not ``savez_compressed``) so that it
can be memory-mapped; a compressed member is decompressed once into the cache folder. Options:
``resolution`` (resize on read), ``rgb=True`` (repeat a single channel to three).

Example::

    np.savez("mydata.npz", images=images, factor_sizes=np.array([3, 5]),
             factor_names=np.array(["colour", "size"]))
    disdiff data info mydata.npz
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from disdiff.data.base import DatasetError
from disdiff.data.common import ArrayDataset, cache_root, grid_lookup, shape_text, values_to_classes
from disdiff.data.files import ArrayFile, check_readable_tail

FORMAT_HELP = ("A bring-your-own dataset needs 'images' uint8 (M, H, W, C) with C 1 or 3, plus either 'factor_sizes' "
               "int (K,) [+ 'factor_names' str (K,)] with images in canonical row-major order, or 'factors' int (M, K) "
               "labels forming a complete grid; see docs/DATASETS.md.")


class _AddChannel:
    def __init__(self, rgb: bool):
        self.rgb = rgb

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[..., None]
        if self.rgb and images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        return images


def is_custom_file(files: ArrayFile) -> bool:
    keys = set(files.keys())
    return "images" in keys and ("factor_sizes" in keys or "factors" in keys)


def load_custom(path: str | Path, resolution: int | None = None, rgb: bool = False,
                cache_dir: str | Path | None = None) -> ArrayDataset:
    path = Path(path)
    files = ArrayFile(path, extract_dir=Path(cache_dir) if cache_dir else cache_root() / "extracted")
    where = str(path)
    if "images" not in files:
        raise DatasetError(f"{where}: no array 'images' (found: {', '.join(files.keys()) or 'none'}). {FORMAT_HELP}")
    shape, dtype = files.shape("images"), files.dtype("images")
    if dtype != np.uint8 or len(shape) not in (3, 4) or (len(shape) == 4 and shape[-1] not in (1, 3)):
        raise DatasetError(f"{where}: 'images' has shape {shape_text(shape)} dtype {dtype}, expected (M, H, W, C) uint8 "
                           f"with C 1 or 3. {FORMAT_HELP}")
    count = shape[0]
    lookup = None
    if "factor_sizes" in files:
        sizes = files.read("factor_sizes")
        if sizes.ndim != 1 or sizes.size == 0 or sizes.dtype.kind not in "iu" or np.any(sizes < 1):
            raise DatasetError(f"{where}: 'factor_sizes' has shape {shape_text(sizes.shape)} dtype {sizes.dtype} values "
                               f"{sizes.tolist()}, expected a 1-D int array of positive sizes. {FORMAT_HELP}")
        sizes = tuple(int(s) for s in sizes)
        how = "factor_sizes (canonical order)"
    else:
        sizes = None
    names = None
    if "factor_names" in files:
        names = files.read_strings("factor_names")
    if "factors" in files:
        labels = files.read("factors")
        if labels.ndim != 2 or labels.shape[0] != count or labels.dtype.kind not in "iuf":
            raise DatasetError(f"{where}: 'factors' has shape {shape_text(labels.shape)} dtype {labels.dtype}, expected "
                               f"({count}, K) int, one row of factor classes per image. {FORMAT_HELP}")
        if sizes is None:
            labels, found, _ = values_to_classes(labels)
            sizes = tuple(found)
            how = "factors labels (sizes = distinct values per column)"
        else:
            how = "factor_sizes + factors labels"
        lookup = grid_lookup(labels, sizes, where, names if names and len(names) == len(sizes) else None)
        if lookup is not None:
            how += ", reordered to canonical order"
    elif sizes is None:
        raise DatasetError(f"{where}: neither 'factor_sizes' nor 'factors' found (arrays: {', '.join(files.keys())}). {FORMAT_HELP}")
    elif int(np.prod(sizes)) != count:
        raise DatasetError(f"{where}: 'images' has {count} images but 'factor_sizes' {list(sizes)} make "
                           f"{int(np.prod(sizes))} combinations; they must be equal. {FORMAT_HELP}")
    if names is None:
        names = [f"factor_{k}" for k in range(len(sizes))]
    if len(names) != len(sizes) or len(set(names)) != len(names):
        raise DatasetError(f"{where}: 'factor_names' {names} must hold {len(sizes)} distinct names, one per factor. {FORMAT_HELP}")
    images = files.lazy("images")
    check_readable_tail(images, where, "images")
    channels = 1 if len(shape) == 3 else shape[3]
    if rgb and channels == 1:
        channels = 3
    return ArrayDataset(
        factor_names=names, factor_sizes=sizes, opener=files.opener("images"), storage=images,
        stored_image_shape=(shape[1], shape[2], channels), source=where, lookup=lookup,
        convert=_AddChannel(rgb) if (len(shape) == 3 or rgb) else None, resolution=resolution,
        info={"name": "custom", "format": files.kind, "factors_from": how},
    )
