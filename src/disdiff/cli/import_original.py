"""``disdiff import-original``: turn a checkpoint of the original DisDiff code into a disdiff run directory.

    disdiff import-original CHECKPOINT.ckpt ORIGINAL_CONFIG.yaml --out RUN_DIR
                            [--dataset NAME_OR_PATH] [--dataset-option KEY=VALUE ...] [--data-dir DIR]
                            [--dis-weight W] [--dis-loss-type Z|IM]

Stage 1 (VQModel / AutoencoderKL), stage 2 (LatentDiffusion) and stage 3 (DisDiff LatentDiffusion)
checkpoints are recognised from the config. RUN_DIR then works with ``disdiff export``,
``evaluate``, ``swap``, ``traverse`` and ``train -r``. The checkpoint is read with
``torch.load(weights_only=True)``: it may hold tensors and plain data only.

The dataset is the one the original trained on (``data.params.train.target``) unless --dataset is
given. --dis-weight / --dis-loss-type are the original's ``-dw`` / ``-dt`` command-line values
(they replaced the YAML's; they matter only for resuming training). See docs/IMPORT_ORIGINAL.md.
"""

from __future__ import annotations

import argparse
import logging
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("import-original", help="convert a checkpoint of the original DisDiff code into a run",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", metavar="CHECKPOINT.ckpt", help="the original code's Lightning checkpoint")
    parser.add_argument("config", metavar="ORIGINAL_CONFIG.yaml", help="the original YAML config of that run")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="the new run directory (must not exist, or be empty)")
    parser.add_argument("--dataset", default=None, metavar="NAME_OR_PATH",
                        help="dataset of the run's data block (default: the original's training dataset)")
    parser.add_argument("--dataset-option", "--option", action="append", default=[], metavar="KEY=VALUE",
                        dest="dataset_options", help="dataset option in YAML syntax (e.g. resolution=64); repeatable")
    parser.add_argument("--data-dir", default=None, help="folder holding the dataset files (written into the config)")
    parser.add_argument("--dis-weight", type=float, default=None, metavar="W",
                        help="stage 3: the -dw value the original run used (default: the YAML's dis_weight, else 1.0)")
    parser.add_argument("--dis-loss-type", choices=["Z", "IM"], default=None,
                        help="stage 3: the -dt value the original run used (default: the YAML's, else IM)")
    parser.set_defaults(func=run_import)


def run_import(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from disdiff.cli.export import parse_options
    from disdiff.interop.importer import import_original

    result = import_original(
        args.checkpoint, args.config, args.out, dataset=args.dataset,
        dataset_options=parse_options(args.dataset_options) or None, data_dir=args.data_dir,
        dis_weight=args.dis_weight, dis_loss_type=args.dis_loss_type, argv=list(sys.argv),
    )
    stage = {"autoencoder": "stage 1 (autoencoder)", "ldm": "stage 2 (LDM)", "disdiff": "stage 3 (DisDiff)"}[result.stage]
    print(f"imported {stage}, {result.variant.upper()} first stage, original step {result.original_global_step} "
          f"-> disdiff step {result.global_step}")
    for note in result.notes:
        print(f"  note: {note}")
    print(f"run directory: {result.run_dir}")
    return 0
