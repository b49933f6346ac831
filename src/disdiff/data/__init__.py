"""Ground-truth datasets: real file formats and the built-in rendered ``shapes3d-synth``."""

from disdiff.data.base import DatasetError, GroundTruthDataset

__all__ = ["DatasetError", "GroundTruthDataset"]
