"""Lightning callbacks for disdiff runs: image grids, finite-loss guard, final checkpoint, exact resume."""

from __future__ import annotations

import contextlib
import logging
import math
import random
from pathlib import Path
from typing import Any, Iterator

import lightning.pytorch as pl
import numpy as np
import torch

from disdiff.utils.images import save_grid

log = logging.getLogger(__name__)


class ImageLogger(pl.Callback):
    """Every ``every_n_train_steps`` steps, save the grids ``module.log_images(batch, max_images)`` returns.

    Files: ``<run>/images/train/<key>_step-XXXXXXXX.png``. Runs on rank 0 only, in eval mode and
    without gradients, and restores the module's training mode afterwards.
    """

    def __init__(self, image_dir: str | Path, every_n_train_steps: int = 1000, max_images: int = 8, ncol: int = 8,
                 log_first_step: bool = False) -> None:
        super().__init__()
        self.image_dir = Path(image_dir)
        self.every_n_train_steps = int(every_n_train_steps)
        self.max_images = int(max_images)
        self.ncol = int(ncol)
        self.log_first_step = log_first_step

    def _due(self, step: int) -> bool:
        if self.every_n_train_steps <= 0:
            return False
        return (step % self.every_n_train_steps == 0 and step > 0) or (self.log_first_step and step == 1)

    def log_now(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any) -> None:
        if not hasattr(module, "log_images") or not trainer.is_global_zero:
            return
        was_training = module.training
        module.eval()
        try:
            # Grids never advance the training's random streams: a run's weights do not depend on
            # when (or whether) images were drawn.
            with torch.no_grad(), preserved_random_state():
                images = module.log_images(batch, max_images=self.max_images)
        finally:
            module.train(was_training)
        for key, value in images.items():
            path = self.image_dir / f"{key.replace('/', '_')}_step-{trainer.global_step:08d}.png"
            save_grid(value, path, ncol=self.ncol)

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._due(trainer.global_step):
            self.log_now(trainer, module, batch)

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        # Always leave a grid of the final weights, so short runs have pictures too.
        batch = getattr(self, "_last_batch", None)
        if batch is not None:
            self.log_now(trainer, module, batch)

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self._last_batch = batch


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


class FiniteLossGuard(pl.Callback):
    """Stop training as soon as the loss is NaN or infinite, naming the step.

    The checkpoint callback only writes at its interval, so the last checkpoint on disk stays the
    last good one: nothing is saved after the bad step.
    """

    _step = 0

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self._step = trainer.global_step  # the step the loss is logged at (global_step moves on after optimizer.step)

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        value = math.nan if loss is None else float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        bad = loss is not None and not math.isfinite(value)
        # Under DDP every rank must stop together (a rank left waiting in the next all-reduce would hang).
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            where = f"({value})" if loss is not None and not math.isfinite(value) else "(on another process)"
            raise NonFiniteLossError(
                f"non-finite training loss {where} at global step {self._step} (epoch {trainer.current_epoch}, "
                f"batch {batch_idx}); training stopped, nothing was saved after this step"
            )


class SyncBuffersFromRankZero(pl.Callback):
    """At the end of training under DDP, give every rank rank 0's buffers.

    DDP copies rank 0's buffers to the other ranks at the start of every forward pass, but the last
    forward updates BatchNorm running statistics (the image encoder's) from each rank's own batch.
    Rank 0's state is the one saved; after this every rank holds exactly that state.
    """

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.world_size <= 1 or not torch.distributed.is_available() or not torch.distributed.is_initialized():
            return
        for buffer in module.buffers():
            torch.distributed.broadcast(buffer.data, src=0)


class FinalCheckpoint(pl.Callback):
    """Write ``last.ckpt`` and ``step=XXXXXXXX.ckpt`` when fitting ends normally (max_steps or max_time).

    The periodic checkpoint only fires every N steps; without this a run stopped by its time
    budget would lose the steps since the last multiple of N. Not called after an exception, so
    a failed run never overwrites its last good checkpoint.
    """

    def __init__(self, checkpoint_dir: str | Path) -> None:
        super().__init__()
        self.checkpoint_dir = Path(checkpoint_dir)

    def on_fit_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        step_path = self.checkpoint_dir / f"step={trainer.global_step:08d}.ckpt"
        if not step_path.exists():
            trainer.save_checkpoint(step_path, weights_only=False)
        trainer.save_checkpoint(self.checkpoint_dir / "last.ckpt", weights_only=False)


# ---------------------------------------------------------------------------------------------
# exact resume: the random streams and the sampler's place in the epoch
# ---------------------------------------------------------------------------------------------
def random_state() -> dict[str, Any]:
    """The global random streams (torch CPU and CUDA, numpy, Python) as tensors and plain data.

    Plain, so that a checkpoint holding it still loads with ``torch.load(weights_only=True)``.
    """
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": _plain_python_state(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _plain_python_state(state: tuple) -> list:
    version, internal, gauss = state
    return [int(version), [int(v) for v in internal], gauss]


def set_random_state(state: dict[str, Any]) -> None:
    """Restore what :func:`random_state` returned."""
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        # A checkpoint from a machine with more GPUs than this one: the devices present get theirs.
        for device, device_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(device_state, device)


@contextlib.contextmanager
def preserved_random_state() -> Iterator[None]:
    """Run a block without advancing the global random streams (they are put back afterwards)."""
    saved = random_state()
    try:
        yield
    finally:
        set_random_state(saved)


class RandomStateCheckpoint(pl.Callback):
    """Store the global random streams in every checkpoint and restore them on resume.

    Training draws its timesteps, noise and sampled units from the global torch RNG. Without this
    a resumed run would continue from ``seed_everything``'s state instead of the state at the
    checkpoint, and its weights would differ from those of a run that was never interrupted.
    """

    def state_dict(self) -> dict[str, Any]:
        return random_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        set_random_state(state_dict)


class SamplerProgress(pl.Callback):
    """Tell the training loader's sampler how many batches of the epoch have been trained.

    The sampler's state (saved in each checkpoint by Lightning, see
    :class:`disdiff.data.datamodule.ResumableDataLoader`) then names the first batch a resumed run
    must train on. Lightning's ``batch_idx`` counts from the start of the epoch, also after a resume.
    """

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loader = getattr(trainer, "train_dataloader", None)
        sampler = loader.index_sampler() if hasattr(loader, "index_sampler") else None
        if sampler is not None:
            sampler.batches_trained = batch_idx + 1


class BudgetCheckpoints(pl.Callback):
    """Save ``step=XXXXXXXX.ckpt`` when the training time passes each fraction of the time budget.

    The budget is Lightning's Timer (``max_time``): elapsed + remaining. With fractions
    (0.25, 0.5, 0.75) a run keeps checkpoints spread over its budget whatever its speed, which the
    quickstart's metric curve evaluates. Which fractions were saved is part of the checkpoint, so a
    resumed run does not save them again.
    """

    def __init__(self, checkpoint_dir: str | Path, fractions: list[float] | tuple[float, ...],
                 periodic_every: int = 0) -> None:
        super().__init__()
        self.checkpoint_dir = Path(checkpoint_dir)
        self.fractions = sorted(float(f) for f in fractions if 0.0 < float(f) < 1.0)
        #: The periodic checkpoint's interval (lightning.checkpoint.every_n_train_steps): a step it
        #: saves anyway is not written here as well (the same file would be written twice).
        self.periodic_every = int(periodic_every)
        self.saved: list[float] = []

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        from lightning.pytorch.callbacks import Timer

        timer = next((cb for cb in trainer.callbacks if isinstance(cb, Timer)), None)
        remaining = timer.time_remaining() if timer is not None else None
        if remaining is None:
            return
        elapsed = timer.time_elapsed()
        due = [f for f in self.fractions if f not in self.saved and elapsed >= f * (elapsed + remaining)]
        if not due:
            return
        self.saved += due
        if self.periodic_every > 0 and trainer.global_step % self.periodic_every == 0:
            return
        path = self.checkpoint_dir / f"step={trainer.global_step:08d}.ckpt"
        if not path.exists():
            trainer.save_checkpoint(path, weights_only=False)

    def state_dict(self) -> dict[str, Any]:
        return {"saved": list(self.saved)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.saved = [float(f) for f in state_dict.get("saved", [])]
