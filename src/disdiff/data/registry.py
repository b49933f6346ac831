"""Find and open a dataset by name or path: :func:`load_dataset`, :func:`list_datasets`.

Names (case-insensitive): ``shapes3d-synth`` (built in, the default everywhere), ``shapes3d``,
``mpi3d``, ``cars3d``, ``dsprites``, ``celeba``. A real dataset is looked for under ``data_dir``,
else ``$DISDIFF_DATA`` (there is no hard-coded location), in the places listed by
:func:`candidate_paths`. Alternatively pass a path: a file is recognised from its content
(bring-your-own ``.npz``/``.h5``, 3D Shapes, MPI3D, dSprites), a folder of ``car_*_mesh.mat``
files is Cars3D, and a folder with ``list_attr_celeba.txt`` is CelebA.

Every problem (missing or malformed file, unknown option) raises
:class:`disdiff.data.base.DatasetError` with the path, what was expected and found, and where
the dataset is published. Nothing is ever downloaded.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from disdiff.data import cars3d, celeba, custom, dsprites, mpi3d, shapes3d
from disdiff.data.base import DatasetError, GroundTruthDataset
from disdiff.data.common import resolve_data_dir
from disdiff.data.files import ArrayFile
from disdiff.data.synth import Shapes3DSynth

DEFAULT_DATASET = "shapes3d-synth"


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    description: str
    loader: Callable[..., GroundTruthDataset]
    published: str
    #: Paths relative to the data folder where the dataset is looked for, in order.
    locations: tuple[str, ...] = ()


def _load_synth(path: Any = None, **options: Any) -> GroundTruthDataset:
    return Shapes3DSynth(**options)


_MPI_LOCATIONS = tuple(loc for v in mpi3d.VARIANTS for loc in (
    f"mpi3d_{v}.npz", f"mpi3d/mpi3d_{v}.npz", f"mpi3d_{v}/mpi3d_{v}.npz")) + ("mpi_toy/mpi3d_toy.npz",)

DATASETS: dict[str, DatasetEntry] = {
    "shapes3d-synth": DatasetEntry("shapes3d-synth", "built-in rendered analogue of 3D Shapes (no download; 480,000 "
                                   "images at 64x64 by default)", _load_synth, "built in"),
    "shapes3d": DatasetEntry("shapes3d", "DeepMind 3D Shapes (3dshapes.h5 or 3dshapes.npz)", shapes3d.load_shapes3d,
                             shapes3d.PUBLISHED, tuple(f"{d}{f}" for f in shapes3d.FILE_NAMES
                                                       for d in ("", "shapes3d/", "3dshapes/", "3d-shapes/"))),
    "mpi3d": DatasetEntry("mpi3d", "MPI3D toy / realistic / real / real_complex (mpi3d_<variant>.npz)",
                          mpi3d.load_mpi3d, mpi3d.PUBLISHED, _MPI_LOCATIONS),
    "cars3d": DatasetEntry("cars3d", "Cars3D (folder of 183 car_*_mesh.mat files)", cars3d.load_cars3d,
                           cars3d.PUBLISHED, ("cars3d", "cars", "cars3d/cars", "data/cars", "")),
    "dsprites": DatasetEntry("dsprites", "dSprites (dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz)",
                             dsprites.load_dsprites, dsprites.PUBLISHED,
                             tuple(f"{d}{f}" for f in dsprites.FILE_NAMES for d in ("", "dsprites/", "dsprites-dataset/"))),
    "celeba": DatasetEntry("celeba", "CelebA aligned images + 40 attributes (for TAD; not a factor grid)",
                           celeba.load_celeba, celeba.PUBLISHED, ("celeba", "CelebA", "")),
}
ALIASES = {"synth": "shapes3d-synth", "shapes3d_synth": "shapes3d-synth", "3dshapes": "shapes3d", "3d-shapes": "shapes3d",
           "cars": "cars3d", "mpi3d_toy": "mpi3d", "mpi3d-toy": "mpi3d"}


def list_datasets() -> list[dict[str, str]]:
    """Name, description and source of every named dataset."""
    return [{"name": e.name, "description": e.description, "published": e.published} for e in DATASETS.values()]


def canonical_name(name: str) -> str | None:
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    return key if key in DATASETS else None


def candidate_paths(name: str, data_dir: Path, options: dict | None = None) -> list[Path]:
    entry = DATASETS[name]
    locations = list(entry.locations)
    if name == "mpi3d" and options and options.get("variant"):
        wanted = mpi3d.FILE_NAMES.get(options["variant"], "")
        locations = [loc for loc in locations if loc.endswith("/" + wanted) or loc == wanted]
    return [data_dir / loc if loc else data_dir for loc in locations]


def _found(name: str, path: Path) -> bool:
    if name == "cars3d":
        return path.is_dir() and any(path.glob(cars3d.FILE_PATTERN))
    if name == "celeba":
        return path.is_dir() and (path / celeba.ATTRIBUTE_FILE).is_file()
    return path.is_file()


def _check_options(loader: Callable, options: dict, what: str) -> None:
    """Reject options the loader does not take, listing the ones it does."""
    target = {_load_synth: Shapes3DSynth.__init__, celeba.load_celeba: celeba.AttributeDataset.__init__}.get(loader, loader)
    accepted = [n for n, p in inspect.signature(target).parameters.items()
                if n not in ("self", "path", "root") and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DatasetError(f"{what}: unknown option(s) {unknown}; accepted: {accepted}")


def _identify_file(path: Path) -> tuple[str, Callable[..., GroundTruthDataset]]:
    files = ArrayFile(path)
    try:
        keys = set(files.keys())
        lowered = path.name.lower()
        if custom.is_custom_file(files):
            return "custom", custom.load_custom
        # a published file name says which dataset it is (content is then validated by the loader)
        if "3dshapes" in lowered or "shapes3d" in lowered:
            return "shapes3d", shapes3d.load_shapes3d
        if "mpi3d" in lowered:
            return "mpi3d", mpi3d.load_mpi3d
        if "dsprites" in lowered or ("imgs" in keys and "latents_classes" in keys):
            return "dsprites", dsprites.load_dsprites
        if "images" in keys:
            count = files.shape("images")[0] if files.shape("images") else -1
            if "labels" in keys and files.shape("labels")[-1:] == (6,) or count == 480_000:
                return "shapes3d", shapes3d.load_shapes3d
            if count in (1_036_800, 460_800):
                return "mpi3d", mpi3d.load_mpi3d
        raise DatasetError(
            f"{path}: cannot tell which dataset this file holds (arrays: "
            + ", ".join(f"{k} {tuple(files.shape(k))} {files.dtype(k)}" for k in sorted(keys))
            + "). Recognised: 3D Shapes ('images' + 'labels' (M, 6), or a file named 3dshapes.*), MPI3D (a file named "
              "mpi3d_*.npz, or 'images' with 1036800/460800 rows), dSprites ('imgs' + 'latents_classes'), or a "
              f"bring-your-own file. {custom.FORMAT_HELP}")
    finally:
        files.close()


def _identify_folder(path: Path) -> tuple[str, Callable[..., GroundTruthDataset]]:
    if any(path.glob(cars3d.FILE_PATTERN)):
        return "cars3d", cars3d.load_cars3d
    if (path / celeba.ATTRIBUTE_FILE).is_file() or (path / celeba.IMAGE_FOLDER).is_dir():
        return "celeba", celeba.load_celeba
    raise DatasetError(f"{path}: a folder, but neither Cars3D ({cars3d.FILE_PATTERN} files) nor CelebA "
                       f"({celeba.IMAGE_FOLDER}/ and {celeba.ATTRIBUTE_FILE}); pass a dataset name or a file instead")


def load_dataset(name_or_path: str | os.PathLike = DEFAULT_DATASET, data_dir: str | os.PathLike | None = None,
                 **options: Any) -> GroundTruthDataset:
    """Open a dataset by name (see :data:`DATASETS`) or by path; ``options`` go to its loader.

    ``data_dir`` falls back to ``$DISDIFF_DATA``. Raises DatasetError for anything missing or malformed.
    """
    options = {k: v for k, v in options.items() if v is not None}
    name = canonical_name(str(name_or_path)) if not isinstance(name_or_path, Path) else None
    if name is not None:
        entry = DATASETS[name]
        _check_options(entry.loader, options, name)
        if name == "shapes3d-synth":
            return entry.loader(**options)
        folder = resolve_data_dir(data_dir)
        if folder is None:
            raise DatasetError(f"{name}: no data folder given; pass data_dir (--data-dir) or set DISDIFF_DATA to the folder "
                               f"holding it, or pass the file/folder path itself. {entry.published}")
        candidates = candidate_paths(name, folder, options)
        found = [p for p in candidates if _found(name, p)]
        if name == "mpi3d" and len({p.name for p in found}) > 1 and not options.get("variant"):
            raise DatasetError(f"{folder}: several MPI3D files found ({', '.join(str(p) for p in found)}); "
                               f"choose one with variant= ({', '.join(mpi3d.VARIANTS)}) or pass the file path")
        if not found:
            shown = ", ".join(str(p.relative_to(folder)) if p != folder else "." for p in candidates)
            raise DatasetError(f"{name}: not found under the data folder {folder} (looked for {shown}). {entry.published}")
        return entry.loader(found[0], **options)
    path = Path(name_or_path).expanduser()
    if not path.exists():
        known = ", ".join(DATASETS)
        raise DatasetError(f"{name_or_path}: neither a dataset name ({known}) nor an existing file or folder")
    kind, loader = _identify_folder(path) if path.is_dir() else _identify_file(path)
    _check_options(loader, options, f"{path} ({kind})")
    return loader(path, **options)
