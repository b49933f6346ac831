"""MPI3D (toy, realistic, real, real_complex) ``.npz`` files, key ``images``, memory-mapped.

Factors, row-major with the last fastest::

    object_color 6, object_shape 6, object_size 2, camera_height 3, background_color 3,
    horizontal_axis 40, vertical_axis 40                      (toy / realistic / real: 1,036,800)
    object_color 4, object_shape 4, ... (same otherwise)      (real_complex: 460,800)

The published files store ``images`` uncompressed, so they are memory-mapped straight from the
archive (12.7 GB is never loaded). The variant is told from the file: the image count singles out
``real_complex``; the file name (``mpi3d_toy``, ``mpi3d_realistic``, ``mpi3d_real``) tells the
others apart. When the name does not say, the factor structure is still known and the dataset
loads, reporting the variant as ambiguous; pass ``variant=`` to name it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from disdiff.data.base import DatasetError
from disdiff.data.common import ArrayDataset, cache_root, check_array, parse_factor_sizes
from disdiff.data.files import ArrayFile, check_readable_tail

FACTOR_NAMES = ("object_color", "object_shape", "object_size", "camera_height", "background_color",
                "horizontal_axis", "vertical_axis")
VARIANT_SIZES = {
    "toy": (6, 6, 2, 3, 3, 40, 40),
    "realistic": (6, 6, 2, 3, 3, 40, 40),
    "real": (6, 6, 2, 3, 3, 40, 40),
    "real_complex": (4, 4, 2, 3, 3, 40, 40),
}
VARIANTS = tuple(VARIANT_SIZES)
FILE_NAMES = {v: f"mpi3d_{v}.npz" for v in VARIANTS}
PUBLISHED = ("MPI3D is published by the Max Planck Institute for Intelligent Systems at "
             "https://github.com/rr-learning/disentanglement_dataset (files mpi3d_toy.npz, mpi3d_realistic.npz, "
             "mpi3d_real.npz, mpi3d_real_complex.npz); nothing is downloaded automatically.")


def variant_from_name(file_name: str) -> str | None:
    match = re.search(r"mpi3d_(real_complex|realistic|real|toy)(?![a-z])", file_name.lower())
    return match.group(1) if match else None


def detect_variant(count: int, file_name: str, variant: str | None) -> tuple[str, str]:
    """(variant, how it was told) from the image count, the file name and an explicit choice."""
    by_count = [v for v, s in VARIANT_SIZES.items() if int(np.prod(s)) == count]
    from_name = variant_from_name(file_name)
    if variant is not None:
        if variant not in by_count:
            raise DatasetError(f"MPI3D variant {variant!r} has {int(np.prod(VARIANT_SIZES[variant]))} images, the file has {count}")
        return variant, "given"
    if not by_count:
        raise DatasetError(f"{count} images, expected 1036800 (toy/realistic/real) or 460800 (real_complex)")
    if from_name is not None and from_name not in by_count:
        raise DatasetError(f"the file name says MPI3D variant {from_name!r} but {count} images mean "
                           f"{' or '.join(by_count)}; pass variant= explicitly")
    if by_count == ["real_complex"]:
        return "real_complex", "image count"
    if from_name is not None:
        return from_name, "file name"
    return "ambiguous (toy, realistic or real: same factors; pass variant= to name it)", "image count"


def load_mpi3d(path: str | Path, variant: str | None = None, factor_sizes: Sequence[int] | None = None,
               resolution: int | None = None, cache_dir: str | Path | None = None) -> ArrayDataset:
    path = Path(path)
    if variant is not None and variant not in VARIANTS:
        raise DatasetError(f"{path}: unknown MPI3D variant {variant!r}; expected one of {list(VARIANTS)}")
    files = ArrayFile(path, extract_dir=Path(cache_dir) if cache_dir else cache_root() / "extracted")
    if "images" not in files:
        raise DatasetError(f"{path}: no array 'images' (found: {', '.join(files.keys()) or 'none'}); expected 'images' "
                           f"(1036800, 64, 64, 3) uint8. {PUBLISHED}")
    shape = files.shape("images")
    count = shape[0] if shape else -1
    if factor_sizes is not None:
        sizes = parse_factor_sizes(factor_sizes, len(FACTOR_NAMES), str(path))
        from_name = variant_from_name(path.name)
        found = variant or from_name or "custom"
        how = "given" if variant else ("file name" if from_name else "factor_sizes option")
    else:
        try:
            found, how = detect_variant(count, path.name, variant)
        except DatasetError as exc:
            raise DatasetError(f"{path}: {exc} (images {tuple(shape)} {files.dtype('images')}). {PUBLISHED}") from None
        sizes = VARIANT_SIZES.get(found, VARIANT_SIZES["toy"])
    images = files.lazy("images")
    total = int(np.prod(sizes))
    check_array(images, str(path), "images", (total, 64, 64, 3), "uint8",
                f"MPI3D variant {found} has {total} images ({dict(zip(FACTOR_NAMES, sizes))}). {PUBLISHED}")
    check_readable_tail(images, str(path), "images")
    return ArrayDataset(
        factor_names=FACTOR_NAMES, factor_sizes=sizes, opener=files.opener("images"), storage=images,
        stored_image_shape=images.shape[1:], source=f"{path} (MPI3D variant: {found})", resolution=resolution,
        info={"name": "mpi3d", "variant": found, "variant_from": how, "format": files.kind},
    )
