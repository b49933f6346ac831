"""The train command's config: unknown-key checks, the fresh-start guard for imported stage-3
runs, and the learning-rate arithmetic (spec 1.5). Pure functions of the merged config; the run
itself (directory, Trainer) is :mod:`disdiff.training.run`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig, OmegaConf

from disdiff.config import ConfigError, check_param_types
from disdiff.training.callbacks import ImageLogger

TOP_LEVEL_KEYS = {"model", "data", "lightning"}
MODEL_KEYS = {"target", "params", "base_learning_rate"}
LIGHTNING_KEYS = {"trainer", "checkpoint", "image_logger"}
CHECKPOINT_KEYS = {"every_n_train_steps"}
IMAGE_LOGGER_KEYS = {"every_n_train_steps", "max_images", "ncol", "log_first_step"}


def _check_keys(block: Any, valid: set[str], where: str) -> None:
    if block is None:
        return
    if not isinstance(block, (dict, DictConfig)):
        raise ConfigError(f"config key {where!r} must be a mapping, got {type(block).__name__}")
    unknown = sorted(set(block.keys()) - valid)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(f'{where}.{k}' for k in unknown)}; valid keys of {where!r}: {sorted(valid)}")


def _plain_block(block: Any) -> dict:
    return OmegaConf.to_container(block, resolve=True) if isinstance(block, DictConfig) else dict(block or {})


def validate_config(config: DictConfig) -> None:
    """Reject unknown keys at the levels the train command itself reads (others are checked on build)."""
    _check_keys(config, TOP_LEVEL_KEYS, "<root>")
    if "model" not in config:
        raise ConfigError("config has no 'model' block (expected model.target and model.params)")
    _check_keys(config.model, MODEL_KEYS, "model")
    if "data" in config:
        _check_keys(config.data, {"target", "params"}, "data")
    lightning_cfg = config.get("lightning") or {}
    _check_keys(lightning_cfg, LIGHTNING_KEYS, "lightning")
    _check_keys(lightning_cfg.get("checkpoint"), CHECKPOINT_KEYS, "lightning.checkpoint")
    _check_keys(lightning_cfg.get("image_logger"), IMAGE_LOGGER_KEYS, "lightning.image_logger")
    trainer_cfg = lightning_cfg.get("trainer") or {}
    trainer_params = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}
    _check_keys(trainer_cfg, trainer_params, "lightning.trainer")
    # Types of the values the train command hands on (plain annotations: int, bool, float, ...).
    check_param_types(pl.Trainer, _plain_block(trainer_cfg), "lightning.trainer")
    check_param_types(ImageLogger, _plain_block(lightning_cfg.get("image_logger")), "lightning.image_logger")
    every = _plain_block(lightning_cfg.get("checkpoint")).get("every_n_train_steps", 1)
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise ConfigError(f"lightning.checkpoint.every_n_train_steps must be an int >= 0 (0: no periodic checkpoints), got {every!r}")
    base_lr = config.model.get("base_learning_rate", None)
    if base_lr is not None and not isinstance(base_lr, (int, float)):
        raise ConfigError(f"model.base_learning_rate must be a number, got {base_lr!r}")


def check_fresh_start(config: DictConfig, resume: bool) -> None:
    """A stage-3 config carrying ``stage2`` without ``ldm_ckpt`` (an imported run, ``disdiff
    import-original``) keeps its frozen weights in the run's checkpoint: it can be resumed, but a
    fresh start would freeze randomly initialised stage-1/2 networks."""
    params = config.model.get("params") or {}
    if resume or not str(config.model.get("target", "")).endswith("DisDiffModule"):
        return
    if params.get("stage2") is not None and params.get("ldm_ckpt") in (None, "", "???"):
        raise ConfigError(
            "this stage-3 config has model.params.stage2 and no ldm_ckpt: it describes a run whose frozen stage-1/2 "
            "weights are in that run's checkpoint (e.g. an imported one); resume it with -r RUN_DIR, or start a new "
            "stage 3 from a stage-2 run (import the original stage-2 checkpoint with disdiff import-original) with "
            "model.params.ldm_ckpt=<stage-2 run> and without model.params.stage2"
        )


@dataclass
class LearningRate:
    base: float
    scaled: float
    factors: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        if not self.factors:
            return f"learning rate {self.scaled:.3e} (base, --scale_lr false)"
        product = " x ".join(f"{v} ({k})" for k, v in self.factors.items())
        return f"learning rate {self.scaled:.3e} = {product} x {self.base:.3e} (base)"


def scaled_learning_rate(base_lr: float, batch_size: int, accumulate: int, devices: int, num_nodes: int, scale: bool) -> LearningRate:
    """lr = accumulate_grad_batches x devices x nodes x batch_size x base_lr (spec 1.5), or base_lr."""
    if not scale:
        return LearningRate(base_lr, base_lr)
    factors = {"accumulate_grad_batches": accumulate, "devices": devices, "num_nodes": num_nodes, "batch_size": batch_size}
    scaled = base_lr
    for value in factors.values():
        scaled *= value
    return LearningRate(base_lr, scaled, factors)


def count_devices(trainer_cfg: dict) -> int:
    """How many devices ``lightning.trainer.devices`` asks for (``-1``: every visible GPU, at least 1)."""
    devices = trainer_cfg.get("devices", 1)
    if devices in (None, "auto"):
        return 1
    if isinstance(devices, int):
        return max(devices, 1) if devices != -1 else max(torch.cuda.device_count(), 1)
    if isinstance(devices, str):
        if "," in devices:
            return len([d for d in devices.split(",") if d.strip()])
        return max(torch.cuda.device_count(), 1) if int(devices) == -1 else max(int(devices), 1)
    return len(devices)
