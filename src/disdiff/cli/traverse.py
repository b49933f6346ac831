"""``disdiff traverse``: move each unit of one image along its first PCA direction (PNG).

    disdiff traverse RUN_OR_CHECKPOINT [--dataset NAME_OR_PATH] [--index I] [--values=-2,-1,0,1,2]
                     [--latents representations/step=....npz | --pca-samples 2000]
                     [--steps 50] [--eta 0] [--seed 0] [--out traverse.png]

The direction of unit k is the first principal component of unit k's codes over the dataset (the
same post-processing as the evaluation), from an exported ``--latents`` file or from
``--pca-samples`` random images encoded on the fly. Row k shows unit k moved by ``v·std_k`` for
every value v (``std_k`` = the spread of the codes along that direction); the first column is the
input image. All cells start from the same x_T, and ``eta`` defaults to 0 (deterministic DDIM), so
cells differ only through the representation.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from disdiff.cli.errors import UserError
from disdiff.cli.export import add_dataset_arguments, add_model_arguments, check_geometry, load_model, open_dataset
from disdiff.cli.swap import add_sampling_arguments, check_indices, check_sampling, default_figure_path


def parse_values(text: str) -> list[float]:
    try:
        values = [float(v) for v in str(text).replace(" ", "").split(",") if v != ""]
    except ValueError as exc:
        raise UserError(f"--values expects comma-separated numbers, got {text!r}") from exc
    if not values:
        raise UserError("--values is empty")
    return values


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("traverse", help="traverse each unit along its PCA direction (PNG)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    add_dataset_arguments(parser)
    parser.add_argument("--index", type=int, default=0, help="dataset index of the image to traverse (default 0)")
    parser.add_argument("--values", default="-2,-1,0,1,2", help="offsets in units of std, written --values=-2,-1,0,1,2 (the default)")
    parser.add_argument("--latents", default=None, help="exported representations (npz with 'latents') for the PCA")
    parser.add_argument("--pca-samples", type=int, default=2000, help="random images encoded for the PCA if no --latents")
    add_sampling_arguments(parser, eta=0.0)
    parser.add_argument("--out", default=None, help="output PNG (default <run>/figures/traverse-<index>_step=XXXXXXXX.png)")
    parser.set_defaults(func=run_traverse)


def run_traverse(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from disdiff.inference.figures import pca_codes, traverse_figure
    from disdiff.utils.images import save_png

    check_sampling(args)
    values = parse_values(args.values)
    model = load_model(args, use_ema=not args.no_ema)
    _, _, dataset = open_dataset(args, model.run_dir)
    check_geometry(model, dataset)
    n = len(dataset)
    check_indices([args.index], n, "--index")

    if args.latents is not None:
        path = Path(args.latents)
        if not path.is_file():
            raise FileNotFoundError(f"--latents {path} not found")
        with np.load(path, allow_pickle=False) as data:
            if "latents" not in data:
                raise UserError(f"{path} has no 'latents' array")
            codes = np.asarray(data["latents"], dtype=np.float32)
        if codes.ndim != 3 or codes.shape[1:] != (model.num_units, model.unit_dim):
            raise UserError(f"{path}: latents {codes.shape} do not match the model's units ({model.num_units}, {model.unit_dim})")
    else:
        if args.pca_samples < 2:
            raise UserError(f"--pca-samples must be at least 2, got {args.pca_samples}")
        codes = pca_codes(model, dataset, args.pca_samples, args.seed)
    image = traverse_figure(model, dataset, args.index, codes, values, args.steps, args.eta, args.seed, args.progress)
    out = Path(args.out) if args.out else default_figure_path(model, f"traverse-{args.index}")
    save_png(image, out)
    print(f"wrote {out}")
    return 0
