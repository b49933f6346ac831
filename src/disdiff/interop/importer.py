"""``disdiff import-original``: a checkpoint of the original DisDiff code plus its YAML config → a disdiff run directory.

The run directory is an ordinary one (:mod:`disdiff.training.run`)::

    <run>/configs/config.yaml            the disdiff config of the imported model
    <run>/configs/original-config.yaml   the original YAML, unchanged
    <run>/checkpoints/last.ckpt          a Lightning checkpoint of the disdiff module
    <run>/run.json                       what was imported, from where, and the notes

so that ``export``, ``evaluate``, ``swap``, ``traverse`` and ``train -r`` accept it.

The checkpoint holds the imported weights, ``global_step`` and ``epoch`` (stage 1: twice the
original's step, because disdiff's two manually stepped optimisers advance Lightning's counter
twice per batch), the loop progress Lightning needs to resume at that step, and the state of a
freshly built optimiser whose learning rate and warm-up position are the original's; the
original's Adam moments are not carried over (see docs/IMPORT_ORIGINAL.md).

Everything is checked before anything is written: the config (unknown keys, unsupported
settings), the checkpoint's keys (missing, unexpected, mis-shaped, schedule buffers that disagree
with the config) and finally the written directory itself, which is loaded back with disdiff's own
loaders. The directory is assembled under a temporary name next to the target and renamed into
place only when all of this succeeded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from omegaconf import OmegaConf

from disdiff.config import ConfigError, instantiate_from_config
from disdiff.interop.original import KeyPlan, apply_plan, plan_autoencoder, plan_disdiff, plan_ldm
from disdiff.interop.original_config import ConvertedConfig, convert_config, read_original_config

__all__ = ["ImportResult", "import_original"]

log = logging.getLogger(__name__)

#: Lightning version written into the intermediate record whose migration creates the loop state
#: (versions before 1.6 stored only ``global_step`` and ``epoch``, like the original's 1.4 checkpoints).
LEGACY_LIGHTNING_VERSION = "1.5.0"


@dataclass
class ImportResult:
    run_dir: Path
    stage: str
    variant: str
    global_step: int
    original_global_step: int
    learning_rate: float
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# reading the original checkpoint
# ---------------------------------------------------------------------------------------------
def _read_checkpoint(path: Path) -> tuple[Mapping[str, Any], dict[str, Any]]:
    """``(state_dict, checkpoint)`` of an original Lightning 1.x checkpoint (loaded with weights_only)."""
    from disdiff.training.checkpoint_io import load_checkpoint_file

    checkpoint = load_checkpoint_file(path)
    state = checkpoint.get("state_dict")
    if not isinstance(state, Mapping):
        raise ConfigError(f"checkpoint {path} has no 'state_dict' (expected a Lightning checkpoint of the original code, "
                          f"found keys {sorted(checkpoint)})")
    return state, checkpoint


def _scalar(state: Mapping[str, Any], key: str) -> float | None:
    value = state.get(key)
    if torch.is_tensor(value) and value.numel() == 1:
        return float(value)
    return None


def _original_learning_rate(checkpoint: Mapping[str, Any]) -> float | None:
    """The learning rate the original run used (before warm-up), if its checkpoint recorded its optimiser."""
    with contextlib.suppress(Exception):
        return float(checkpoint["lr_schedulers"][0]["base_lrs"][0])
    with contextlib.suppress(Exception):
        group = checkpoint["optimizer_states"][0]["param_groups"][0]
        return float(group.get("initial_lr", group["lr"]))
    return None


# ---------------------------------------------------------------------------------------------
# building the disdiff module
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the build-time notices (e.g. "the first stage keeps its random initialisation"): weights come next."""
    logger = logging.getLogger("disdiff")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _build_module(converted: ConvertedConfig) -> torch.nn.Module:
    with _quiet():
        return instantiate_from_config(converted.config.model)


def _plan(converted: ConvertedConfig, module: torch.nn.Module) -> KeyPlan:
    keys = list(module.state_dict().keys())
    params = converted.config.model.params
    if converted.stage == "autoencoder":
        return plan_autoencoder(keys, len(params.autoencoder_config.params.ddconfig.ch_mult))
    ema = getattr(module, "ema", None)
    ema_params = {name: "ema." + shadow for name, shadow in ema.param_to_shadow.items()} if ema is not None else {}
    if converted.stage == "ldm":
        return plan_ldm(keys, ema_params, len(params.first_stage_config.params.ddconfig.ch_mult))
    return plan_disdiff(keys, ema_params, len(params.stage2.first_stage_config.params.ddconfig.ch_mult))


# ---------------------------------------------------------------------------------------------
# the Lightning checkpoint
# ---------------------------------------------------------------------------------------------
def _optimizer_states(module: Any, global_step: int) -> tuple[list[dict], list[dict]]:
    """State dicts of freshly built optimisers (no moments) and schedulers positioned at ``global_step``."""
    configured = module.configure_optimizers()
    if isinstance(configured, dict):
        optimizers = [configured["optimizer"]]
        scheduler = configured.get("lr_scheduler")
        schedulers = [scheduler["scheduler"] if isinstance(scheduler, dict) else scheduler] if scheduler else []
    else:
        optimizers, schedulers = list(configured), []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "lr_scheduler.step() before optimizer.step()": no training happens here
        for scheduler in schedulers:
            if global_step > 0:
                scheduler.last_epoch = global_step - 1
                scheduler.step()
    return [o.state_dict() for o in optimizers], [s.state_dict() for s in schedulers]


def _lightning_checkpoint(module: Any, global_step: int, epoch: int) -> dict[str, Any]:
    """What Lightning itself would write for ``module`` at ``global_step``: weights, hyper-parameters,
    loop progress (migrated from a pre-1.6 record by Lightning's own migration), optimiser and
    scheduler states."""
    import lightning.pytorch as pl
    from lightning.pytorch.utilities.migration import migrate_checkpoint

    optimizer_states, lr_schedulers = _optimizer_states(module, global_step)
    record = {"global_step": int(global_step), "epoch": int(epoch), "pytorch-lightning_version": LEGACY_LIGHTNING_VERSION}
    record, _ = migrate_checkpoint(record)
    record.update({
        "pytorch-lightning_version": pl.__version__,
        "state_dict": {k: v.detach().clone() for k, v in module.state_dict().items()},
        "optimizer_states": optimizer_states,
        "lr_schedulers": lr_schedulers,
        "callbacks": {},
        "hparams_name": "kwargs",
        "hyper_parameters": OmegaConf.to_container(OmegaConf.create(dict(module.hparams)), resolve=True),
    })
    return record


# ---------------------------------------------------------------------------------------------
# checking the written directory with disdiff's own loaders
# ---------------------------------------------------------------------------------------------
def _verify(run_dir: Path, converted: ConvertedConfig) -> None:
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    with _quiet():
        if converted.stage == "disdiff":
            from disdiff.api import DisDiff

            DisDiff.load(run_dir)
        elif converted.stage == "ldm":
            from disdiff.training.ldm_loading import load_pretrained_ldm

            load_pretrained_ldm(ckpt, use_ema=bool(converted.config.model.params.use_ema))
        else:
            from disdiff.models.autoencoder import load_first_stage

            load_first_stage(OmegaConf.to_container(converted.config.model.params.autoencoder_config), ckpt)


# ---------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------
def _check_output(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"output {out} exists and is not an empty directory; choose a new run directory")


def import_original(
    checkpoint: str | Path,
    config: str | Path,
    out: str | Path,
    *,
    dataset: str | None = None,
    dataset_options: Mapping[str, Any] | None = None,
    data_dir: str | None = None,
    dis_weight: float | None = None,
    dis_loss_type: str | None = None,
    argv: list[str] | None = None,
) -> ImportResult:
    """Convert an original checkpoint + YAML config into the disdiff run directory ``out`` (see the module docstring).

    Raises :class:`ConfigError` (one message) for a bad config or checkpoint; nothing is written then.
    """
    checkpoint, config, out = Path(checkpoint), Path(config), Path(out)
    _check_output(out)
    converted = convert_config(read_original_config(config), str(config), dataset=dataset,
                               dataset_options=dataset_options, data_dir=data_dir, dis_weight=dis_weight,
                               dis_loss_type=dis_loss_type)
    state, original = _read_checkpoint(checkpoint)
    params = converted.config.model.params
    scale = _scalar(state, "scale_factor")
    if converted.stage == "ldm":
        params.scale_factor = scale if scale is not None else 1.0
    elif converted.stage == "disdiff":
        params.stage2.scale_factor = scale if scale is not None else 1.0
        params.stage2.source = f"{checkpoint} (imported from the original code)"

    module = _build_module(converted)
    new_state, notes = apply_plan(_plan(converted, module), state, module.state_dict(), str(checkpoint))
    module.load_state_dict(new_state, strict=True)
    notes = converted.notes + notes

    original_step = int(original.get("global_step", 0) or 0)
    epoch = int(original.get("epoch", 0) or 0)
    global_step = 2 * original_step if converted.stage == "autoencoder" else original_step
    lr = _original_learning_rate(original)
    if lr is None:
        from disdiff.training.run_config import scaled_learning_rate

        data_params = converted.config.data.params
        trainer = converted.config.lightning.get("trainer") or {}
        lr = scaled_learning_rate(float(converted.config.model.base_learning_rate), int(data_params.batch_size),
                                  int(trainer.get("accumulate_grad_batches", 1)), 1, 1, True).scaled
        notes.append(f"the checkpoint records no optimiser: learning rate {lr:.4g} computed from the config "
                     "(scale_lr, one device)")
    else:
        notes.append(f"learning rate {lr:.4g} as recorded in the checkpoint's optimiser")
    module.learning_rate = lr
    notes.append("the optimiser restarts without the original's Adam moments (learning rate and warm-up position kept)")
    lightning_ckpt = _lightning_checkpoint(module, global_step, epoch)

    from disdiff.training.run import describe_environment

    meta = {
        "argv": argv,
        "imported_from": {"checkpoint": str(checkpoint.resolve()), "config": str(config.resolve()),
                          "checkpoint_bytes": checkpoint.stat().st_size, "original_global_step": original_step,
                          "original_epoch": epoch, "original_lightning": original.get("pytorch-lightning_version")},
        "stage": converted.stage, "variant": converted.variant, "global_step": global_step, "learning_rate": lr,
        "notes": notes, "environment": describe_environment(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    _write_run(out, converted, config, lightning_ckpt, meta)
    return ImportResult(out, converted.stage, converted.variant, global_step, original_step, lr, notes)


def _write_run(out: Path, converted: ConvertedConfig, config: Path, checkpoint: dict, meta: dict) -> None:
    """Assemble the run under a temporary name next to ``out``, load it back, then rename it into place."""
    import json

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.importing-", dir=out.parent))
    try:
        (tmp / "configs").mkdir()
        (tmp / "checkpoints").mkdir()
        (tmp / "configs" / "config.yaml").write_text(OmegaConf.to_yaml(converted.config))
        shutil.copyfile(config, tmp / "configs" / "original-config.yaml")
        torch.save(checkpoint, tmp / "checkpoints" / "last.ckpt")
        (tmp / "run.json").write_text(json.dumps({"invocations": [meta]}, indent=2, sort_keys=True) + "\n")
        _verify(tmp, converted)
        _check_output(out)
        if out.exists():
            out.rmdir()  # empty (checked): the rename needs the name free on every platform
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
