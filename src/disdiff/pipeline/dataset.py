"""The quickstart's dataset: open it once, check it, and derive what the stage configs need.

Every problem is found here, before any training: a missing or unreadable file, a dataset too
small to hold out a validation split, a resolution the networks cannot take, a bad ``--units``.
Each raises :class:`QuickstartError` with one line naming the option and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from disdiff.data.base import DatasetError, GroundTruthDataset
from disdiff.pipeline.settings import DEFAULT_DATASET, RESOLUTION_MULTIPLE, QuickstartSettings

#: Units beyond the number of factors: the small config's pruned ICA start keeps 8 of 12 components for
#: shapes3d-synth's 6 factors, and the spare units take what would else be a second copy of a hue in a
#: factor's unit (docs/EXPERIMENTS.md M22-M24).
SPARE_UNITS = 2
#: Units of a dataset without factors (CelebA): the published configs' N = 6, plus the spare units.
UNITS_WITHOUT_FACTORS = 6 + SPARE_UNITS
#: Held-out validation images: a tenth of the dataset, at most this many.
MAX_VAL_SIZE = 256


class QuickstartError(ValueError):
    """Bad quickstart input, reported in one line before anything is trained."""


@dataclass(frozen=True)
class QuickstartData:
    """The opened dataset and what the pipeline derives from it."""

    spec: str  # what the stage configs' ``data.params.dataset`` holds: a name or an absolute path
    label: str  # how the report names it
    canonical: str | None  # the registry name (shapes3d-synth, shapes3d, ...), None for a path
    options: dict[str, Any]  # the loader options (resolution, factor_sizes, rgb)
    dataset: GroundTruthDataset
    units: int
    val_size: int

    @property
    def is_factor_grid(self) -> bool:
        return bool(getattr(self.dataset, "is_factor_grid", True))

    @property
    def num_images(self) -> int:
        return int(self.dataset.num_images)


def check_resolution(resolution: int) -> None:
    if resolution < RESOLUTION_MULTIPLE or resolution % RESOLUTION_MULTIPLE:
        raise QuickstartError(
            f"--resolution {resolution}: must be a positive multiple of {RESOLUTION_MULTIPLE} (the small networks halve "
            f"the images twice in the autoencoder and the latents twice in the UNet), e.g. 32 or 64")


def _spec_of(dataset: str) -> tuple[str, str | None, str]:
    """(config value, registry name or None, label) of ``--dataset``."""
    from disdiff.data.registry import canonical_name

    name = canonical_name(dataset)
    if name is not None:
        return name, name, name
    path = Path(dataset).expanduser()
    if not path.exists():
        from disdiff.data.registry import DATASETS

        raise QuickstartError(f"--dataset {dataset}: no such file or folder, and not a dataset name "
                              f"({', '.join(DATASETS)})")
    return str(path.resolve()), None, path.name


def _open(spec: str, canonical: str | None, data_dir: str | None, options: dict[str, Any]) -> GroundTruthDataset:
    from disdiff.data.registry import load_dataset

    try:
        return load_dataset(canonical if canonical is not None else Path(spec), data_dir=data_dir, **options)
    except DatasetError as exc:
        raise QuickstartError(f"--dataset: {exc}") from exc


def prepare_dataset(settings: QuickstartSettings) -> QuickstartData:
    """Open ``settings.dataset`` at the quickstart's resolution in 3 channels and check it."""
    check_resolution(settings.resolution)
    if settings.units is not None and settings.units < 1:
        raise QuickstartError(f"--units {settings.units}: must be at least 1")
    spec, canonical, label = _spec_of(settings.dataset or DEFAULT_DATASET)
    options: dict[str, Any] = {"resolution": settings.resolution}
    if settings.factor_sizes is not None:
        options["factor_sizes"] = list(settings.factor_sizes)
    dataset = _open(spec, canonical, settings.data_dir, options)
    if dataset.image_shape[2] == 1:  # grey: the networks take 3 channels
        options["rgb"] = True
        dataset = _open(spec, canonical, settings.data_dir, options)
    if dataset.image_shape[2] != 3:
        raise QuickstartError(f"--dataset {spec}: images have {dataset.image_shape[2]} channels; expected 1 (grey) or 3")
    val_size = min(MAX_VAL_SIZE, dataset.num_images // 10)
    if val_size < 1:
        raise QuickstartError(
            f"--dataset {spec}: {dataset.num_images} images are too few; the quickstart holds out a tenth of the "
            "dataset (at least one image) for validation, so it needs at least 10")
    grid = getattr(dataset, "is_factor_grid", True)
    units = settings.units or (len(dataset.factor_sizes) + SPARE_UNITS if grid else UNITS_WITHOUT_FACTORS)
    return QuickstartData(spec=spec, label=label, canonical=canonical, options=options, dataset=dataset,
                          units=int(units), val_size=int(val_size))
