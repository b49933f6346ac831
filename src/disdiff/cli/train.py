"""``disdiff train``: train any stage from OmegaConf configs (the original ``main.py`` flags where they make sense).

    disdiff train -b CONFIG.yaml [-b MORE.yaml] [dotted.key=value ...] [-n NAME] [-s SEED] [-l LOGDIR]
    disdiff train -r RUN_DIR_OR_CHECKPOINT [dotted.key=value ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from disdiff.cli.errors import UserError
from disdiff.config import load_configs


def _bool(value: str) -> bool:
    lowered = str(value).lower()
    if lowered in {"1", "true", "yes", "y", "t"}:
        return True
    if lowered in {"0", "false", "no", "n", "f"}:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {value!r}")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train a stage (autoencoder, LDM or DisDiff) from configs",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-b", "--base", action="extend", nargs="+", default=[], metavar="CONFIG.yaml",
                        help="config files, merged left to right (a name under the packaged configs/ also works)")
    parser.add_argument("-t", "--train", action="store_true", default=True, help="train (the default; kept for compatibility)")
    parser.add_argument("-n", "--name", default=None, help="run name (default: the first config's stem)")
    parser.add_argument("-f", "--postfix", default="", help="appended to the run name")
    parser.add_argument("-r", "--resume", default=None, help="run directory or checkpoint to resume (step, optimizer, EMA)")
    parser.add_argument("-s", "--seed", type=int, default=23, help="global seed (default 23, as the original)")
    parser.add_argument("-l", "--logdir", default="logs", help="parent folder of run directories (default: logs)")
    parser.add_argument("--run-dir", default=None, help="exact run directory (instead of <logdir>/<time>_<name>)")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in --run-dir")
    parser.add_argument("--scale_lr", "--scale-lr", type=_bool, default=True, metavar="BOOL",
                        help="lr = accumulate x devices x nodes x batch x base_lr (default true)")
    parser.add_argument("-dt", "--dis_loss_type", default=None, choices=["Z", "IM"], help="DisDiff weighting type (stage 3 only)")
    parser.add_argument("-dw", "--dis_weight", type=float, default=None, help="DisDiff loss weight (stage 3 only)")
    parser.add_argument("--max-steps", type=int, default=None, help="shortcut for lightning.trainer.max_steps")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop after this many minutes of training in all: a resumed run (-r) counts the minutes "
                             "it trained before (Lightning's timer is restored from the checkpoint)")
    parser.add_argument("--accelerator", default=None, help="lightning accelerator (cpu, gpu, auto)")
    parser.add_argument("--devices", default=None, help="lightning devices (e.g. 2, or 0,1)")
    parser.add_argument("--num-nodes", type=int, default=None, help="number of machines")
    parser.add_argument("--strategy", default=None, help="lightning strategy (e.g. ddp)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="OmegaConf dotlist overrides")
    parser.set_defaults(func=run_train)


def _resolve_resume(resume: str) -> tuple[Path, Path]:
    path = Path(resume)
    if path.is_file():
        return path.parent.parent, path
    if path.is_dir():
        from disdiff.utils.checkpoints import latest_checkpoint

        return path, latest_checkpoint(path / "checkpoints")
    raise UserError(f"-r/--resume: {resume} is neither a run directory nor a checkpoint file")


def _trainer_overrides(args: argparse.Namespace) -> dict:
    extra: dict = {}
    if args.max_steps is not None:
        extra["max_steps"] = args.max_steps
    if args.max_minutes is not None:
        extra["max_time"] = {"minutes": args.max_minutes}
    if args.accelerator is not None:
        extra["accelerator"] = args.accelerator
    if args.devices is not None:
        extra["devices"] = int(args.devices) if str(args.devices).isdigit() else args.devices
    if args.num_nodes is not None:
        extra["num_nodes"] = args.num_nodes
    if args.strategy is not None:
        extra["strategy"] = args.strategy
    return extra


def apply_dis_flags(config, dis_loss_type: str | None, dis_weight: float | None, log: logging.Logger) -> None:
    """-dt/-dw set stage-3 values only when given, and say so when they replace a config value.

    The original's -dw defaulted to 1.0 and silently replaced the YAML weight (spec 9.1).
    """
    for key, value in (("dis_loss_type", dis_loss_type), ("dis_weight", dis_weight)):
        if value is None:
            continue
        params = config.model.setdefault("params", {})
        if key not in params and "DisDiff" not in str(config.model.get("target", "")):
            raise UserError(f"-{'dt' if key == 'dis_loss_type' else 'dw'} only applies to DisDiff (stage 3) configs; "
                            f"model.target is {config.model.get('target')}")
        old = params.get(key, None)
        if old is not None and old != value:
            log.warning("command line sets model.params.%s = %r (config had %r)", key, value, old)
        params[key] = value


def run_train(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("disdiff.train")
    # Heavy imports only once a training run is really starting.
    from disdiff.training.callbacks import NonFiniteLossError
    from disdiff.training.run import RunDirectory, is_primary_process, launcher_world_size, train

    # "-b a.yaml b.yaml key=value": argparse hands the dotlist to -b; move it where it belongs.
    args.overrides = [*[b for b in args.base if "=" in b], *args.overrides]
    args.base = [b for b in args.base if "=" not in b]
    resume_ckpt: Path | None = None
    if args.resume:
        if args.name:
            raise UserError("-n/--name cannot be combined with -r/--resume (the run keeps its name)")
        run_path, resume_ckpt = _resolve_resume(args.resume)
        run = RunDirectory(run_path)
        if not run.holds_run():
            raise UserError(f"-r/--resume: {run_path} holds no run (missing {run.config_path})")
        config = load_configs([run.config_path, *args.base], args.overrides)
        if not resume_ckpt.is_file():
            log.warning("no checkpoint at %s yet: starting this run from step 0", resume_ckpt)
            resume_ckpt = None
    else:
        if not args.base:
            raise UserError("give at least one config with -b CONFIG.yaml (or resume a run with -r)")
        config = load_configs(args.base, args.overrides)
        run_path = Path(args.run_dir) if args.run_dir else _shared_run_dir(args, launcher_world_size())
        run = RunDirectory(run_path)
        if is_primary_process() and run.holds_run() and run.last_checkpoint.is_file() and not args.overwrite:
            raise UserError(f"run directory {run_path} already holds a run; resume it with -r {run_path} or pass --overwrite")

    apply_dis_flags(config, args.dis_loss_type, args.dis_weight, log)
    # The processes Lightning starts for DDP run this same command again: they find the run
    # directory chosen here in the environment they inherit.
    previous = os.environ.get(RUN_DIR_ENV)
    os.environ[RUN_DIR_ENV] = json.dumps({"key": _run_key(args), "run_dir": str(run.path)})
    try:
        train(config, run, seed=args.seed, resume_ckpt=resume_ckpt, scale_lr=args.scale_lr, overwrite=args.overwrite,
              trainer_overrides=_trainer_overrides(args), resume=bool(args.resume))
    except NonFiniteLossError as exc:
        last = run.last_checkpoint
        kept = f"; last good checkpoint: {last}" if last.is_file() else "; no checkpoint had been written yet"
        raise TrainingStopped(f"{exc}{kept}") from exc
    finally:
        if previous is None:
            os.environ.pop(RUN_DIR_ENV, None)
        else:
            os.environ[RUN_DIR_ENV] = previous
    print(f"run directory: {run.path}")
    return 0


RUN_DIR_ENV = "DISDIFF_DDP_RUN_DIR"


class TrainingStopped(UserError):
    """Training stopped on a non-finite loss (reported in one line, exit status 1)."""


def _run_key(args: argparse.Namespace) -> str:
    return json.dumps([args.base, args.overrides, args.name, args.postfix, args.logdir])


def _shared_run_dir(args: argparse.Namespace, world_size: int) -> Path:
    """The new run's directory when --run-dir is not given: ``<logdir>/<time>_<name>``.

    A process started by Lightning's DDP launcher takes the directory its rank-0 parent chose. A
    job whose processes are all started by torchrun or SLURM has no parent to agree with (each
    would stamp its own time), so it must name the directory with --run-dir.
    """
    inherited = os.environ.get(RUN_DIR_ENV)
    if inherited:
        record = json.loads(inherited)
        if record.get("key") == _run_key(args):
            return Path(record["run_dir"])
    if world_size > 1 or int(os.environ.get("NODE_RANK", "0") or 0) > 0:
        raise UserError("this is one of several processes started by a launcher (torchrun, srun, or one command per "
                        "machine): give every one the same run directory with --run-dir DIR (or resume with -r DIR)")
    from disdiff.training.run import default_run_name

    return Path(args.logdir) / default_run_name(args.base, args.name, args.postfix)
