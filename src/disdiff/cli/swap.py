"""``disdiff swap``: unit-swap grids of a trained DisDiff run (PNG).

    disdiff swap RUN_OR_CHECKPOINT [--dataset NAME_OR_PATH] [--indices 3,17,...] [--num-sources 8]
                 [--reference INDEX] [--mode full|partial|both] [--steps 50] [--eta 1.0] [--seed 0] [--out grid.png]

Layout (one PNG per mode): the first column shows the reference image (top) and its own
generation; the other columns are the source images (row 0), their own generations (row 1), and
then one row per unit k:

* ``full``: source j with unit k replaced by the reference's unit k, generated with Σ_k G_k;
* ``partial``: only the reference's G_k added to the unconditional prediction, so every image in
  row k should share the reference's factor k while everything else follows the prior.

Column j starts from the same x_T in every row (and, with eta > 0, draws the same per-step noise),
so rows differ only through the representation. Generation uses the EMA shift decoder unless
``--no-ema``; images are decoded with quantisation.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from disdiff.cli.errors import UserError
from disdiff.cli.export import add_dataset_arguments, add_model_arguments, check_geometry, load_model, open_dataset


def parse_indices(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(v) for v in str(text).replace(" ", "").split(",") if v != ""]
    except ValueError as exc:
        raise UserError(f"--indices expects comma-separated integers, got {text!r}") from exc
    if not values:
        raise UserError("--indices is empty")
    return values


def check_indices(indices: list[int], size: int, what: str) -> None:
    bad = [i for i in indices if not 0 <= i < size]
    if bad:
        raise UserError(f"{what} {bad} out of range [0, {size})")


def add_sampling_arguments(parser: argparse.ArgumentParser, eta: float) -> None:
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50; the original used 200)")
    parser.add_argument("--eta", type=float, default=eta, help=f"DDIM eta (default {eta})")
    parser.add_argument("--seed", type=int, default=0, help="seed of x_T and of the image choice (default 0)")
    parser.add_argument("--no-ema", action="store_true", help="use the live shift-decoder weights instead of the EMA ones")
    parser.add_argument("--progress", action="store_true", help="show DDIM progress bars")


def check_sampling(args: argparse.Namespace) -> None:
    if args.steps < 1 or args.steps > 1000:
        raise UserError(f"--steps must be in [1, 1000], got {args.steps}")
    if args.eta < 0:
        raise UserError(f"--eta must be >= 0, got {args.eta}")


def default_figure_path(model, stem: str) -> Path:
    if model.run_dir is None:
        raise UserError("the checkpoint is not inside a run directory; give the output file with --out")
    return model.run_dir / "figures" / f"{stem}_step={model.global_step:08d}.png"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("swap", help="unit-swap grids (full and partial) as PNG",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    add_dataset_arguments(parser)
    parser.add_argument("--indices", default=None, help="comma-separated dataset indices of the source images")
    parser.add_argument("--num-sources", type=int, default=8, help="number of random source images if no --indices (default 8)")
    parser.add_argument("--reference", type=int, default=None, help="dataset index of the reference image (default: the first source)")
    parser.add_argument("--mode", choices=["full", "partial", "both"], default="both", help="which grid(s) to write (default both)")
    add_sampling_arguments(parser, eta=1.0)
    parser.add_argument("--out", default=None,
                        help="output PNG (default <run>/figures/swap_step=XXXXXXXX.png; the partial grid gets a "
                             "'_partial' suffix when both are written)")
    parser.set_defaults(func=run_swap)


def run_swap(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from disdiff.inference.figures import pick_sources, swap_figures
    from disdiff.utils.images import save_png

    check_sampling(args)
    model = load_model(args, use_ema=not args.no_ema)
    _, _, dataset = open_dataset(args, model.run_dir)
    check_geometry(model, dataset)
    n = len(dataset)
    indices = parse_indices(args.indices)
    if indices is None:
        if args.num_sources < 1:
            raise UserError(f"--num-sources must be positive, got {args.num_sources}")
        indices = pick_sources(n, args.num_sources, args.seed)
    check_indices(indices, n, "--indices")
    reference = indices[0] if args.reference is None else int(args.reference)
    check_indices([reference], n, "--reference")

    modes = ["full", "partial"] if args.mode == "both" else [args.mode]
    base = Path(args.out) if args.out else default_figure_path(model, "swap")
    grids = swap_figures(model, dataset, indices, reference, args.steps, args.eta, args.seed, modes, args.progress)
    written = []
    for mode, image in grids.items():
        path = base if (mode == "full" or args.mode != "both") else base.with_name(base.stem + "_partial" + base.suffix)
        save_png(image, path)
        written.append(path)
    for path in written:
        print(f"wrote {path}")
    return 0
