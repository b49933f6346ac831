"""The ``disdiff`` command: one sub-command per module in ``disdiff.cli``.

Each sub-command module exposes ``register(subparsers)``, which adds its parser and sets
``func`` (a callable taking the parsed namespace and returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Order is the order in ``disdiff --help``.
SUBCOMMAND_MODULES = ["quickstart", "data", "train", "evaluate", "export", "swap", "swap_check", "traverse", "units",
                      "import_original"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="disdiff", description="DisDiff: unsupervised disentanglement of diffusion probabilistic models"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(f"disdiff.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"disdiff.cli.{name}":
                continue  # sub-command not part of this build
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if unknown and not getattr(args, "accepts_unknown", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if getattr(args, "accepts_unknown", False):
        args.unknown = unknown
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # user-facing errors: one clear line, non-zero exit
        from disdiff.cli.errors import is_user_error

        if is_user_error(exc):
            print(f"disdiff {args.command}: error: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    raise SystemExit(main())
