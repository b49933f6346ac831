"""Packaged stage-1 and stage-2 checkpoints, and the decision which stages the quickstart trains.

The package may ship, for ``shapes3d-synth`` at 32x32, a stage-1 autoencoder checkpoint and a
stage-2 LDM checkpoint made with this project's own commands (``pretrained/shapes3d-synth-32/``:
``stage1.ckpt``, ``stage2.ckpt``, and a ``README.md`` with the command and log that trained them).
The default quickstart on that dataset and resolution then spends its whole training budget on
stage 3, which starts from the packaged stage 2 (the stage-2 checkpoint carries its first stage).
``--from-scratch``, any other dataset or resolution, or missing files train all three stages.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from disdiff.pipeline.settings import STAGES, QuickstartSettings

#: Environment variable naming another folder of stage-1/2 checkpoints (used by the tests).
PRETRAINED_ENV = "DISDIFF_PRETRAINED_DIR"
PACKAGED_DATASET = "shapes3d-synth"
PACKAGED_RESOLUTION = 32
STAGE_FILES = {"autoencoder": "stage1.ckpt", "ldm": "stage2.ckpt"}


def default_pretrained_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "pretrained" / f"{PACKAGED_DATASET}-{PACKAGED_RESOLUTION}"


def pretrained_dir(settings: QuickstartSettings) -> Path:
    if settings.pretrained_dir is not None:
        return Path(settings.pretrained_dir)
    env = os.environ.get(PRETRAINED_ENV)
    return Path(env).expanduser() if env else default_pretrained_dir()


@dataclass(frozen=True)
class StagePlan:
    """Which stages train, and where stage 3's stage-2 checkpoint comes from."""

    trained: tuple[str, ...]
    pretrained_dir: Path | None = None  # set when stages 1-2 are the packaged checkpoints
    notice: str | None = None  # one line for the console when the packaged files were expected but absent

    @property
    def uses_pretrained(self) -> bool:
        return self.pretrained_dir is not None

    @property
    def stage2_checkpoint(self) -> Path | None:
        return self.pretrained_dir / STAGE_FILES["ldm"] if self.pretrained_dir is not None else None

    def describe(self) -> str:
        if self.pretrained_dir is None:
            return "all three stages trained from scratch"
        return f"stages 1-2 from the packaged checkpoints in {self.pretrained_dir}; stage 3 trained"

    def as_json(self) -> dict:
        return {"trained": list(self.trained),
                "pretrained_dir": str(self.pretrained_dir) if self.pretrained_dir is not None else None}


def plan_stages(settings: QuickstartSettings, canonical_dataset: str | None) -> StagePlan:
    """Packaged stages 1-2 for the default dataset and resolution unless ``--from-scratch``."""
    applies = canonical_dataset == PACKAGED_DATASET and settings.resolution == PACKAGED_RESOLUTION
    if settings.from_scratch or not applies:
        return StagePlan(STAGES)
    folder = pretrained_dir(settings)
    missing = [name for name in STAGE_FILES.values() if not (folder / name).is_file()]
    if missing:
        return StagePlan(STAGES, notice=f"packaged stage-1/2 checkpoints not found ({', '.join(missing)} missing in "
                                        f"{folder}): training all three stages from scratch")
    return StagePlan(("disdiff",), pretrained_dir=folder)


def file_digest(path: Path) -> str:
    """First 16 hex digits of the file's SHA-256 (names the exact packaged weights in the report)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
