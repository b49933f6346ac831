"""``disdiff swap-check``: which factor each row of the swap grid changes, read by classifiers.

    disdiff swap-check RUN_OR_CHECKPOINT [--dataset NAME_OR_PATH] [--pairs 64] [--steps 50] [--eta 1.0]
                       [--seed 0] [--reader mlp|linear] [--reader-images 20000] [--json FILE] [--device cpu]

For ``--pairs`` random (source, reference) pairs of a dataset with factor labels, every unit k's
swap (the source's code with unit k taken from the reference) is generated, and a classifier per
factor, fitted on real images of the dataset, reads which value of each factor the image shows.
Printed per unit: how often its swap *moved* each factor (the read value differs from the source's
own generation), over the pairs whose true values differ; then the factor it moves most above
``resampled`` (below), with ``adopted`` (the read value is the reference's) for it. A disentangled
model has one large entry per row. Also printed: each reader's accuracy on held-out real images (it
bounds what the check can see), how often an image's own code brings each factor back, and how often
a factor changes when only the sampler's x_T and noise do (``resampled``: a unit's ``moved`` means
something only above it). Definitions: :mod:`disdiff.inference.swap_check`.
"""

from __future__ import annotations

import argparse
import logging

from disdiff.cli.errors import UserError
from disdiff.cli.export import (add_dataset_arguments, add_model_arguments, check_geometry, json_output, load_model,
                                open_dataset, write_model_record)
from disdiff.cli.swap import add_sampling_arguments, check_sampling


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("swap-check", help="which factor each unit's swap changes (classifier-read)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    add_dataset_arguments(parser)
    parser.add_argument("--pairs", type=int, default=64, help="(source, reference) pairs generated (default 64)")
    parser.add_argument("--reader", choices=["mlp", "linear"], default="mlp",
                        help="classifier that reads each factor from an image's first-stage latent (default mlp)")
    parser.add_argument("--reader-images", type=int, default=20000,
                        help="real images the readers are fitted (4/5) and tested (1/5) on (default 20000)")
    parser.add_argument("--batch-size", type=int, default=64, help="pairs generated at once (default 64)")
    add_sampling_arguments(parser, eta=1.0)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.set_defaults(func=run_swap_check)


def format_table(check, step: int) -> str:
    names = [str(n) for n in check.factor_names]
    width = max(9, *(len(n) for n in names))
    head = "".join(f"{n:>{width + 2}}" for n in names)
    lines = [f"step {step}: {check.draws['pairs']} pairs, DDIM {check.draws['steps']} steps, eta {check.draws['eta']}, "
             f"{check.reader} readers",
             f"{'':<16}{head}",
             f"{'reader accuracy':<16}" + "".join(f"{v:>{width + 2}.2f}" for v in check.reader_accuracy),
             f"{'own code':<16}" + "".join(f"{v:>{width + 2}.2f}" for v in check.own_accuracy),
             f"{'resampled':<16}" + "".join(f"{v:>{width + 2}.2f}" for v in check.resampled),
             "moved by the swap of unit k:"]
    for k, row in enumerate(check.rows()):
        cells = "".join(f"{v:>{width + 2}.2f}" for v in check.moved[k])
        runner_up = "" if row["next_factor"] is None else f"; next {row['next_factor']} {row['next_excess']:+.2f}"
        lines.append(f"{'unit ' + str(row['unit']):<16}{cells}   -> {row['top_factor']} ({row['excess']:+.2f} over "
                     f"resampled, adopted {row['adopted']:.2f}{runner_up})")
    return "\n".join(lines)


def run_swap_check(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from disdiff.inference.swap_check import check_swaps

    check_sampling(args)
    for option, value, low in (("--pairs", args.pairs, 1), ("--reader-images", args.reader_images, 10),
                               ("--batch-size", args.batch_size, 1)):
        if value < low:
            raise UserError(f"{option} must be at least {low}, got {value}")
    out = json_output(args.json)
    model = load_model(args, use_ema=not args.no_ema)
    name, _, dataset = open_dataset(args, model.run_dir)
    if not hasattr(dataset, "factors_of"):
        raise UserError(f"dataset {name!r} has no factor labels; swap-check needs a ground-truth dataset")
    check_geometry(model, dataset)
    needed = 2 * args.pairs + args.reader_images
    if needed > len(dataset):
        raise UserError(f"dataset {name!r} has {len(dataset)} images; --pairs {args.pairs} and --reader-images "
                        f"{args.reader_images} need {needed}")
    check = check_swaps(model.module, dataset, args.pairs, args.steps, args.eta, args.seed, args.reader,
                        args.reader_images, args.batch_size)
    print(format_table(check, model.global_step))
    if out is not None:
        write_model_record(out, model, check.record())
    return 0
