"""A training run: its directory, its merged config, and the Lightning Trainer that executes it.

Layout of a run directory::

    <run>/configs/config.yaml        merged config (what the run was built from)
    <run>/run.json                   command line, seed, learning-rate arithmetic, versions
    <run>/checkpoints/last.ckpt      latest state (resume point)
    <run>/checkpoints/step=XXXXXXXX.ckpt
    <run>/logs/metrics.csv           CSV log
    <run>/tensorboard/               TensorBoard events
    <run>/images/train/*.png         image grids from ``module.log_images``
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from disdiff.config import ConfigError, instantiate_from_config
from disdiff.training.callbacks import (
    FinalCheckpoint,
    FiniteLossGuard,
    ImageLogger,
    RandomStateCheckpoint,
    SamplerProgress,
    SyncBuffersFromRankZero,
)
from disdiff.training.checkpoint_io import AtomicCheckpointIO
from disdiff.training.progress import BudgetProgressBar
from disdiff.training.run_config import (
    count_devices, check_fresh_start, scaled_learning_rate, validate_config,
)
from disdiff.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

class RunDirectory:
    """Creates and guards a run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "configs" / "config.yaml"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoint_dir / "last.ckpt"

    def holds_run(self) -> bool:
        return self.config_path.is_file()

    def saved_config(self) -> DictConfig:
        return OmegaConf.load(self.config_path)

    def check(self, config: DictConfig, resume: bool, overwrite: bool) -> None:
        """Refuse to mix two different runs in one directory, unless told to resume or overwrite (writes nothing)."""
        if self.holds_run() and not resume and not overwrite:
            same = OmegaConf.to_yaml(self.saved_config()) == OmegaConf.to_yaml(config)
            what = "the same config" if same else "a different config"
            raise ConfigError(
                f"run directory {self.path} already holds a run ({what}); pass -r/--resume {self.path} to continue it "
                "or --overwrite to replace it"
            )
        if not self.holds_run() and self.path.exists() and any(self.path.iterdir()) and not (resume or overwrite):
            raise ConfigError(f"output directory {self.path} exists and is not empty, and holds no disdiff run; choose another -l/--logdir or name")

    def prepare(self, config: DictConfig, resume: bool, overwrite: bool) -> None:
        """:meth:`check`, then create the directory and write the config (clearing an overwritten run)."""
        self.check(config, resume, overwrite)
        if self.holds_run() and not resume:
            for sub in ("checkpoints", "logs", "tensorboard", "images", "representations", "metrics"):
                shutil.rmtree(self.path / sub, ignore_errors=True)
        (self.path / "configs").mkdir(parents=True, exist_ok=True)
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        # Temporaries of writes interrupted by a kill (see disdiff.utils.io.atomic_path) are never valid files.
        for stale in self.checkpoint_dir.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        atomic_write_text(self.config_path, OmegaConf.to_yaml(config))


def default_run_name(config_paths: list[str], name: str | None, postfix: str = "") -> str:
    stem = name or (Path(config_paths[0]).stem if config_paths else "run")
    return f"{time.strftime('%Y-%m-%dT%H-%M-%S')}_{stem}{postfix}"


def keep_previous_csv_log(run: RunDirectory) -> None:
    """Lightning's CSV logger deletes an existing ``metrics.csv``; on resume, keep it as ``metrics.partK.csv``.

    ``disdiff.pipeline.report.read_training_log`` reads the parts in order, then ``metrics.csv``.
    """
    current = run.path / "logs" / "metrics.csv"
    if current.is_file():
        part = len(list(current.parent.glob("metrics.part*.csv")))
        current.rename(current.parent / f"metrics.part{part}.csv")


def build_trainer(config: DictConfig, run: RunDirectory, extra_trainer_args: dict | None = None,
                  extra_callbacks: list[pl.Callback] | None = None) -> pl.Trainer:
    lightning_cfg = OmegaConf.to_container(config.get("lightning") or OmegaConf.create(), resolve=True)
    trainer_kwargs: dict[str, Any] = dict(lightning_cfg.get("trainer") or {})
    trainer_kwargs.update(extra_trainer_args or {})
    trainer_kwargs.setdefault("accelerator", "auto")
    trainer_kwargs.setdefault("devices", 1)
    trainer_kwargs.setdefault("max_epochs", -1)
    trainer_kwargs.setdefault("log_every_n_steps", 10)

    ckpt_cfg = lightning_cfg.get("checkpoint") or {}
    image_cfg = lightning_cfg.get("image_logger") or {}
    every = int(ckpt_cfg.get("every_n_train_steps", 1000))
    callbacks: list[pl.Callback] = [
        FiniteLossGuard(),
        ModelCheckpoint(
            dirpath=run.checkpoint_dir,
            filename="step={step:08d}",
            auto_insert_metric_name=False,
            every_n_train_steps=every,
            save_top_k=-1,
            save_last=True,
            # A run directory that was copied or moved has a last.ckpt this callback did not write
            # (Lightning keeps last_model_path only for an unchanged dirpath); with versioning it would
            # save beside it as last-v1.ckpt and the next resume would take the stale last.ckpt.
            enable_version_counter=False,
        ),
        ImageLogger(run.path / "images" / "train", **image_cfg),
        SyncBuffersFromRankZero(),
        FinalCheckpoint(run.checkpoint_dir),
        LearningRateMonitor(logging_interval="step"),
        # Exact resume: the random streams and the sampler's place in its epoch are checkpointed.
        RandomStateCheckpoint(),
        SamplerProgress(),
        *(extra_callbacks or []),
    ]
    if trainer_kwargs.get("enable_progress_bar", True) and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(BudgetProgressBar())  # Lightning's bar, with a total that ends where the run ends
    if os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0":
        keep_previous_csv_log(run)  # processes Lightning launches for DDP start after this ran once
    loggers = [
        CSVLogger(save_dir=str(run.path), name="logs", version=""),  # after keep_previous_csv_log()
        TensorBoardLogger(save_dir=str(run.path), name="tensorboard", version="", default_hp_metric=False),
    ]
    return pl.Trainer(
        default_root_dir=str(run.path),
        callbacks=callbacks,
        logger=loggers,
        plugins=[AtomicCheckpointIO()],
        **trainer_kwargs,
    )


def describe_environment() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "lightning": pl.__version__,
        "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
        "cuda_devices": torch.cuda.device_count(),
    }


def write_run_metadata(run: RunDirectory, meta: dict[str, Any]) -> None:
    path = run.path / "run.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    history = previous.get("invocations", [])
    history.append(meta)
    atomic_write_json(path, {"invocations": history})


def build_model_and_data(config: DictConfig) -> tuple[pl.LightningModule, pl.LightningDataModule]:
    model = instantiate_from_config(config.model)
    if "data" not in config:
        raise ConfigError("config has no 'data' block (expected data.target, e.g. disdiff.data.datamodule.GroundTruthDataModule)")
    data = instantiate_from_config(config.data)
    return model, data


# ---------------------------------------------------------------------------------------------
# several processes (DDP): which one is rank 0, how many were started by a launcher
# ---------------------------------------------------------------------------------------------
def launcher_world_size() -> int:
    """Number of processes a launcher (Lightning's own, torchrun, SLURM srun) says this job has; 1 if none."""
    if "WORLD_SIZE" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    if "SLURM_PROCID" in os.environ and "SLURM_NTASKS" in os.environ:
        return int(os.environ["SLURM_NTASKS"])
    return 1


def is_primary_process() -> bool:
    """False in the processes of a multi-process job other than global rank 0.

    Read from the launcher's environment (``RANK`` from torchrun; ``LOCAL_RANK``/``NODE_RANK`` from
    Lightning's launcher; ``SLURM_PROCID`` under srun), so that it is known before the Trainer exists.
    Only the primary process checks and writes the run directory.
    """
    env = os.environ
    if "RANK" in env:
        return int(env["RANK"]) == 0
    if "LOCAL_RANK" in env:
        return int(env["LOCAL_RANK"]) == 0 and int(env.get("NODE_RANK", env.get("GROUP_RANK", 0))) == 0
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", 1)) > 1:
        return int(env["SLURM_PROCID"]) == 0
    return True


def _image_geometry_of_model(model: pl.LightningModule) -> tuple[tuple[int, int, int] | None, str]:
    """((C, H, W), where it comes from) of the images ``model`` is built for, if it records them."""
    encoder = getattr(model, "encoder", None)
    if encoder is not None and hasattr(encoder, "in_channels") and hasattr(encoder, "resolution"):
        h, w = (encoder.resolution, encoder.resolution) if isinstance(encoder.resolution, int) else encoder.resolution
        return (int(encoder.in_channels), int(h), int(w)), "model.params.encoder_config (resolution, in_channels)"
    hp = dict(getattr(model, "hparams", {}) or {})
    for key, where in (("first_stage_config", "model.params.first_stage_config.params.ddconfig"),
                       ("autoencoder_config", "model.params.autoencoder_config.params.ddconfig")):
        block = hp.get(key) or {}
        dd = ((block.get("params") or {}).get("ddconfig") or {}) if isinstance(block, dict) else {}
        if dd.get("resolution") is not None and dd.get("in_channels") is not None:
            res = int(dd["resolution"])
            return (int(dd["in_channels"]), res, res), f"{where} (resolution, in_channels)"
    return None, ""


def check_data_geometry(model: pl.LightningModule, data: pl.LightningDataModule) -> None:
    """The dataset's images must have the size and channels the model was configured for.

    The convolutional networks would otherwise run on other sizes without complaint and train a
    model whose latents do not fit its UNet or encoder.
    """
    expected, where = _image_geometry_of_model(model)
    dataset = getattr(data, "dataset", None)  # opens the dataset: a missing or corrupt file fails here
    shape = getattr(dataset, "image_shape", None)
    if expected is None or shape is None:
        return
    h, w, c = (int(v) for v in shape)
    if (c, h, w) != expected:
        name = getattr(data, "dataset_name", type(dataset).__name__)
        raise ConfigError(
            f"the training images of dataset {name!r} are {h}x{w} with {c} channel(s), but the model is configured "
            f"for {expected[1]}x{expected[2]} with {expected[0]} channel(s) ({where}); change "
            "data.params.dataset_options (e.g. resolution) or the model config so that they agree"
        )


def train(
    config: DictConfig,
    run: RunDirectory,
    *,
    seed: int = 23,
    resume_ckpt: Path | None = None,
    scale_lr: bool = True,
    overwrite: bool = False,
    trainer_overrides: dict | None = None,
    extra_callbacks: list[pl.Callback] | None = None,
    argv: list[str] | None = None,
    resume: bool | None = None,
) -> pl.Trainer:
    """Validate ``config``, build model, data and trainer, prepare ``run``, and fit.

    ``resume`` (default: whether ``resume_ckpt`` is given) continues the run already in ``run``;
    it is True without a checkpoint when a resumed run had not saved one yet.

    Everything that can be wrong with the config, the checkpoints it names or the dataset is
    checked before the run directory is written, so a bad start leaves no half-made run. Under
    several processes only the primary one (global rank 0) checks and writes the run directory.
    This is what ``disdiff train`` runs; the quickstart calls it directly.
    """
    validate_config(config)
    resume = resume_ckpt is not None if resume is None else bool(resume)
    check_fresh_start(config, resume)
    primary = is_primary_process()
    if primary:
        run.check(config, resume=resume, overwrite=overwrite)
    pl.seed_everything(seed, workers=True)
    model, data = build_model_and_data(config)
    check_data_geometry(model, data)
    if primary:
        run.prepare(config, resume=resume, overwrite=overwrite)

    trainer_cfg = OmegaConf.to_container(config.get("lightning", {}).get("trainer", {}) or {}, resolve=True)
    trainer_cfg.update(trainer_overrides or {})
    data_params = config.data.get("params") or {}
    lr = scaled_learning_rate(
        float(config.model.get("base_learning_rate", getattr(model, "learning_rate", 1e-4))),
        batch_size=int(data_params.get("batch_size", 1)),
        accumulate=int(trainer_cfg.get("accumulate_grad_batches", 1)),
        devices=count_devices(trainer_cfg),
        num_nodes=int(trainer_cfg.get("num_nodes", 1)),
        scale=scale_lr,
    )
    model.learning_rate = lr.scaled
    log.info("%s", lr.describe())
    log.info("run directory: %s", run.path)

    trainer = build_trainer(config, run, trainer_overrides, extra_callbacks)
    if trainer.is_global_zero:
        write_run_metadata(run, {
            "argv": argv if argv is not None else sys.argv, "seed": seed,
            "resume_from": str(resume_ckpt) if resume_ckpt else None,
            "learning_rate": lr.scaled, "base_learning_rate": lr.base, "lr_factors": lr.factors,
            "environment": describe_environment(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        })
    trainer.fit(model, datamodule=data, ckpt_path=str(resume_ckpt) if resume_ckpt else None)
    return trainer
