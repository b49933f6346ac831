"""CelebA (aligned): a folder with ``img_align_celeba/*.jpg`` and ``list_attr_celeba.txt``.

The attribute file has the standard format: line 1 the image count, line 2 the 40 attribute
names, then one line per image ``filename v1 ... v40`` with values -1/1. Optionally
``list_eval_partition.txt`` (``filename 0|1|2``) selects a ``split`` (train/valid/test).

CelebA is not a factor grid. :class:`AttributeDataset` is an image collection with 40 binary
attributes (``attributes`` (M, 40) in {0, 1}, ``attribute_names``) used by the TAD metric. To fit
the common interface it has a single pseudo-factor ``image`` (size M, the image's position), so
``dataset[i]``, ``images(...)`` and the data module work unchanged; ``is_factor_grid`` is False so
factor-based metrics can refuse it.

Preprocessing follows the training loader of the original (spec 7.1): crop 128x128 at top 57,
left 25 (centre x=89, y=121), then resize to ``resolution`` (64) with PIL's antialiased LANCZOS
filter (the original used torchvision's Resize). Images are decoded on demand; ``cache=True``
decodes them all once into ``$DISDIFF_CACHE/celeba/<hash>.npy`` and memory-maps that.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from disdiff.data.base import DatasetError, GroundTruthDataset
from disdiff.data.common import cache_root, read_rows
from disdiff.utils.io import atomic_path

IMAGE_FOLDER = "img_align_celeba"
ATTRIBUTE_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
SPLITS = {"train": 0, "valid": 1, "test": 2}
DEFAULT_CROP = (57, 25, 128)  # top, left, size
PUBLISHED = ("CelebA is published at https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (img_align_celeba.zip, "
             "list_attr_celeba.txt, list_eval_partition.txt); nothing is downloaded automatically.")


def parse_attribute_file(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(attribute names, file names, attributes (M, K) uint8 in {0, 1}) from ``list_attr_celeba.txt``."""
    if not path.is_file():
        raise DatasetError(f"{path}: attribute file not found. {PUBLISHED}")
    with open(path, "r", encoding="utf-8", errors="replace") as handle:
        lines = [line.split() for line in handle if line.strip()]
    if len(lines) < 2:
        raise DatasetError(f"{path}: expected a count on line 1 and attribute names on line 2; the file has {len(lines)} lines")
    try:
        count = int(lines[0][0])
    except (ValueError, IndexError) as exc:
        raise DatasetError(f"{path}: line 1 should be the image count, found {' '.join(lines[0])!r}") from exc
    names = lines[1]
    rows = lines[2:]
    if len(rows) != count:
        raise DatasetError(f"{path}: line 1 announces {count} images but {len(rows)} image lines follow (truncated file?)")
    files, values = [], np.empty((count, len(names)), dtype=np.int8)
    for i, row in enumerate(rows):
        if len(row) != len(names) + 1:
            raise DatasetError(f"{path}: line {i + 3} has {len(row) - 1} values, expected {len(names)} "
                               f"(one per attribute name on line 2)")
        files.append(row[0])
        try:
            values[i] = [int(v) for v in row[1:]]
        except ValueError as exc:
            raise DatasetError(f"{path}: line {i + 3}: attribute values must be -1 or 1 ({exc})") from exc
    if count and not np.all(np.isin(values, (-1, 1))):
        bad = int(np.nonzero(~np.all(np.isin(values, (-1, 1)), axis=1))[0][0])
        raise DatasetError(f"{path}: line {bad + 3}: attribute values must be -1 or 1, found {values[bad].tolist()}")
    return names, files, (values > 0).astype(np.uint8)


class AttributeDataset(GroundTruthDataset):
    """Images with binary attributes (CelebA); one pseudo-factor ``image`` (see the module docstring)."""

    is_factor_grid = False

    def __init__(self, root: str | Path, resolution: int = 64, crop: Sequence[int] | None = DEFAULT_CROP,
                 split: str = "all", cache: bool = False, cache_dir: str | Path | None = None):
        root = Path(root)
        self.root = root
        image_dir = root / IMAGE_FOLDER
        if not image_dir.is_dir():
            raise DatasetError(f"{root}: no folder {IMAGE_FOLDER}/ (expected {IMAGE_FOLDER}/*.jpg and {ATTRIBUTE_FILE}). {PUBLISHED}")
        names, files, attributes = parse_attribute_file(root / ATTRIBUTE_FILE)
        if split != "all":
            if split not in SPLITS:
                raise DatasetError(f"{root}: split must be 'all' or one of {list(SPLITS)}, got {split!r}")
            keep = self._split_mask(root / PARTITION_FILE, files, SPLITS[split])
            files = [f for f, k in zip(files, keep) if k]
            attributes = attributes[keep]
        present = set(os.listdir(image_dir))
        missing = [f for f in files if f not in present]
        if missing:
            raise DatasetError(f"{image_dir}: {len(missing)} of the {len(files)} images listed in {ATTRIBUTE_FILE} are "
                               f"missing (e.g. {missing[0]}). {PUBLISHED}")
        if not files:
            raise DatasetError(f"{root}: no images selected (split {split!r})")
        try:
            self.resolution = int(resolution)
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"{root}: resolution must be an integer, got {resolution!r}") from exc
        if crop is not None:
            crop = tuple(int(c) for c in crop)
            if len(crop) != 3:
                raise DatasetError(f"{root}: crop must be (top, left, size), got {crop}")
        self.crop = crop
        self.image_dir = image_dir
        self.files = files
        self.attribute_names = tuple(names)
        self.attributes = attributes
        self.split = split
        self.factor_names = ("image",)
        self.factor_sizes = (len(files),)
        self.image_shape = (self.resolution, self.resolution, 3)
        self.source = f"{root} ({len(files)} images, split {split})"
        self.cache_path = None
        self._cached: np.ndarray | None = None
        if cache:
            key = json.dumps({"root": str(root.resolve()), "files": len(files), "first": files[0], "last": files[-1],
                              "resolution": self.resolution, "crop": crop, "split": split,
                              "mtime": (root / ATTRIBUTE_FILE).stat().st_mtime_ns})
            folder = Path(cache_dir).expanduser() if cache_dir else cache_root() / "celeba"
            self.cache_path = folder / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.npy"

    @staticmethod
    def _split_mask(path: Path, files: list[str], wanted: int) -> np.ndarray:
        if not path.is_file():
            raise DatasetError(f"{path}: partition file not found (needed for a split other than 'all'). {PUBLISHED}")
        partition = {}
        with open(path, "r", encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2 or parts[1] not in {"0", "1", "2"}:
                    raise DatasetError(f"{path}: line {number} should be 'filename 0|1|2', found {line.strip()!r}")
                partition[parts[0]] = int(parts[1])
        return np.array([partition.get(f, -1) == wanted for f in files], dtype=bool)

    # ------------------------------------------------------------------ images
    def load_image(self, index: int) -> np.ndarray:
        """Decode, crop and resize one image: uint8 (r, r, 3)."""
        from PIL import Image

        path = self.image_dir / self.files[int(index)]
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
                if self.crop is not None:
                    top, left, size = self.crop
                    if image.width < left + size or image.height < top + size:
                        raise DatasetError(f"{path}: image is {image.width}x{image.height}, too small for the "
                                           f"{size}x{size} crop at top {top}, left {left} (aligned CelebA is 178x218)")
                    image = image.crop((left, top, left + size, top + size))
                image = image.resize((self.resolution, self.resolution), Image.LANCZOS)
                return np.asarray(image, dtype=np.uint8)
        except DatasetError:
            raise
        except OSError as exc:
            raise DatasetError(f"{path}: unreadable image ({exc})") from exc

    def _build_cache(self) -> np.ndarray:
        path = self.cache_path
        shape = (len(self.files),) + self.image_shape
        if path.exists():
            try:
                cached = np.load(path, mmap_mode="r")
                if cached.shape == shape and cached.dtype == np.uint8:
                    return cached
            except (ValueError, OSError):
                pass
        with atomic_path(path, suffix=".tmp.npy") as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            for i in range(len(self.files)):
                out[i] = self.load_image(i)
            out.flush()
            del out
        return np.load(path, mmap_mode="r")

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_cached"] = None
        return state

    def _read_images(self, indices: np.ndarray) -> np.ndarray:
        if self.cache_path is not None:
            if self._cached is None:
                self._cached = self._build_cache()
            return read_rows(self._cached, indices)
        out = np.empty((len(indices),) + self.image_shape, dtype=np.uint8)
        for j, i in enumerate(indices):
            out[j] = self.load_image(int(i))
        return out

    def attributes_of(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """(n, 40) uint8 attributes in {0, 1} of the images at ``indices``."""
        return self.attributes[np.asarray(indices, dtype=np.int64)]

    def describe(self) -> dict:
        out = super().describe()
        out.update({"name": "celeba", "kind": "attributes (not a factor grid)", "split": self.split,
                    "num_attributes": len(self.attribute_names), "attribute_names": list(self.attribute_names),
                    "crop": None if self.crop is None else {"top": self.crop[0], "left": self.crop[1], "size": self.crop[2]}})
        return out


def load_celeba(path: str | Path, **options) -> AttributeDataset:
    return AttributeDataset(path, **options)
