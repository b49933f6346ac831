"""``disdiff evaluate``: disentanglement metrics of exported representations (the paper's protocol).

    disdiff evaluate RUN_DIR [--dataset NAME_OR_PATH] [-p PROCESSES] [--watch] [--metrics ...] [--set M.KEY=VALUE ...]
    disdiff evaluate FILE.npz [--dataset NAME_OR_PATH] [--out FILE.json | DIR]
    disdiff evaluate --aggregate RUN [RUN ...] | PARENT_OF_SEED_RUNS [--step STEP] [--out TABLE.md]
    disdiff evaluate --fid REAL.npz GENERATED.npz --inception-weights INCEPTION.pt [--out FILE.json]

Representations are ``.npz`` files with ``latents`` (M, N, d) in the dataset's canonical order
(``disdiff export`` writes them to ``<run>/representations/step=XXXXXXXX.npz``). M must equal the
dataset size. Each unit is reduced to one number by PCA (``--reduce none`` keeps all dimensions),
then beta-VAE, FactorVAE, DCI and MIG are computed at the published settings, each with a fresh
RandomState(0). No image is read: observations are dataset indices. For CelebA the metric is TAD
on the raw dimensions.

A run directory gets ``<run>/metrics/step=XXXXXXXX.json`` per checkpoint plus ``metrics.csv``,
``metrics.md`` and ``metrics_<name>.png``. Finished checkpoints are skipped (``--force`` redoes
them); ``-p`` evaluates several checkpoints in parallel processes; a failing checkpoint is
reported and the others go on. ``--watch`` keeps following a training run and stops after
``--idle-timeout`` seconds without a new checkpoint.

Without ``--dataset`` the run's training dataset (from ``<run>/configs/config.yaml``) is used,
else the ``dataset`` recorded in the npz.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from disdiff.cli.errors import UserError

REPRESENTATION_FOLDERS = ("representations", "dis_repre")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="disentanglement metrics of exported representations",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*", metavar="PATH",
                        help="a run directory or representations .npz (with --aggregate: runs or parents of seed runs; "
                             "with --fid: two image/statistics .npz files)")
    parser.add_argument("--dataset", default=None, metavar="NAME_OR_PATH",
                        help="dataset name (shapes3d-synth, shapes3d, mpi3d, cars3d, dsprites, celeba) or file/folder; "
                             "default: the run's training dataset")
    parser.add_argument("--dataset-option", "--option", action="append", default=[], metavar="KEY=VALUE",
                        dest="dataset_options", help="dataset option in YAML syntax (e.g. factor_sizes=[4,4,4,3,4,5]); repeatable")
    parser.add_argument("--data-dir", default=None, help="folder holding the real datasets (default: $DISDIFF_DATA)")
    parser.add_argument("--metrics", default=None,
                        help="comma-separated metrics: beta_vae, factor_vae, dci, mig, sap, modularity, tad "
                             "(default: beta_vae,factor_vae,dci,mig; tad for CelebA)")
    parser.add_argument("--set", action="append", default=[], metavar="METRIC.KEY=VALUE", dest="settings",
                        help="override a metric setting, e.g. dci.num_train=2000 or factor_vae.argmin_index=active; repeatable")
    parser.add_argument("--reduce", choices=["pca", "none"], default=None,
                        help="per-unit PCA to one component (default, as the paper) or keep all dimensions")
    parser.add_argument("--units", type=int, default=None, help="split (M, D) latents into this many units")
    parser.add_argument("--no-probe", dest="probe", action="store_false",
                        help="skip the linear probe of the full code (a few seconds to a minute; on by default)")
    parser.add_argument("--seed", type=int, default=0, help="RandomState seed given fresh to every metric (default 0)")
    parser.add_argument("-p", "--processes", type=int, default=1, help="checkpoints evaluated in parallel processes")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads per checkpoint (DCI's tree fits; default: CPU cores / processes)")
    parser.add_argument("--force", action="store_true", help="recompute checkpoints that already have results")
    parser.add_argument("--out", default=None, help="output: JSON file or folder (single npz), metrics folder (run), "
                                                    "markdown file (--aggregate), JSON file (--fid)")
    parser.add_argument("--watch", action="store_true", help="keep evaluating new checkpoints of a training run")
    parser.add_argument("--poll", type=float, default=30.0, help="seconds between scans with --watch (default 30)")
    parser.add_argument("--idle-timeout", type=float, default=3600.0,
                        help="with --watch, stop after this many seconds without a new checkpoint (default 3600)")
    parser.add_argument("--aggregate", action="store_true", help="mean ± std over seed runs (paper layout)")
    parser.add_argument("--step", type=int, default=None, help="with --aggregate: the step to report (default: last)")
    parser.add_argument("--fid", action="store_true", help="FID between two .npz image sets (or saved statistics)")
    parser.add_argument("--inception-weights", default=None, metavar="FILE.pt",
                        help="TorchScript Inception feature extractor for FID (none ships with disdiff)")
    parser.add_argument("--save-stats", default=None, metavar="FILE.npz",
                        help="with --fid: also save the first input's feature statistics (mu, sigma) here")
    parser.set_defaults(func=run_evaluate)


# ----------------------------------------------------------------------------- helpers
def _settings(pairs: list[str]) -> dict:
    from disdiff.evaluation.protocol import parse_setting

    out: dict = {}
    for pair in pairs:
        metric, key, value = parse_setting(pair)
        out.setdefault(metric, {})[key] = value
    return out


def _run_dir_of(path: Path) -> Path | None:
    """The run directory a representations file or run folder belongs to."""
    if path.is_dir():
        return path
    if path.parent.name in REPRESENTATION_FOLDERS:
        return path.parent.parent
    return None


def _npz_dataset(path: Path) -> tuple[str | None, tuple[int, ...] | None]:
    """Dataset name and factor sizes recorded in a representations file by ``disdiff export`` (if any)."""
    import numpy as np

    try:
        with np.load(path) as data:
            name = str(data["dataset"]) if "dataset" in data.files else None
            sizes = tuple(int(s) for s in data["factor_sizes"]) if "factor_sizes" in data.files else None
            return name, sizes
    except (OSError, ValueError, EOFError):
        return None, None


def _open_dataset(args: argparse.Namespace, input_path: Path, sample_npz: Path | None):
    from disdiff.cli.export import open_dataset, parse_options, run_dataset_spec
    from disdiff.data.registry import load_dataset

    run_dir = _run_dir_of(input_path)
    run_name = run_dataset_spec(run_dir)[0] if run_dir is not None else None
    if args.dataset is None and run_name is None:
        name = _npz_dataset(sample_npz)[0] if sample_npz is not None else None
        if name is None:
            raise UserError("--dataset is required: neither a run config nor the representations file names the dataset")
        return name, load_dataset(name, data_dir=args.data_dir, **parse_options(args.dataset_options))
    name, _, dataset = open_dataset(args, run_dir)
    return name, dataset


def _check_recorded_sizes(npz: Path, dataset) -> None:
    _, sizes = _npz_dataset(npz)
    if sizes is not None and getattr(dataset, "is_factor_grid", True) and tuple(sizes) != tuple(dataset.factor_sizes):
        raise UserError(f"{npz} was exported with factor sizes {list(sizes)} but the dataset has "
                        f"{list(dataset.factor_sizes)}; pass the matching --dataset-option factor_sizes=...")


def _options(args: argparse.Namespace, info) -> dict:
    from disdiff.evaluation.protocol import ALL_METRICS, resolve_settings

    metrics = None
    if args.metrics:
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
        unknown = [m for m in metrics if m not in ALL_METRICS]
        if unknown:
            raise UserError(f"--metrics: unknown {unknown}; choose from {', '.join(ALL_METRICS)}")
    settings = _settings(args.settings)
    resolve_settings(metrics or info.default_metrics(), settings)  # fail early on a bad --set
    return {"metrics": metrics, "settings": settings, "reduction": args.reduce, "seed": args.seed, "num_units": args.units,
            "probe": args.probe}


def _print_table(records: list[dict]) -> None:
    from disdiff.evaluation.tables import runs_markdown

    if records:
        print(runs_markdown(records), end="")
        probe = records[-1].get("probe")
        if probe:
            print(probe_text(probe, records[-1].get("step")), end="")
        print(votes_text(records[-1]), end="")


def _top_unit(matrix: list[list[float]], k: int) -> tuple[int, float]:
    """(unit, value) of the largest entry in column ``k`` of a units x factors matrix."""
    column = [row[k] for row in matrix]
    best = max(range(len(column)), key=column.__getitem__)
    return best, column[best]


def probe_text(probe: dict, step: int | None = None) -> str:
    """The probe of one record as text: accuracy per factor (full code) and the best unit for it."""
    lines = [f"linear probe of the full code{'' if step is None else f' (step {step})'}: test accuracy per factor"]
    units, shares = probe.get("unit_accuracy"), probe.get("unit_variance_explained")
    for k, name in enumerate(probe["factors"]):
        line = f"  {name:<20} {probe['accuracy'][k]:.3f}  (chance {probe['chance'][k]:.3f})"
        if units:
            line += "  best unit {}: {:.3f}".format(*_top_unit(units, k))
        if shares:
            line += "  most variance explained: unit {} ({:.2f})".format(*_top_unit(shares, k))
        lines.append(line)
    return "\n".join(lines) + "\n"


def votes_text(record: dict) -> str:
    """Which unit (or dimension) wins each factor's FactorVAE votes, and its share ("" without votes)."""
    from disdiff.evaluation.tables import factor_vae_votes

    found = factor_vae_votes(record)
    if found is None:
        return ""
    names, shares, column = found
    lines = [f"FactorVAE evaluation votes: the {column} that wins each factor's votes (share of them; "
             f"a factor that no {column} holds spreads its votes)"]
    for name, row in zip(names, shares):
        lines.append(f"  {name:<20} {column} {int(row.argmax())}: {row.max():.2f}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- modes
def _evaluate(args: argparse.Namespace) -> int:
    from disdiff.evaluation import runs
    from disdiff.evaluation.protocol import DatasetInfo
    from disdiff.evaluation.representations import read_step

    if len(args.inputs) != 1:
        raise UserError("give one run directory or representations .npz (use --aggregate for several runs)")
    if args.processes < 1:
        raise UserError(f"-p/--processes must be at least 1, got {args.processes}")
    path = Path(args.inputs[0])
    if not path.exists():
        raise UserError(f"{path}: no such run directory or representations file")
    if path.is_dir():
        files = runs.find_representation_files(path)
        if not files and not args.watch:
            raise UserError(f"{path}: no representation files found (expected {path}/representations/step=XXXXXXXX.npz; "
                            "write them with `disdiff export`)")
        name, dataset = _open_dataset(args, path, files[0] if files else None)
        if files:
            _check_recorded_sizes(files[0], dataset)
        info = DatasetInfo.of(dataset, label=name)
        options = _options(args, info)
        out_dir = Path(args.out) if args.out else None
        results = runs.evaluate_run(path, info, out_dir=out_dir, processes=args.processes, threads=args.threads,
                                    force=args.force, watch=args.watch, poll_seconds=args.poll,
                                    idle_timeout=args.idle_timeout, **options)
        metrics_dir = out_dir or path / "metrics"
        from disdiff.evaluation.tables import collect_records

        _print_table(collect_records(metrics_dir))
        failed = [r for r in results if not r.ok]
        if failed:
            print(f"{len(failed)} checkpoint(s) failed: " + ", ".join(r.job.source.name for r in failed), file=sys.stderr)
            return 1
        print(f"results in {metrics_dir}")
        return 0

    if args.watch:
        raise UserError("--watch follows a run directory, not a single file")
    if path.suffix != ".npz":
        raise UserError(f"{path}: expected a representations .npz file or a run directory")
    name, dataset = _open_dataset(args, path, path)
    _check_recorded_sizes(path, dataset)
    info = DatasetInfo.of(dataset, label=name)
    options = _options(args, info)
    step = read_step(path)
    in_run = path.parent.name in REPRESENTATION_FOLDERS
    if args.out:
        out = Path(args.out)
        out_json = out if out.suffix == ".json" else out / runs.output_name(path, step)
    elif in_run:
        out_json = path.parent.parent / "metrics" / runs.output_name(path, step)
    else:
        out_json = path.with_name(f"{path.stem}.metrics.json")
    job = runs.Job(path, out_json, step)
    if not args.force and runs.is_current(out_json, runs.expected_record(info, options)):
        print(f"{out_json} is up to date (use --force to recompute)")
    else:
        threads = args.threads if args.threads is not None else None
        result = runs.run_jobs([job], info, options, processes=1, threads=threads or _default_threads())[0]
        if not result.ok:
            print(f"disdiff evaluate: error: {result.message}", file=sys.stderr)
            return 1
    if in_run or (args.out and Path(args.out).suffix != ".json"):
        runs.refresh_outputs(out_json.parent, _run_dir_of(path).name if in_run else "")
    from disdiff.evaluation.tables import read_record

    _print_table([read_record(out_json)])
    print(f"wrote {out_json}")
    return 0


def _default_threads() -> int:
    import os

    return max(1, os.cpu_count() or 1)


def _aggregate(args: argparse.Namespace) -> int:
    from disdiff.evaluation.aggregate import aggregate
    from disdiff.utils.io import atomic_write_text

    if not args.inputs:
        raise UserError("--aggregate needs run directories (the seeds) or a parent folder of seed runs")
    table, _ = aggregate(args.inputs, args.step)
    print(table, end="")
    if args.out:
        atomic_write_text(args.out, table)
        print(f"wrote {args.out}")
    return 0


def _fid(args: argparse.Namespace) -> int:
    import numpy as np

    from disdiff.metrics import fid
    from disdiff.utils.io import atomic_save_npz, atomic_write_json

    if len(args.inputs) != 2:
        raise UserError("--fid needs two .npz files: reference images (or statistics) and generated images")
    paths = [Path(p) for p in args.inputs]
    for p in paths:
        if not p.is_file():
            raise UserError(f"{p}: no such file")
    def holds_statistics(path: Path) -> bool:
        try:
            with np.load(path) as data:
                return {"mu", "sigma"} <= set(data.files)
        except (OSError, ValueError, EOFError) as exc:
            raise UserError(f"{path}: cannot read ({exc})") from exc

    needs_model = not all(holds_statistics(p) for p in paths)
    model = fid.load_inception(args.inception_weights) if needs_model else None
    stats = [fid.load_images_or_statistics(p, model) for p in paths]
    if args.save_stats:
        atomic_save_npz(args.save_stats, mu=stats[0][0], sigma=stats[0][1])
    value = fid.frechet_distance(stats[0][0], stats[0][1], stats[1][0], stats[1][1])
    print(f"FID {value:.4f}")
    if args.out:
        atomic_write_json(args.out, {"fid": value, "inputs": [str(p) for p in paths],
                                     "inception_weights": args.inception_weights})
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from disdiff.metrics import MetricError

    try:
        if args.aggregate and args.fid:
            raise UserError("choose one of --aggregate and --fid")
        if args.aggregate:
            return _aggregate(args)
        if args.fid:
            return _fid(args)
        return _evaluate(args)
    except MetricError as exc:
        raise UserError(str(exc)) from exc
