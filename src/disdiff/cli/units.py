"""``disdiff units``: which units the shift decoder uses, and what each unit holds.

    disdiff units RUN_OR_CHECKPOINT [--dataset NAME_OR_PATH] [--n 512] [--t-range 100,600]
                  [--seed 0] [--no-ema] [--json FILE] [--device cpu]

Per unit, on ``--n`` random images of the dataset (the run's own by default) and t ~ U[t-range):
the spread of its code, the RMS of its field G_k and that as a share of the largest field, its
gain (how much the reconstruction loss rises when the unit's values are permuted across the
images) and the factor that explains most of its variance (η²). Definitions:
:mod:`disdiff.inference.unit_usage`.

How to read it: a unit whose field share is small (a few per cent) is unused by the decoder; in
the experiments such a unit took a new factor only once (E93, after the switch to the frozen
re-encoder), while live spare fields did several times. A unit with a live field and a gain near
zero repeats what other units hold. Both are signs to train longer or to change the regime
(docs/EXPERIMENTS.md, D13, D16, D19, E93).
"""

from __future__ import annotations

import argparse
import logging

from disdiff.cli.errors import UserError
from disdiff.cli.export import (add_dataset_arguments, add_model_arguments, check_geometry, json_output, load_model,
                                open_dataset, write_model_record)


def parse_t_range(text: str) -> tuple[int, int]:
    parts = str(text).replace(" ", "").split(",")
    try:
        lo, hi = (int(v) for v in parts)
    except ValueError as exc:
        raise UserError(f"--t-range expects two integers LO,HI, got {text!r}") from exc
    return lo, hi


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("units", help="per unit: field size, loss gain and factor (which units are used)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    add_dataset_arguments(parser)
    parser.add_argument("--n", type=int, default=512, help="random images measured (default 512)")
    parser.add_argument("--t-range", default="100,600", help="timesteps drawn uniformly from [LO, HI) (default 100,600)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the images, t, noise and permutation (default 0)")
    parser.add_argument("--batch-size", type=int, default=512, help="images per forward pass (default 512)")
    parser.add_argument("--no-ema", action="store_true", help="use the live shift-decoder weights instead of the EMA ones")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.set_defaults(func=run_units)


def format_table(usage, step: int) -> str:
    rows = usage.rows()
    lines = [f"step {step}: reconstruction loss with the full code {usage.loss:.4f}",
             f"{'unit':>4}  {'code std':>8}  {'field RMS':>9}  {'share':>5}  {'gain':>8}  factor (η²)"]
    for row in rows:
        factor = "-" if row.get("top_factor") is None else f"{row['top_factor']} ({row['top_eta2']:.2f})"
        lines.append(f"{row['unit']:>4}  {row['code_std']:>8.3f}  {row['field_rms']:>9.4f}  {row['field_share']:>5.2f}"
                     f"  {row['gain']:>8.4f}  {factor}")
    return "\n".join(lines)


def run_units(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from disdiff.inference.unit_usage import measure_unit_usage

    lo, hi = parse_t_range(args.t_range)
    if args.n < 2:
        raise UserError(f"--n must be at least 2, got {args.n}")
    if args.batch_size < 2:
        raise UserError(f"--batch-size must be at least 2, got {args.batch_size}")
    out = json_output(args.json)
    model = load_model(args, use_ema=not args.no_ema)
    steps = model.module.schedule.num_timesteps
    if not 0 <= lo < hi <= steps:
        raise UserError(f"--t-range must satisfy 0 <= LO < HI <= {steps}, got {lo},{hi}")
    _, _, dataset = open_dataset(args, model.run_dir)
    check_geometry(model, dataset)
    usage = measure_unit_usage(model.module, dataset, args.n, (lo, hi), args.seed, args.batch_size)
    print(format_table(usage, model.global_step))
    if out is not None:
        write_model_record(out, model, usage.record())
    return 0
