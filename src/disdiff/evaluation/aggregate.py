"""Several seeds of one experiment -> mean +- std tables in the paper's layout.

Each path given is either a *run* (a folder with ``metrics/*.json``, or a metrics folder itself)
or a *parent* folder whose sub-folders are runs (the seeds of one experiment). Runs given
directly form one experiment; each parent folder forms one experiment named after it. From every
run the record at the last step (or at ``step``) is taken.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from disdiff.evaluation import tables
from disdiff.evaluation.representations import RepresentationError


def metrics_folder(path: Path) -> Path | None:
    """The folder holding a run's result records, or None if ``path`` is not a run."""
    for candidate in (path / "metrics", path):
        if candidate.is_dir() and any(tables.read_record(p) is not None for p in candidate.glob("*.json")):
            return candidate
    return None


def group_runs(paths: Sequence[str | Path]) -> list[tuple[str, list[Path]]]:
    """[(experiment name, [metrics folders of its seed runs])]."""
    direct: list[Path] = []
    groups: list[tuple[str, list[Path]]] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise RepresentationError(f"{path}: not a folder (expected a run folder or a folder of seed runs)")
        folder = metrics_folder(path)
        if folder is not None:
            direct.append(folder)
            continue
        runs = [f for f in (metrics_folder(sub) for sub in sorted(path.iterdir()) if sub.is_dir()) if f is not None]
        if not runs:
            raise RepresentationError(f"{path}: no evaluated runs found (no metrics/*.json here or in its sub-folders); "
                                      "run `disdiff evaluate RUN` first")
        groups.append((path.resolve().name, runs))
    if direct:
        names = {f.parent.name if f.name == "metrics" else f.name for f in direct}
        parents = {(f.parent.parent if f.name == "metrics" else f.parent).resolve().name for f in direct}
        name = parents.pop() if len(parents) == 1 else "experiment"
        groups.insert(0, (name if len(names) > 1 else names.pop(), direct))
    return groups


def aggregate(paths: Sequence[str | Path], step: int | None = None) -> tuple[str, list[tuple[str, list[dict]]]]:
    """Markdown mean +- std table and the records used, one row per experiment."""
    groups = []
    for name, folders in group_runs(paths):
        records = []
        for folder in folders:
            record = tables.pick_record(tables.collect_records(folder), step)
            if record is None:
                raise RepresentationError(f"{folder}: no result at step {step}")
            records.append(record)
        groups.append((name, records))
    return tables.aggregate_markdown(groups), groups
