"""Cars3D (Reed et al., 2015): a folder of ``car_*_mesh.mat`` files (MATLAB v5).

Each file holds one car model: key ``im`` of shape (128, 128, 3, 24, 4) uint8, i.e. height,
width, channel, azimuth, elevation. Factors and canonical order::

    elevation 4, azimuth 24, object N              index = elev * 24 * N + azim * N + object

with N = 183 for the published set. **Object ids are positions in the sorted list of file
names** (the original used ``os.listdir`` order, which differs between machines, spec 9.3). Every
image appears exactly once (17,568 for 183 cars; the original repeated each image 10 times).

Images are resized to ``resolution`` (64) with PIL's LANCZOS filter (antialiased). The resized
array is cached in ``$DISDIFF_CACHE/cars3d/<hash>.npy`` (default cache ``~/.cache/disdiff``),
keyed by the file names, sizes and modification times and the resolution, written atomically
and memory-mapped afterwards. A folder with fewer (or more) files loads too: the factor
``object`` then has as many values as files, and ``describe()`` says so.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from disdiff.data.base import DatasetError
from disdiff.data.common import ArrayDataset, NpyOpener, cache_root, resize_images
from disdiff.utils.io import atomic_path

FACTOR_NAMES = ("elevation", "azimuth", "object")
NUM_ELEVATIONS, NUM_AZIMUTHS, NUM_OBJECTS = 4, 24, 183
FILE_PATTERN = "car_*_mesh.mat"
CACHE_VERSION = 1
PUBLISHED = ("Cars3D is published by Reed et al. (NeurIPS 2015) at http://www.scottreed.info "
             "(archive nips2015-analogy-data.tar.gz, folder data/cars); nothing is downloaded automatically.")


def find_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(FILE_PATTERN), key=lambda p: p.name)


def read_mat(path: Path) -> np.ndarray:
    """The ``im`` array (H, W, 3, 24, 4) uint8 of one car file."""
    from scipy.io import loadmat

    try:
        content = loadmat(str(path), variable_names=["im"])
    except Exception as exc:  # scipy raises ValueError, MatReadError, OSError, TypeError...
        raise DatasetError(f"{path}: not a readable MATLAB v5 .mat file ({type(exc).__name__}: {exc}). {PUBLISHED}") from exc
    if "im" not in content:
        raise DatasetError(f"{path}: no variable 'im' (expected 'im' (128, 128, 3, 24, 4) uint8). {PUBLISHED}")
    image = content["im"]
    if image.ndim != 5 or image.shape[2:] != (3, NUM_AZIMUTHS, NUM_ELEVATIONS) or image.dtype != np.uint8:
        raise DatasetError(f"{path}: 'im' has shape {tuple(image.shape)} dtype {image.dtype}, expected "
                           f"(128, 128, 3, {NUM_AZIMUTHS}, {NUM_ELEVATIONS}) uint8 (H, W, C, azimuth, elevation). {PUBLISHED}")
    return image


def build_array(files: list[Path], resolution: int, out: np.ndarray) -> None:
    """Fill ``out`` (4, 24, N, r, r, 3) with the resized images of ``files`` (object = list position)."""
    for obj, path in enumerate(files):
        image = read_mat(path)  # (H, W, 3, A, E)
        views = np.ascontiguousarray(image.transpose(4, 3, 0, 1, 2))  # (E, A, H, W, 3)
        resized = resize_images(views.reshape((-1,) + views.shape[2:]), resolution)
        out[:, :, obj] = resized.reshape(NUM_ELEVATIONS, NUM_AZIMUTHS, resolution, resolution, 3)


def load_cars3d(path: str | Path, resolution: int = 64, cache: bool = True,
                cache_dir: str | Path | None = None) -> ArrayDataset:
    folder = Path(path)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder; Cars3D is a folder of {FILE_PATTERN} files. {PUBLISHED}")
    files = find_files(folder)
    if not files:
        raise DatasetError(f"{folder}: no {FILE_PATTERN} files (expected {NUM_OBJECTS} MATLAB files with key 'im'). {PUBLISHED}")
    try:
        resolution = int(resolution)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{folder}: resolution must be an integer, got {resolution!r}") from exc
    n = len(files)
    shape = (NUM_ELEVATIONS * NUM_AZIMUTHS * n, resolution, resolution, 3)
    key = json.dumps({"version": CACHE_VERSION, "resolution": resolution,
                      "files": [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files],
                      "folder": str(folder.resolve())})
    cache_path = (Path(cache_dir).expanduser() if cache_dir else cache_root() / "cars3d") / \
        f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.npy"

    open_cached = NpyOpener(cache_path)
    images = None
    if cache and cache_path.exists():
        try:
            images = open_cached()
            if images.shape != shape or images.dtype != np.uint8:
                images = None
        except (ValueError, OSError):
            images = None
    if images is None:
        if cache:
            with atomic_path(cache_path, suffix=".tmp.npy") as tmp:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
                build_array(files, resolution, out.reshape(NUM_ELEVATIONS, NUM_AZIMUTHS, n, resolution, resolution, 3))
                out.flush()
                del out
            images = open_cached()
        else:
            images = np.empty(shape, dtype=np.uint8)
            build_array(files, resolution, images.reshape(NUM_ELEVATIONS, NUM_AZIMUTHS, n, resolution, resolution, 3))
    info = {"name": "cars3d", "objects": n,
            "object_ids": f"position in the sorted list of {FILE_PATTERN} file names "
                          f"(0 = {files[0].name}, {n - 1} = {files[-1].name})"}
    if n != NUM_OBJECTS:
        info["note"] = f"{n} car files found; the published set has {NUM_OBJECTS}, so factor 'object' has {n} values"
    if cache:
        info["cache"] = str(cache_path)
    return ArrayDataset(
        factor_names=FACTOR_NAMES, factor_sizes=(NUM_ELEVATIONS, NUM_AZIMUTHS, n),
        opener=open_cached if cache else None, storage=images,
        stored_image_shape=(resolution, resolution, 3), source=f"{folder} ({n} car files)", info=info,
    )
