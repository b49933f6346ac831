"""``disdiff export``: the representations of a whole ground-truth dataset, for ``disdiff evaluate``.

    disdiff export RUN_OR_CHECKPOINT [--dataset NAME_OR_PATH] [--dataset-option KEY=VALUE ...]
                   [--data-dir DIR] [--batch-size 256] [--out FILE.npz] [--device cpu]
                   [--feature-cache DIR] [--features-bf16 auto|true|false]

Every image of the dataset is encoded, in canonical order (row i = image i), with the live
(non-EMA) encoder in eval mode (BatchNorm running statistics), as the original's test export.
The output npz holds ``latents`` (M, N, d) float32 and ``global_step`` (int), plus ``dataset`` and
``factor_sizes`` for reference. Default output: ``<run>/representations/step=XXXXXXXX.npz``.

Without ``--dataset`` the run's own training dataset (name, options, data folder from
``<run>/configs/config.yaml``) is used. With ``--dataset`` naming that same dataset, the run's
dataset options are the defaults; ``--dataset-option`` overrides them one by one.

``--feature-cache DIR`` (for an image encoder that is a head on the frozen networks' features,
``encoder_config.backbone: dpm``): the frozen features of the dataset are computed once, kept in
``DIR`` (shapes3d-synth: 1.0 GB) and read by every later export that uses the same frozen networks
and dataset, so exporting many checkpoints runs only their heads. Other encoders ignore it.

``--features-bf16`` computes those frozen features under a bfloat16 autocast (kept in their own cache
file); the head still runs in float32. About 1.9x faster on a CPU with native bf16, with the same
metrics to the third decimal on the one checkpoint measured (docs/EXPERIMENTS.md D36b). Default false.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import yaml

from disdiff.cli.errors import UserError
from disdiff.evaluation.export import (FrozenFeatureCache, dataset_cache_key, export_representations,  # noqa: F401 (re-exported)
                                      run_dataset_spec, save_representations)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# helpers shared by export, swap and traverse
# ---------------------------------------------------------------------------------------------
def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN_OR_CHECKPOINT", help="a DisDiff run directory (uses checkpoints/last.ckpt) or a checkpoint file")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def add_dataset_arguments(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument("--dataset", default=None, required=required, metavar="NAME_OR_PATH",
                        help="dataset name (shapes3d-synth, shapes3d, mpi3d, cars3d, dsprites, celeba) or file/folder; "
                             "default: the run's training dataset")
    parser.add_argument("--dataset-option", "--option", action="append", default=[], metavar="KEY=VALUE",
                        dest="dataset_options",
                        help="dataset option, value in YAML syntax (e.g. resolution=32, factor_sizes=[4,4,4,3,4,3]); repeatable")
    parser.add_argument("--data-dir", default=None, help="folder holding the real datasets (default: $DISDIFF_DATA)")


def parse_options(pairs: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--dataset-option expects KEY=VALUE, got {pair!r}")
        try:
            options[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise UserError(f"--dataset-option {pair!r}: cannot parse the value: {exc}") from exc
    return options


def dataset_spec(args: argparse.Namespace, run_dir: Path | None) -> tuple[str, dict, str | None]:
    """Name, options and data folder of the dataset named by --dataset/--dataset-option/--data-dir,
    defaulting to the run's own."""
    run_name, run_options, run_data_dir = run_dataset_spec(run_dir)
    cli_options = parse_options(args.dataset_options)
    if args.dataset is None:
        if run_name is None:
            raise UserError("--dataset is required (the run's config names no training dataset)")
        return run_name, {**run_options, **cli_options}, args.data_dir or run_data_dir
    if run_name is not None and str(args.dataset) == run_name:
        return run_name, {**run_options, **cli_options}, args.data_dir or run_data_dir
    return args.dataset, cli_options, args.data_dir


def load_spec(name: str, options: dict, data_dir: str | None):
    """Open the dataset of a :func:`dataset_spec`."""
    from disdiff.data.registry import load_dataset

    log.info("dataset %s with options %s", name, options)
    return load_dataset(name, data_dir=data_dir, **options)


def open_dataset(args: argparse.Namespace, run_dir: Path | None):
    """The dataset of :func:`dataset_spec`, opened: ``(name, options, dataset)``."""
    name, options, data_dir = dataset_spec(args, run_dir)
    return name, options, load_spec(name, options, data_dir)


def load_model(args: argparse.Namespace, use_ema: bool = True):
    from disdiff.api import DisDiff

    try:
        import torch

        device = torch.device(args.device)
    except RuntimeError as exc:
        raise UserError(f"--device {args.device!r}: {exc}") from exc
    model = DisDiff.load(args.run, map_location=device, use_ema=use_ema)
    return model


def json_output(text: str | None) -> Path | None:
    """The ``--json`` file of a command (None without one); a directory is refused."""
    out = Path(text) if text else None
    if out is not None and out.is_dir():
        raise UserError(f"--json {out} is a directory; give a file name")
    return out


def write_model_record(out: Path, model, record: dict) -> None:
    """``record`` with the checkpoint, step and EMA use of ``model`` in front, written atomically as JSON."""
    from disdiff.utils.io import atomic_write_json

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, {"checkpoint": str(model.checkpoint), "global_step": model.global_step,
                            "ema": model.uses_ema, **record})
    print(f"wrote {out}")


def check_geometry(model, dataset) -> None:
    c, h, w = model.image_shape
    dh, dw, dc = dataset.image_shape
    if (dc, dh, dw) != (c, h, w):
        raise UserError(f"the dataset's images are {dh}x{dw}x{dc} but the model's encoder takes {h}x{w}x{c}; "
                        "pick the matching dataset options (e.g. --dataset-option resolution=...)")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="write the representations of a whole dataset (npz for evaluate)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    add_dataset_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=256, help="images per batch (default 256)")
    parser.add_argument("--out", default=None, help="output npz (default: <run>/representations/step=XXXXXXXX.npz)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--feature-cache", default=None, metavar="DIR",
                        help="keep the frozen features of a DPM-feature encoder in DIR and reuse them across exports")
    parser.add_argument("--features-bf16", default="false", choices=["auto", "true", "false"],
                        help="compute a DPM-feature encoder's frozen features under a bf16 autocast (the head "
                             "stays float32); auto: where the CPU has native bf16 (default false)")
    parser.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be positive, got {args.batch_size}")
    model = load_model(args)
    if args.out is not None:
        out = Path(args.out)
    elif model.run_dir is not None:
        out = model.run_dir / "representations" / f"step={model.global_step:08d}.npz"
    else:
        raise UserError(f"{args.run} is not inside a run directory; give the output file with --out")
    if out.exists() and not args.overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace it")
    name, options, data_dir = dataset_spec(args, model.run_dir)
    dataset = load_spec(name, options, data_dir)
    check_geometry(model, dataset)
    # Without --feature-cache a cache in memory still serves this one export, for the bf16 features.
    wants_cache = args.feature_cache is not None or args.features_bf16 != "false"
    cache = FrozenFeatureCache(args.feature_cache, bf16=args.features_bf16) if wants_cache else None
    latents = export_representations(model, dataset, args.batch_size, progress=not args.no_progress,
                                     feature_cache=cache, dataset_key=dataset_cache_key(name, options, data_dir))
    if cache is not None and cache.loaded_from is not None:
        log.info("frozen features read from %s", cache.loaded_from)
    save_representations(out, latents, model.global_step, name, dataset)
    print(f"wrote {out}: latents {latents.shape} (step {model.global_step})")
    return 0
