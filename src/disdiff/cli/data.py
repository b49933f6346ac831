"""``disdiff data``: inspect datasets.

    disdiff data list
    disdiff data info NAME_OR_PATH [--data-dir DIR] [-o KEY=VALUE ...] [--json]
    disdiff data preview NAME_OR_PATH --out FILE.png [--resolution R] [--seed S] [--data-dir DIR] [-o KEY=VALUE ...]

NAME_OR_PATH is a dataset name (shapes3d-synth, shapes3d, mpi3d, cars3d, dsprites, celeba) or a
file/folder. Real datasets are looked for under --data-dir, else $DISDIFF_DATA. Loader options
are given as -o KEY=VALUE (VALUE parsed as JSON when possible), e.g.
``-o factor_sizes=[4,4,4,3,4,3]`` or ``-o variant=toy``.
"""

from __future__ import annotations

import argparse
import json
import sys

from disdiff.cli.errors import UserError


def _parse_options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"-o/--option expects KEY=VALUE, got {pair!r}")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="inspect datasets: list, info, preview", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION")
    actions.required = True

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("dataset", metavar="NAME_OR_PATH", nargs="?", default="shapes3d-synth",
                         help="dataset name or file/folder (default: shapes3d-synth)")
        sub.add_argument("--data-dir", default=None, help="folder holding the real datasets (default: $DISDIFF_DATA)")
        sub.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                         help="loader option (repeatable), e.g. factor_sizes=[2,2,2,2,4,3] or variant=toy")

    listing = actions.add_parser("list", help="the named datasets")
    listing.set_defaults(func=run_list)
    info = actions.add_parser("info", help="factors, sizes, image count and shape, source")
    common(info)
    info.add_argument("--json", action="store_true", help="print the description as JSON")
    info.set_defaults(func=run_info)
    preview = actions.add_parser("preview", help="PNG grid: one row per factor swept over its values")
    common(preview)
    preview.add_argument("--out", required=True, help="output PNG file (written atomically)")
    preview.add_argument("--resolution", type=int, default=None, help="image resolution (e.g. 64, 32)")
    preview.add_argument("--seed", type=int, default=0, help="seed of the fixed factor values")
    preview.set_defaults(func=run_preview)


def _load(args: argparse.Namespace, extra: dict | None = None):
    from disdiff.data.registry import canonical_name, load_dataset

    options = _parse_options(args.option)
    options.update(extra or {})
    if canonical_name(args.dataset) == "shapes3d-synth" and "storage" not in options and "cache" not in options:
        options["storage"] = "lazy"  # inspecting needs a few images, not the whole rendered grid
    return load_dataset(args.dataset, data_dir=args.data_dir, **options)


def run_list(args: argparse.Namespace) -> int:
    from disdiff.data.registry import list_datasets

    for entry in list_datasets():
        print(f"{entry['name']:16s} {entry['description']}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    dataset = _load(args)
    description = dataset.describe()
    if args.json:
        print(json.dumps(description, indent=2, default=str))
        return 0
    print(f"dataset:      {description.get('name')}")
    print(f"source:       {dataset.source}")
    if dataset.is_factor_grid:
        print(f"factors:      {len(dataset.factor_sizes)}")
        width = max(len(n) for n in dataset.factor_names)
        for name, size in zip(dataset.factor_names, dataset.factor_sizes):
            print(f"  {name:{width}s}  {size}")
    else:
        print("factors:      none (not a factor grid; images with attributes)")
    print(f"images:       {dataset.num_images}")
    print(f"image shape:  {tuple(dataset.image_shape)} (H, W, C)")
    shown = {"name", "factor_names", "factor_sizes", "num_images", "image_shape", "source"}
    for key, value in description.items():
        if key in shown:
            continue
        if isinstance(value, dict):
            print(f"{key}:")
            for sub, item in value.items():
                text = ", ".join(map(str, item)) if isinstance(item, list) else str(item)
                print(f"  {sub}: {text}")
        else:
            text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
            print(f"{key + ':':13s} {text}")
    return 0


def run_preview(args: argparse.Namespace) -> int:
    from disdiff.data.preview import save_preview

    extra = {"resolution": args.resolution} if args.resolution else {}
    dataset = _load(args, extra)
    out = save_preview(dataset, args.out, seed=args.seed)
    print(f"wrote {out}", file=sys.stderr)
    return 0
