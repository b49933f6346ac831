"""``disdiff quickstart``: DisDiff end to end on one dataset within a time budget, then a report.

    disdiff quickstart [--out DIR] [--minutes 30] [--seed 0] [--dataset NAME_OR_PATH] [--units N]
                       [--resolution 32] [--factor-sizes 4,4,4,4,4,5] [--from-scratch]
                       [--set STAGE:KEY=VALUE ...]

Default: the built-in shapes3d-synth at 32x32. Where the package ships stage-1 and stage-2
checkpoints for it (``disdiff/pretrained/shapes3d-synth-32/``), stage 3 starts from them and gets
the whole training budget; ``--from-scratch`` trains all three stages (budget shared 20/30/50 %).
Any other dataset or resolution trains all three stages. 25 % of the budget, at most 5 minutes, is
set aside for exporting the representations, the metrics (the final stage-3 checkpoint at the
published settings, a few earlier ones with fewer DCI points for the metric curve), the figures and
the report; the curve leaves points out if that time runs short.

``--dataset`` takes any ground-truth dataset the loaders know: a name (shapes3d-synth, shapes3d,
mpi3d, cars3d, dsprites, celeba; the real ones from --data-dir or $DISDIFF_DATA) or a path,
bring-your-own ``.npz``/``.h5`` included. Images are resized to ``--resolution`` (a multiple of
16) and grey ones repeated to 3 channels; N defaults to the number of factors. A dataset without
factor labels (CelebA) trains and draws the grids, without metrics.

The console shows one line per stage; everything else goes to ``DIR/quickstart.log``. The
report is ``DIR/report.md`` and ``DIR/report.html``. Run the same command again after an
interruption: finished steps are skipped and the stage in progress resumes from its last
checkpoint, exactly where it stopped.

``--set STAGE:KEY=VALUE`` changes one config value of a stage this run trains (stage 3 only,
unless ``--from-scratch``), e.g. ``--set disdiff:model.params.train_reencoder_until=4000``; the
values are checked first, belong to the run's identity and are listed in the report.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from disdiff.cli.errors import UserError


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from exc
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return sizes


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("quickstart", help="train and evaluate DisDiff on one dataset in a time budget, "
                                                      "write a report",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="disdiff_quickstart", help="output folder (default: disdiff_quickstart)")
    parser.add_argument("--minutes", type=float, default=30.0, help="overall time budget in minutes (default 30)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every stage (default 0)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--dataset", default="shapes3d-synth", metavar="NAME_OR_PATH",
                        help="dataset name or file/folder, bring-your-own .npz/.h5 included (default shapes3d-synth)")
    parser.add_argument("--data-dir", default=None, help="folder holding the named real datasets (default: $DISDIFF_DATA)")
    parser.add_argument("--resolution", type=int, default=32, help="image size, a multiple of 16 (default 32)")
    parser.add_argument("--units", type=int, default=None, help="number of units N (default: the number of factors + 2)")
    parser.add_argument("--factor-sizes", type=_sizes, default=None,
                        help="reduced factor grid for quick trials where the dataset takes one, e.g. 4,4,4,4,4,5 "
                             "(default: the full grid, 480,000 images for shapes3d-synth)")
    parser.add_argument("--from-scratch", action="store_true",
                        help="train stages 1 and 2 too, even where the package ships their checkpoints")
    parser.add_argument("--curve-points", type=int, default=4,
                        help="stage-3 checkpoints evaluated for the metric curve, the final one included (default 4)")
    parser.add_argument("--fixed-reserve", action="store_true",
                        help="stop stage 3 where the fixed reserve for the final steps says (5 minutes at most), "
                             "instead of training on into it when the measured step time says they still fit")
    parser.add_argument("--figure-steps", type=int, default=50, help="DDIM steps of the swap and traversal grids (default 50)")
    parser.add_argument("--features-bf16", default="auto", choices=["auto", "true", "false"],
                        help="compute the exports' frozen DPM features under a bf16 autocast; auto: where the CPU "
                             "has native bf16 (default auto; training reads them only with --child-features-in-training)")
    parser.add_argument("--background-features", default="true", choices=["true", "false"],
                        help="compute the exports' frozen DPM features in a second process on one thread while stage 3 "
                             "trains on the others (default true; needs --threads 2 or more)")
    parser.add_argument("--child-features-in-training", default="true", choices=["true", "false"],
                        help="once that process is done, stage 3 reads its images' frozen features from its file "
                             "instead of computing them; without that process, from the features computed before "
                             "stage 3, from its first step (under --features-bf16 the head then trains on "
                             "bf16-autocast features; default true)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="STAGE:KEY=VALUE",
                        help="a config value for one stage (autoencoder, ldm or disdiff), checked before anything "
                             "trains; repeatable, e.g. --set disdiff:model.params.train_reencoder_until=4000")
    parser.set_defaults(func=run_quickstart)


def run_quickstart(args: argparse.Namespace) -> int:
    import torch

    from disdiff.pipeline.quickstart import Quickstart, QuickstartSettings

    if args.minutes <= 0:
        raise UserError(f"--minutes must be positive, got {args.minutes}")
    if args.curve_points < 1:
        raise UserError(f"--curve-points must be at least 1, got {args.curve_points}")
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = QuickstartSettings(out=Path(args.out), minutes=args.minutes, seed=args.seed, dataset=args.dataset,
                                  data_dir=args.data_dir, resolution=args.resolution, units=args.units,
                                  factor_sizes=args.factor_sizes, from_scratch=args.from_scratch,
                                  curve_points=args.curve_points, figure_steps=args.figure_steps, sets=list(args.sets),
                                  speed_reserve=not args.fixed_reserve,
                                  features_bf16=args.features_bf16,
                                  background_features=args.background_features == "true",
                                  child_features_in_training=args.child_features_in_training == "true")
    Quickstart(settings).run()
    return 0
