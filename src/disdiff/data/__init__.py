"""Ground-truth datasets: real file formats and the built-in rendered ``shapes3d-synth``.

``load_dataset(name_or_path, data_dir=None, **options)`` and ``list_datasets()`` live in
:mod:`disdiff.data.registry` (re-exported here lazily); the Lightning data module is
:class:`disdiff.data.datamodule.GroundTruthDataModule`. Formats are described in docs/DATASETS.md.
"""

from disdiff.data.base import DatasetError, GroundTruthDataset

__all__ = ["DatasetError", "GroundTruthDataset", "load_dataset", "list_datasets"]


def __getattr__(name: str):
    if name in ("load_dataset", "list_datasets"):
        from disdiff.data import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'disdiff.data' has no attribute {name!r}")
