"""``shapes3d-synth``: the built-in, procedurally rendered analogue of DeepMind's 3D Shapes.

No download is needed: images are rendered by :mod:`disdiff.data.render` (a floor, a wall
corner and one shaded solid) with the factors of 3D Shapes, in the same canonical order::

    floor_hue 10, wall_hue 10, object_hue 10, scale 8, shape 4, orientation 15   (480,000 images)

row-major, orientation fastest. Shapes are cube, cylinder, sphere, capsule. Options:

* ``factor_sizes`` - a reduced grid, e.g. ``[4, 4, 4, 3, 4, 3]`` (hues stay spread over the hue
  circle, scales/orientations over their ranges);
* ``resolution`` - 64 (default), 32, 16, ... pixels;
* ``storage`` - where the images live:

  - ``"disk"`` (default): the whole grid is rendered once into
    ``$DISDIFF_CACHE/shapes3d-synth/<params-hash>.npy`` (default cache ``~/.cache/disdiff``),
    written atomically, reused by later runs and memory-mapped;
  - ``"memory"``: the whole grid rendered into RAM, nothing written (tests, small grids);
  - ``"lazy"``: nothing is stored; each batch is rendered on demand from the per-geometry
    planes (a few ms of set-up, then thousands of images per second).

  ``cache=False`` is accepted as a synonym of ``storage="memory"``.

Rendering is deterministic (no random numbers). Rendering the full 64x64 grid takes ~12 s of CPU
on one core (``benchmarks/bench_render.py``); writing the 5.9 GB disk cache takes about a minute.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from disdiff.data import render
from disdiff.data.base import DatasetError, GroundTruthDataset
from disdiff.data.common import cache_root, parse_factor_sizes, read_rows
from disdiff.utils.io import atomic_path

log = logging.getLogger(__name__)

FACTOR_NAMES = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
DEFAULT_FACTOR_SIZES = (10, 10, 10, 8, 4, 15)
STORAGE_MODES = ("disk", "memory", "lazy")


class Shapes3DSynth(GroundTruthDataset):
    """The rendered 3D Shapes analogue (see the module docstring)."""

    factor_names = FACTOR_NAMES

    def __init__(self, factor_sizes: Sequence[int] = DEFAULT_FACTOR_SIZES, resolution: int = 64,
                 storage: str = "disk", cache: bool | None = None, cache_dir: str | Path | None = None,
                 supersample: int = 4):
        self.factor_sizes = parse_factor_sizes(factor_sizes, len(FACTOR_NAMES), "shapes3d-synth")
        if self.factor_sizes[4] > len(render.SHAPE_NAMES):
            raise DatasetError(f"shapes3d-synth: factor 'shape' has {len(render.SHAPE_NAMES)} values "
                               f"{list(render.SHAPE_NAMES)}; factor_sizes asks for {self.factor_sizes[4]}")
        try:
            self.resolution = int(resolution)
            self.supersample = int(supersample)
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"shapes3d-synth: resolution and supersample must be integers, got {resolution!r}, {supersample!r}") from exc
        if not 4 <= self.resolution <= 512 or not 1 <= self.supersample <= 16:
            raise DatasetError(f"shapes3d-synth: resolution must be in [4, 512] and supersample in [1, 16] "
                               f"(got {self.resolution}, {self.supersample})")
        if cache is not None and storage == "disk":
            storage = "disk" if cache else "memory"
        if storage not in STORAGE_MODES:
            raise DatasetError(f"shapes3d-synth: storage must be one of {STORAGE_MODES}, got {storage!r}")
        self.storage_mode = storage
        self.image_shape = (self.resolution, self.resolution, 3)
        self.cache_path = Path(cache_dir).expanduser() / f"{self.params_hash}.npy" if cache_dir is not None \
            else cache_root() / "shapes3d-synth" / f"{self.params_hash}.npy"
        self.source = f"rendered (storage={storage}" + (f", cache {self.cache_path})" if storage == "disk" else ")")
        self._geometry: render.GeometryTable | None = None
        self._images: np.ndarray | None = None

    # --------------------------------------------------------------------- parameters
    @property
    def params(self) -> dict:
        return {"renderer_version": render.RENDERER_VERSION, "factor_sizes": list(self.factor_sizes),
                "resolution": self.resolution, "supersample": self.supersample}

    @property
    def params_hash(self) -> str:
        return hashlib.sha1(json.dumps(self.params, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def factor_values(self) -> dict[str, np.ndarray]:
        """Physical value of each class: hues in [0, 1), scale, shape name, orientation in degrees."""
        return render.factor_values(self.factor_sizes)

    @property
    def geometry(self) -> render.GeometryTable:
        if self._geometry is None:
            self._geometry = render.render_geometry(self.factor_sizes, self.resolution, self.supersample)
        return self._geometry

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if self.storage_mode == "disk":
            state["_images"] = None  # workers re-map the cache file
        if self.storage_mode != "lazy":
            state["_geometry"] = None
        return state

    # ------------------------------------------------------------------------ storage
    def render_all(self, out: np.ndarray | None = None, progress: bool = False) -> np.ndarray:
        """Render the whole grid in canonical order into ``out`` (uint8 (N, R, R, 3)), block by block."""
        n_floor, n_wall, n_object = self.factor_sizes[:3]
        geometry = self.geometry
        r = self.resolution
        if out is None:
            out = np.empty((self.num_images, r, r, 3), dtype=np.uint8)
        grid = out.reshape(n_floor, n_wall, n_object, geometry.num_geometries, r, r, 3)
        blocks = [(f, w) for f in range(n_floor) for w in range(n_wall)]
        iterator = blocks
        if progress:
            from tqdm import tqdm

            iterator = tqdm(blocks, desc="rendering shapes3d-synth", unit="block", leave=False, disable=None, mininterval=2.0)
        for f, w in iterator:
            geometry.render_block(f, w, grid[f, w])
        return out

    def prepare(self) -> None:
        """Make sure the images exist (render the disk cache if needed)."""
        if self.storage_mode != "lazy":
            self._ensure_images()

    def _ensure_images(self) -> np.ndarray:
        if self._images is not None:
            return self._images
        if self.storage_mode == "memory":
            self._images = self.render_all()
            return self._images
        shape = (self.num_images,) + self.image_shape
        path = self.cache_path
        if path.exists():
            try:
                cached = np.load(path, mmap_mode="r")
                if cached.shape == shape and cached.dtype == np.uint8:
                    self._images = cached
                    return cached
                log.warning("ignoring cache %s: shape %s dtype %s, expected %s uint8", path, cached.shape, cached.dtype, shape)
            except (ValueError, OSError) as exc:
                log.warning("ignoring unreadable cache %s (%s); rendering again", path, exc)
        log.info("rendering shapes3d-synth %s at %dx%d into %s", self.factor_sizes, self.resolution, self.resolution, path)
        with atomic_path(path, suffix=".tmp.npy") as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            self.render_all(out, progress=self.num_images >= 100_000)
            out.flush()
            del out
        (path.parent / f"{path.stem}.json").write_text(json.dumps(self.params, indent=2) + "\n")
        self._images = np.load(path, mmap_mode="r")
        return self._images

    def _read_images(self, indices: np.ndarray) -> np.ndarray:
        if self.storage_mode == "lazy":
            return self.render_indices(indices)
        return read_rows(self._ensure_images(), indices)

    def render_indices(self, indices: np.ndarray) -> np.ndarray:
        """Render the images at canonical ``indices`` directly (no storage)."""
        factors = self.factors_of(np.asarray(indices, dtype=np.int64).reshape(-1))
        n_shape, n_orient = self.factor_sizes[4], self.factor_sizes[5]
        geometry_index = (factors[:, 3] * n_shape + factors[:, 4]) * n_orient + factors[:, 5]
        return self.geometry.colourise(factors[:, 0], factors[:, 1], factors[:, 2], geometry_index)

    # ------------------------------------------------------------------------- masks
    def part_masks(self, factors: Sequence[int]) -> dict[str, np.ndarray]:
        """Which pixels of the image with ``factors`` belong to the floor, the walls and the object.

        ``floor`` and ``wall`` partition the image (decided at the pixel centre); ``object`` is every
        pixel the solid covers at least partly. Only ``floor_hue`` changes floor pixels, only
        ``wall_hue`` wall pixels, and ``object_hue`` only object pixels.
        """
        factors = np.asarray(factors, dtype=np.int64)
        n_shape, n_orient = self.factor_sizes[4], self.factor_sizes[5]
        g = int((factors[3] * n_shape + factors[4]) * n_orient + factors[5])
        floor = self.geometry.floor_pixel[g].copy()
        return {"floor": floor, "wall": ~floor, "object": self.geometry.coverage[g] > 0}

    def describe(self) -> dict:
        out = super().describe()
        values = self.factor_values
        out.update({
            "name": "shapes3d-synth",
            "storage": self.storage_mode,
            "factor_values": {k: [str(x) if k == "shape" else round(float(x), 4) for x in v] for k, v in values.items()},
            "renderer_version": render.RENDERER_VERSION,
        })
        if self.storage_mode == "disk":
            out["cache"] = str(self.cache_path)
        return out
