"""Building blocks shared by the loaders: folders, array-backed datasets, grid validation, resizing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from disdiff.data.base import DatasetError, GroundTruthDataset

#: Reads that span at most this many bytes are done as one contiguous slice (then subset in memory).
_SLICE_READ_BYTES = 256 << 20


def cache_root() -> Path:
    """Folder for derived files (renders, resized Cars3D, decompressed members).

    ``$DISDIFF_CACHE`` if set, else ``~/.cache/disdiff``.
    """
    env = os.environ.get("DISDIFF_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "disdiff"


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """``data_dir`` if given, else ``$DISDIFF_DATA``, else ``None`` (never a hard-coded path)."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get("DISDIFF_DATA")
    return Path(env).expanduser() if env else None


def shape_text(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("*" if s is None else str(int(s)) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def check_array(array: Any, where: str, key: str, expected_shape: Sequence[int | None], dtypes: Sequence[str] | str,
                published: str) -> None:
    """Raise DatasetError unless ``array`` has ``expected_shape`` (``None`` = any) and a listed dtype kind/name."""
    dtypes = [dtypes] if isinstance(dtypes, str) else list(dtypes)
    shape = tuple(int(s) for s in array.shape)
    dtype = np.dtype(array.dtype)
    shape_ok = len(shape) == len(expected_shape) and all(e is None or e == s for e, s in zip(expected_shape, shape))
    dtype_ok = any(dtype.name == d or dtype.kind == d for d in dtypes)
    if not (shape_ok and dtype_ok):
        kinds = {"u": "unsigned int", "i": "int", "f": "float", "b": "bool"}
        expected_dtype = " or ".join(kinds.get(d, d) for d in dtypes)
        raise DatasetError(f"{where}: {key!r} has shape {shape_text(shape)} dtype {dtype}, expected shape "
                           f"{shape_text(expected_shape)} dtype {expected_dtype}. {published}")


def grid_lookup(labels: np.ndarray, sizes: Sequence[int], where: str, names: Sequence[str] | None = None) -> np.ndarray | None:
    """Validate that integer ``labels`` (M, K) enumerate the factor grid ``sizes`` exactly once.

    Returns ``None`` when row i already holds canonical image i (the common case), else the lookup
    table canonical index -> storage row. Raises DatasetError naming a duplicated or missing
    combination otherwise.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    names = list(names) if names is not None else [f"factor_{k}" for k in range(len(sizes))]
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[1] != len(sizes):
        raise DatasetError(f"{where}: factor labels have shape {shape_text(labels.shape)}, expected (M, {len(sizes)}) "
                           f"for the factors {names}")
    if labels.dtype.kind == "f":
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise DatasetError(f"{where}: factor labels must be integer classes; found non-integer values")
    labels = labels.astype(np.int64)
    total = int(np.prod(sizes))
    if labels.shape[0] != total:
        raise DatasetError(f"{where}: {labels.shape[0]} labelled images, but the grid {dict(zip(names, sizes.tolist()))} "
                           f"has {total} combinations; a ground-truth dataset needs every combination exactly once")
    bad = np.nonzero(np.any((labels < 0) | (labels >= sizes), axis=1))[0]
    if bad.size:
        raise DatasetError(f"{where}: row {int(bad[0])} has factor values {labels[bad[0]].tolist()} outside the sizes "
                           f"{sizes.tolist()} ({bad.size} such rows)")
    bases = np.concatenate([np.cumprod(sizes[::-1])[::-1][1:], [1]]).astype(np.int64)
    index = labels @ bases
    if np.array_equal(index, np.arange(total, dtype=np.int64)):
        return None
    counts = np.bincount(index, minlength=total)
    if np.any(counts != 1):
        duplicated = np.nonzero(counts > 1)[0]
        missing = np.nonzero(counts == 0)[0]
        def combo(i: int) -> dict:
            return dict(zip(names, ((i // bases) % sizes).tolist()))
        raise DatasetError(f"{where}: the factor labels are not a complete grid: {duplicated.size} combinations appear "
                           f"more than once (e.g. {combo(int(duplicated[0]))}) and {missing.size} are missing "
                           f"(e.g. {combo(int(missing[0]))})")
    lookup = np.empty(total, dtype=np.int64)
    lookup[index] = np.arange(total, dtype=np.int64)
    return lookup


def values_to_classes(values: np.ndarray) -> tuple[np.ndarray, list[int], list[np.ndarray]]:
    """Turn per-factor values (M, K), e.g. Shapes3D's float labels, into classes 0..n_k-1 by rank."""
    values = np.asarray(values)
    classes = np.empty(values.shape, dtype=np.int64)
    uniques = []
    for k in range(values.shape[1]):
        unique, inverse = np.unique(values[:, k], return_inverse=True)
        classes[:, k] = inverse.reshape(-1)
        uniques.append(unique)
    return classes, [len(u) for u in uniques], uniques


def parse_factor_sizes(value: Any, count: int, where: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{where}: factor_sizes must be a list of {count} positive integers, got {value!r}") from exc
    if len(sizes) != count or any(s < 1 for s in sizes):
        raise DatasetError(f"{where}: factor_sizes must be a list of {count} positive integers, got {list(sizes)}")
    return sizes


def resize_images(images: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 (n, H, W, C) -> (n, r, r, C) with PIL's LANCZOS filter (antialiased)."""
    from PIL import Image

    n, height, width, channels = images.shape
    if height == resolution and width == resolution:
        return images
    out = np.empty((n, resolution, resolution, channels), dtype=np.uint8)
    for i in range(n):
        if channels == 1:
            image = Image.fromarray(images[i, :, :, 0], mode="L")
            out[i, :, :, 0] = np.asarray(image.resize((resolution, resolution), Image.LANCZOS))
        else:
            out[i] = np.asarray(Image.fromarray(images[i]).resize((resolution, resolution), Image.LANCZOS))
    return out


def read_rows(storage: Any, rows: np.ndarray) -> np.ndarray:
    """``storage[rows]`` for any row order, reading sorted unique rows (fast for memmaps and HDF5)."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    if rows.size == 0:
        return np.zeros((0,) + tuple(storage.shape[1:]), dtype=storage.dtype)
    unique, inverse = np.unique(rows, return_inverse=True)
    start, stop = int(unique[0]), int(unique[-1]) + 1
    row_bytes = int(np.prod(storage.shape[1:], dtype=np.int64)) * np.dtype(storage.dtype).itemsize
    if stop - start == unique.size:
        data = np.asarray(storage[start:stop])
    elif (stop - start) <= 4 * unique.size and (stop - start) * row_bytes <= _SLICE_READ_BYTES:
        data = np.asarray(storage[start:stop])[unique - start]
    else:  # memmap fancy index, or an increasing index list for HDF5
        data = np.asarray(storage[unique])
    return data[inverse.reshape(-1)] if unique.size != rows.size or not np.array_equal(unique, rows) else data


class ArrayDataset(GroundTruthDataset):
    """A factor grid stored as an array of images (memmap, in-memory array or HDF5 dataset).

    ``opener`` returns the storage when first needed (and again in each DataLoader worker, which
    does not inherit open HDF5 handles); ``lookup`` maps canonical index -> storage row when the
    file is not in canonical order; ``convert`` turns stored rows into uint8 (n, H, W, C).
    """

    def __init__(self, *, factor_names: Sequence[str], factor_sizes: Sequence[int], opener: Callable[[], Any],
                 stored_image_shape: Sequence[int], source: str, lookup: np.ndarray | None = None,
                 convert: Callable[[np.ndarray], np.ndarray] | None = None, resolution: int | None = None,
                 info: dict | None = None, storage: Any = None):
        self.factor_names = tuple(str(n) for n in factor_names)
        self.factor_sizes = tuple(int(s) for s in factor_sizes)
        height, width, channels = (int(s) for s in stored_image_shape)
        if resolution is not None:
            resolution = int(resolution)
            if resolution < 1:
                raise DatasetError(f"{source}: resolution must be a positive integer, got {resolution}")
            if resolution == height == width:
                resolution = None
        self.resolution = resolution
        self.image_shape = (resolution, resolution, channels) if resolution else (height, width, channels)
        self.source = source
        self.lookup = lookup
        self._opener = opener
        self._convert = convert
        self._storage = storage
        self.info = dict(info or {})

    @property
    def storage(self) -> Any:
        if self._storage is None:
            self._storage = self._opener()
        return self._storage

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if self._opener is not None:
            state["_storage"] = None  # reopened lazily in the worker process
        return state

    def _read_images(self, indices: np.ndarray) -> np.ndarray:
        rows = self.lookup[indices] if self.lookup is not None else indices
        data = read_rows(self.storage, rows)
        if self._convert is not None:
            data = self._convert(data)
        data = np.ascontiguousarray(data, dtype=np.uint8)
        if self.resolution:
            data = resize_images(data, self.resolution)
        return data

    def describe(self) -> dict:
        out = super().describe()
        out.update(self.info)
        return out


class NpyOpener:
    """Picklable opener memory-mapping an ``.npy`` file read-only."""

    def __init__(self, path: str | Path):
        self.path = str(path)

    def __call__(self) -> np.ndarray:
        return np.load(self.path, mmap_mode="r")
