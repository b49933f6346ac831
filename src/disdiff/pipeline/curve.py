"""The metric curve: which stage-3 checkpoints to evaluate, and how each point was evaluated.

Stage 3 keeps a checkpoint every ``lightning.checkpoint.every_n_train_steps`` steps plus the final
one. The curve evaluates the final checkpoint at the published settings and up to
``points - 1`` earlier ones, spread evenly over the steps, with cheaper settings (fewer DCI
points): :func:`describe_settings` names the difference in the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from disdiff.evaluation.protocol import parse_setting, resolve_settings
from disdiff.utils.checkpoints import STEP_FILE


def step_checkpoints(checkpoint_dir: Path) -> dict[int, Path]:
    """``{step: checkpoint}`` of the ``step=N.ckpt`` files in ``checkpoint_dir``."""
    found = {}
    for path in Path(checkpoint_dir).glob("step=*.ckpt"):
        match = STEP_FILE.match(path.name)
        if match:
            found[int(match.group(1))] = path
    return found


def select_curve_steps(steps: list[int], points: int) -> list[int]:
    """Up to ``points`` of ``steps``: the last one and the ones nearest to ``k/points`` of it (k = 1..points-1).

    Steps of 0 (an untrained model) are never picked.
    """
    candidates = sorted(s for s in set(steps) if s > 0)
    if not candidates:
        return []
    final = candidates[-1]
    chosen = {final}
    earlier = candidates[:-1]
    for k in range(1, max(points, 1)):
        if not earlier:
            break
        target = final * k / points
        best = min(earlier, key=lambda s: (abs(s - target), s))
        chosen.add(best)
        earlier.remove(best)
    return sorted(chosen)


def parse_settings(pairs: list[str] | None) -> dict[str, dict[str, Any]]:
    """``["dci.num_train=2000"]`` -> ``{"dci": {"num_train": 2000}}``."""
    out: dict[str, dict[str, Any]] = {}
    for pair in pairs or []:
        metric, key, value = parse_setting(pair)
        out.setdefault(metric, {})[key] = value
    return out


def merge_settings(*blocks: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for block in blocks:
        for metric, values in block.items():
            merged.setdefault(metric, {}).update(values)
    return merged


def dci_sample_fraction(cheaper: Mapping[str, Mapping[str, Any]], final: Mapping[str, Mapping[str, Any]]) -> float:
    """The share of DCI's sample points (``num_train + num_test``) that the ``cheaper`` settings keep of the
    ``final`` ones (each a ``{metric: {key: value}}`` override of the published settings).

    Why: DCI's per-factor regressors dominate an evaluation's time, so before any earlier checkpoint of
    the metric curve has been timed, its evaluation is estimated as the final's times this share. That is
    a slight underestimate: M20 (docs/EXPERIMENTS.md) took 16 s per earlier point against 57 s for the
    final, 0.28, where the share is 0.2; the first measured point replaces the estimate."""
    def points(settings: Mapping[str, Mapping[str, Any]]) -> int:
        dci = resolve_settings(["dci"], {"dci": dict(settings.get("dci", {}))})["dci"]
        return int(dci["num_train"]) + int(dci["num_test"])

    return min(1.0, points(cheaper) / max(points(final), 1))


def describe_settings(record: Mapping[str, Any]) -> str:
    """"published settings", or the settings of ``record`` that differ from them (e.g. ``dci.num_train 2000``)."""
    used = record.get("settings") or {}
    published = resolve_settings(list(used))
    differences = []
    for metric, values in sorted(used.items()):
        for key, value in sorted(values.items()):
            if published.get(metric, {}).get(key) != value:
                differences.append(f"{metric}.{key} {value} (published {published[metric][key]})")
    return "published settings" if not differences else "cheaper: " + ", ".join(differences)
