"""The paper's evaluation protocol for one representations file (spec 6.2).

1. Read the latents (M, N, d) of the whole dataset and check them (M equals the dataset size,
   no NaN/inf).
2. Reduce every unit to one number by PCA (``reduction="pca"``, default) or keep every dimension
   (``"none"``).
3. Score with each metric, every metric getting a fresh ``np.random.RandomState(seed)``
   (seed 0) and the published settings unless overridden. Observations are canonical indices
   (:mod:`disdiff.evaluation.views`), so no image is read.

For datasets that are not factor grids but carry binary attributes (CelebA) the metric is TAD on
the raw dimensions (``reduction="none"``), as the NashAE protocol does.
"""

from __future__ import annotations

import copy
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from disdiff.evaluation.representations import (
    Representations,
    check_matches_dataset,
    load_representations,
    reduce_units,
)
from disdiff.evaluation.views import IndexObservations, LatentLookup
from disdiff.metrics import METRICS, PAPER_METRICS, MetricError
from disdiff.metrics import probe as probe_metric
from disdiff.metrics import tad as tad_metric
from disdiff.utils.io import atomic_write_json

ALL_METRICS = tuple(METRICS) + ("tad",)
SCHEMA_VERSION = 1


def default_settings(metrics: Iterable[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for name in metrics:
        if name == "tad":
            out[name] = dict(tad_metric.DEFAULTS)
        elif name in METRICS:
            out[name] = dict(METRICS[name].defaults)
        else:
            raise MetricError(f"unknown metric {name!r}; choose from {', '.join(ALL_METRICS)}")
    return out


def resolve_settings(metrics: Iterable[str], overrides: Mapping[str, Mapping[str, Any]] | None = None
                     ) -> dict[str, dict[str, Any]]:
    """Published settings of ``metrics`` updated with ``overrides`` ({metric: {key: value}}); unknown keys fail."""
    metrics = list(metrics)
    settings = default_settings(metrics)
    for name, values in (overrides or {}).items():
        if name == "probe":  # the linear probe's own settings (not a metric): checked here, used by probe_code
            unknown = [key for key in values if key not in probe_metric.DEFAULTS]
            if unknown:
                raise MetricError(f"probe: unknown setting(s) {unknown}; accepted: {', '.join(probe_metric.DEFAULTS)}")
            continue
        if name not in settings:
            if name in ALL_METRICS:
                continue  # settings of a metric that is not being run
            raise MetricError(f"settings given for unknown metric {name!r}; choose from {', '.join(ALL_METRICS)}")
        for key, value in values.items():
            if key not in settings[name]:
                raise MetricError(f"{name}: unknown setting {key!r}; accepted: {', '.join(settings[name])}")
            settings[name][key] = value
    return settings


def parse_setting(text: str) -> tuple[str, str, Any]:
    """``"dci.num_train=2000"`` -> ("dci", "num_train", 2000) (ints, floats, booleans, none parsed)."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise MetricError(f"bad setting {text!r}; expected METRIC.KEY=VALUE, e.g. dci.num_train=2000")
    key, value = text.split("=", 1)
    metric, name = key.split(".", 1)
    lowered = value.strip().lower()
    parsed: Any
    if lowered in ("true", "false"):
        parsed = lowered == "true"
    elif lowered in ("none", "null"):
        parsed = None
    else:
        try:
            parsed = int(value)
        except ValueError:
            try:
                parsed = float(value)
            except ValueError:
                parsed = value
    return metric.strip(), name.strip(), parsed


@dataclass
class DatasetInfo:
    """What the evaluation needs from a dataset: factor sizes (grids) or attributes (CelebA). Picklable."""

    label: str
    num_images: int
    factor_names: tuple[str, ...] = ()
    factor_sizes: tuple[int, ...] = ()
    attributes: np.ndarray | None = None
    attribute_names: tuple[str, ...] = ()
    describe: dict = field(default_factory=dict)

    @property
    def is_factor_grid(self) -> bool:
        return self.attributes is None

    @classmethod
    def of(cls, dataset, label: str | None = None) -> "DatasetInfo":
        label = label or getattr(dataset, "source", "") or type(dataset).__name__
        desc = {"name": dataset.describe().get("name", type(dataset).__name__), "num_images": int(dataset.num_images)}
        if getattr(dataset, "is_factor_grid", True) is False:
            attributes = getattr(dataset, "attributes", None)
            if attributes is None:
                raise MetricError(f"{label}: not a factor grid and has no attributes; nothing to evaluate")
            names = tuple(getattr(dataset, "attribute_names", ()) or ())
            desc["num_attributes"] = int(np.asarray(attributes).shape[1])
            return cls(label, int(dataset.num_images), attributes=np.asarray(attributes), attribute_names=names,
                       describe=desc)
        desc.update({"factor_names": list(dataset.factor_names), "factor_sizes": [int(s) for s in dataset.factor_sizes]})
        view = IndexObservations(dataset.factor_sizes, dataset.factor_names)
        probe = view.sample_factors(256, np.random.RandomState(0))
        if not np.array_equal(np.asarray(dataset.index_of(probe)), view.sample_observations_from_factors(probe)):
            raise MetricError(f"{label}: its canonical order is not row-major over the factors, which the "
                              "index view of precomputed representations assumes")
        return cls(label, int(dataset.num_images), tuple(dataset.factor_names),
                   tuple(int(s) for s in dataset.factor_sizes), describe=desc)

    def default_metrics(self) -> tuple[str, ...]:
        return PAPER_METRICS if self.is_factor_grid else ("tad",)

    def default_reduction(self) -> str:
        return "pca" if self.is_factor_grid else "none"


def score_representation(representation: np.ndarray, info: DatasetInfo, metrics: Iterable[str],
                         settings: Mapping[str, Mapping[str, Any]] | None = None, seed: int = 0,
                         n_jobs: int = 1) -> tuple[dict[str, dict], dict[str, float]]:
    """Scores of a reduced representation (M, J) and the seconds each metric took.

    With ``n_jobs != 1`` DCI (whose tree fits are most of the work) starts first in a background
    thread, with ``n_jobs`` parallel fits, and the other metrics run meanwhile in this thread. Each
    metric has its own ``RandomState(seed)`` and only reads the representation, so the values do
    not depend on the schedule; the seconds of overlapping metrics then overlap too.
    """
    metrics = list(metrics)
    settings = resolve_settings(metrics, settings)
    if representation.shape[0] != info.num_images:
        raise MetricError(f"representation has {representation.shape[0]} rows, dataset {info.label} {info.num_images}")
    view = IndexObservations(info.factor_sizes, info.factor_names, info.label) if info.is_factor_grid else None
    lookup = LatentLookup(representation)

    def run(name: str) -> tuple[dict, float]:
        start = time.perf_counter()
        options = dict(settings[name])
        if name == "tad":
            if info.attributes is None:
                raise MetricError("TAD needs a dataset with binary attributes (CelebA)")
            result = tad_metric.compute_tad(representation, info.attributes,
                                            attribute_names=info.attribute_names or None, **options)
        else:
            if view is None:
                raise MetricError(f"{name} needs a dataset with ground-truth factors; {info.label} has attributes only "
                                  "(use --metrics tad)")
            if name == "dci" and options.get("n_jobs", 1) == 1 and n_jobs != 1:
                options["n_jobs"] = n_jobs
            result = METRICS[name].compute(view, lookup, np.random.RandomState(seed), **options)
        return result, round(time.perf_counter() - start, 3)

    background = None
    if n_jobs != 1 and "dci" in metrics and len(metrics) > 1 and view is not None:
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dci")
        background = pool.submit(run, "dci")
        pool.shutdown(wait=False)
    done = {name: run(name) for name in metrics if not (background is not None and name == "dci")}
    if background is not None:
        done["dci"] = background.result()
    scores = {name: done[name][0] for name in metrics}
    seconds = {name: done[name][1] for name in metrics}
    return scores, seconds


def headline(scores: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """The single number the paper reports per metric, keyed by its title (FactorVAE, DCI, ...)."""
    out = {}
    for name, values in scores.items():
        if name == "tad":
            out["TAD"] = values["tad"]
            out["Attrs"] = values["attributes_captured"]
        elif name in METRICS and METRICS[name].headline in values:
            out[METRICS[name].title] = values[METRICS[name].headline]
    return out


def evaluation_record(info: DatasetInfo, metrics: list[str], settings: dict, reduction: str,
                      seed: int) -> dict:
    """The parts of a result that decide whether an existing result can be reused."""
    return {"schema": SCHEMA_VERSION, "dataset": info.describe, "metrics_run": list(metrics),
            "settings": {m: {k: v for k, v in s.items() if k not in ("n_jobs", "backend", "chunk_size")} for m, s in settings.items()},
            "reduction": reduction, "seed": seed}


def evaluate_representations(reps: Representations, info: DatasetInfo, metrics: Iterable[str] | None = None,
                             settings: Mapping[str, Mapping[str, Any]] | None = None, reduction: str | None = None,
                             seed: int = 0, n_jobs: int = 1, probe: bool = True) -> dict:
    """Full result record (JSON-ready) for loaded representations.

    With ``probe`` (default) and a factor grid, the record also holds ``"probe"``: linear-probe
    accuracies of the full, unreduced code per factor and per unit (:func:`probe_code`), with
    ``settings["probe"]`` (keys of :data:`disdiff.metrics.probe.DEFAULTS`) over the defaults.
    """
    metrics = list(metrics) if metrics is not None else list(info.default_metrics())
    reduction = reduction or info.default_reduction()
    resolved = resolve_settings(metrics, settings)
    check_matches_dataset(reps, info.num_images, info.label)
    start = time.perf_counter()
    representation = reduce_units(reps.latents, reduction)
    reduce_seconds = round(time.perf_counter() - start, 3)
    scores, seconds = score_representation(representation, info, metrics, resolved, seed, n_jobs)
    probe_result = None
    if probe and info.is_factor_grid:
        start_probe = time.perf_counter()
        probe_result = probe_code(reps.latents, info, seed, settings=(settings or {}).get("probe"))
        seconds["probe"] = round(time.perf_counter() - start_probe, 3)
    record = evaluation_record(info, metrics, resolved, reduction, seed)
    record.update({
        "step": reps.step, "representations": str(reps.path), "num_rows": reps.num_rows, "num_units": reps.num_units,
        "unit_size": reps.unit_size, "representation_dims": int(representation.shape[1]),
        "metrics": _jsonable(scores), "headline": headline(scores),
        "seconds": {"reduce": reduce_seconds, **seconds, "total": round(time.perf_counter() - start, 3)},
    })
    if probe_result is not None:
        record["probe"] = _jsonable(probe_result)
    return record


def probe_code(latents: np.ndarray, info: DatasetInfo, seed: int = 0,
               settings: Mapping[str, Any] | None = None) -> dict:
    """Linear-probe accuracies (:mod:`disdiff.metrics.probe`) of the full code ``latents`` (M, N, d),
    with the settings used (defaults updated with ``settings``) under ``"settings"``."""
    latents = np.asarray(latents)
    if latents.ndim != 3:
        raise MetricError(f"probe needs latents shaped (M, N, d), got {latents.shape}")
    options = {**probe_metric.DEFAULTS, **(settings or {})}
    view = IndexObservations(info.factor_sizes, info.factor_names, info.label)
    flat = latents.reshape(latents.shape[0], -1)
    result = probe_metric.compute(view, LatentLookup(flat), np.random.RandomState(seed), num_units=latents.shape[1],
                                  factor_names=info.factor_names, **options)
    return {**result, "settings": dict(options)}  # the record says how the probe was run


def evaluate_file(path: str | Path, info: DatasetInfo, out_json: str | Path | None = None, **options) -> dict:
    """Load, check and score one representations file; write the record to ``out_json`` (atomically)."""
    num_units = options.pop("num_units", None)
    reps = load_representations(path, num_units=num_units)
    record = evaluate_representations(reps, info, **options)
    if out_json is not None:
        atomic_write_json(out_json, record)
    return record


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return copy.copy(obj)
