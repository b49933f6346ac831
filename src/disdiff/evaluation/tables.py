"""Tables of evaluation results: per-run CSV/markdown over steps, and mean +- std over seeds."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from disdiff.metrics import METRICS, PAPER_METRICS
from disdiff.metrics.factor_vae import vote_shares
from disdiff.utils.io import atomic_write_text

#: Column order of the paper's tables (and of every table written here).
PAPER_COLUMNS = tuple(METRICS[m].title for m in PAPER_METRICS)  # FactorVAE, DCI, MIG, beta-VAE


def read_record(path: str | Path) -> dict | None:
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "metrics" in record else None


def collect_records(metrics_dir: str | Path) -> list[dict]:
    """All result records in a metrics folder, sorted by step (records without a step last)."""
    records = []
    for path in sorted(Path(metrics_dir).glob("*.json")):
        record = read_record(path)
        if record is not None:
            record.setdefault("_file", str(path))
            records.append(record)
    return sorted(records, key=lambda r: (r.get("step") is None, r.get("step") or 0, r.get("_file", "")))


def flatten_scores(record: dict) -> dict[str, float]:
    """``{"dci.disentanglement": 0.8, ...}`` for every scalar score of a record."""
    out = {}
    for metric, scores in record.get("metrics", {}).items():
        for key, value in scores.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) or value is None:
                out[f"{metric}.{key}"] = value
    return out


def factor_vae_votes(record: dict) -> tuple[list[str], np.ndarray, str] | None:
    """(factor names, vote shares factors x dimensions, column word) of a record's FactorVAE votes.

    The column word is "unit" when the scored dimensions are the units (the per-unit reduction, or
    one dimension per unit), otherwise "dimension". None when the record has no votes (older
    records, FactorVAE not run, or no active dimension).
    """
    votes = record.get("metrics", {}).get("factor_vae", {}).get("eval_votes")
    if not votes:
        return None
    shares = vote_shares(votes)
    names = record.get("dataset", {}).get("factor_names") or [f"factor {k}" for k in range(len(shares))]
    column = "unit" if record.get("representation_dims") == record.get("num_units") else "dimension"
    return list(names), shares, column


def headline_columns(records: Sequence[dict]) -> list[str]:
    present = []
    for record in records:
        for key in record.get("headline", {}):
            if key not in present:
                present.append(key)
    ordered = [c for c in PAPER_COLUMNS if c in present]
    return ordered + [c for c in present if c not in ordered]


def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{value:.{digits}f}"


def runs_csv(records: Sequence[dict]) -> str:
    columns: list[str] = []
    for record in records:
        for key in flatten_scores(record):
            if key not in columns:
                columns.append(key)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["step", "representations"] + columns)
    for record in records:
        flat = flatten_scores(record)
        writer.writerow([record.get("step"), record.get("representations", "")]
                        + ["" if flat.get(c) is None else repr(float(flat[c])) if isinstance(flat[c], float) else flat[c]
                           for c in columns])
    return buffer.getvalue()


def runs_markdown(records: Sequence[dict], title: str = "") -> str:
    columns = headline_columns(records)
    lines = [f"# {title}", ""] if title else []
    lines.append("| step | " + " | ".join(columns) + " |")
    lines.append("|---:|" + "---:|" * len(columns))
    for record in records:
        values = record.get("headline", {})
        step = record.get("step")
        lines.append(f"| {step if step is not None else Path(record.get('representations', '?')).stem} | "
                     + " | ".join(_fmt(values.get(c)) for c in columns) + " |")
    if records:
        lines += ["", "FactorVAE and beta-VAE: eval accuracy; DCI: disentanglement; MIG: discrete MIG. "
                  "All scores are in metrics.csv and the per-step JSON files."]
    return "\n".join(lines) + "\n"


def write_run_tables(metrics_dir: str | Path, title: str = "") -> list[dict]:
    """(Re)write ``metrics.csv`` and ``metrics.md`` in ``metrics_dir`` from its JSON records."""
    metrics_dir = Path(metrics_dir)
    records = collect_records(metrics_dir)
    atomic_write_text(metrics_dir / "metrics.csv", runs_csv(records))
    atomic_write_text(metrics_dir / "metrics.md", runs_markdown(records, title))
    return records


# ------------------------------------------------------------------------------ seeds
def pick_record(records: Sequence[dict], step: int | None = None) -> dict | None:
    """The record at ``step`` (None: the last step)."""
    if not records:
        return None
    if step is None:
        with_step = [r for r in records if r.get("step") is not None]
        return with_step[-1] if with_step else records[-1]
    for record in records:
        if record.get("step") == step:
            return record
    return None


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, standard deviation over seeds (population, ddof=0) and count, ignoring missing values."""
    arr = np.asarray([v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))], dtype=float)
    if arr.size == 0:
        return float("nan"), float("nan"), 0
    return float(arr.mean()), float(arr.std()), int(arr.size)


def aggregate_markdown(groups: Sequence[tuple[str, Sequence[dict]]], digits: int = 3) -> str:
    """Mean +- std table, one row per experiment (a group of seed runs' records), paper column order."""
    all_records = [r for _, records in groups for r in records]
    columns = headline_columns(all_records)
    lines = ["| experiment | seeds | step | " + " | ".join(columns) + " |",
             "|---|---:|---:|" + "---:|" * len(columns)]
    for name, records in groups:
        steps = sorted({r.get("step") for r in records if r.get("step") is not None})
        step_text = ",".join(str(s) for s in steps) if steps else "-"
        cells = []
        for column in columns:
            mean, std, count = mean_std(r.get("headline", {}).get(column) for r in records)
            cells.append("-" if count == 0 else f"{mean:.{digits}f} ± {std:.{digits}f}")
        lines.append(f"| {name} | {len(records)} | {step_text} | " + " | ".join(cells) + " |")
    lines += ["", "mean ± std over seeds (std with ddof=0). FactorVAE and beta-VAE: eval accuracy; "
              "DCI: disentanglement; MIG: discrete MIG."]
    return "\n".join(lines) + "\n"
