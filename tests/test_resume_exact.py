"""A run interrupted at a checkpoint and resumed ends with exactly the weights of the run that was
never interrupted (issue 14): same seed, same number of steps, bit for bit.

Stage 3 (DisDiff) on a 64-image grid: 60 training images in batches of 8 make 7 batches per epoch,
checkpoints every 5 steps, validation every 4 and image grids every 6 steps. The interrupted run
dies at step 12; its last checkpoint (step 10) lies in the middle of the second epoch, so the
resumed run must continue that epoch's permutation at its fourth batch, with the random streams
of step 10.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from lightning.pytorch import Callback
from omegaconf import OmegaConf

from disdiff.config import PACKAGED_CONFIG_DIR
from disdiff.training.run import RunDirectory, train

TOTAL_STEPS = 17
INTERRUPT_AT = 12  # dies before training step 12; the last checkpoint is step 10


class Interrupted(RuntimeError):
    pass


class DieAtStep(Callback):
    """Stands in for a kill: the process stops before step ``step``, nothing more is saved."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise Interrupted(f"interrupted at step {self.step}")


def _config(ldm_ckpt, max_steps: int):
    config = OmegaConf.load(PACKAGED_CONFIG_DIR / "disdiff" / "shapes3d-synth-vq-small-dis.yaml")
    config.model.params.update({"ldm_ckpt": str(ldm_ckpt), "num_units": 3, "unit_dim": 4,
                                "encoder_config": {"width": 8, "resolution": 16, "in_channels": 3},
                                "dis_reencode_latent": False,  # the CNN re-encodes images
                                "warmup_steps": 3, "log_ddim_steps": 2, "ema_decay": 0.9,
                                "dis_weight_ramp": [8, 14]})  # the resume (step 10) lands inside the dis ramp
    config.data = {"target": "disdiff.data.datamodule.GroundTruthDataModule",
                   "params": {"dataset": "shapes3d-synth",
                              "dataset_options": {"resolution": 16, "factor_sizes": [2, 2, 2, 2, 2, 2]},
                              "batch_size": 8, "val_size": 4, "seed": 3}}
    config.lightning = {"trainer": {"max_steps": max_steps, "accelerator": "cpu", "devices": 1,
                                    "val_check_interval": 4, "check_val_every_n_epoch": None, "limit_val_batches": 1,
                                    "num_sanity_val_steps": 0, "enable_progress_bar": False,
                                    "enable_model_summary": False, "log_every_n_steps": 1},
                        "checkpoint": {"every_n_train_steps": 5},
                        "image_logger": {"every_n_train_steps": 6, "max_images": 2}}
    return config


def _final_weights(run_dir):
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return checkpoint["global_step"], checkpoint["state_dict"], checkpoint["optimizer_states"][0]["state"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DISDIFF_CACHE", str(tmp_path / "cache"))


def test_interrupted_and_resumed_run_ends_with_the_uninterrupted_weights(tmp_path, ldm_ckpt, recwarn):
    warnings.simplefilter("always")
    straight = RunDirectory(tmp_path / "straight")
    train(_config(ldm_ckpt, TOTAL_STEPS), straight, seed=5)

    resumed = RunDirectory(tmp_path / "resumed")
    with pytest.raises(Interrupted):
        train(_config(ldm_ckpt, TOTAL_STEPS), resumed, seed=5, extra_callbacks=[DieAtStep(INTERRUPT_AT)])
    last = torch.load(resumed.last_checkpoint, map_location="cpu", weights_only=True)
    assert last["global_step"] == 10  # the resume point: 7 batches of epoch 0, 3 of epoch 1
    assert last["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["sampler"]["batches_trained"] == 3
    train(_config(ldm_ckpt, TOTAL_STEPS), resumed, seed=5, resume_ckpt=resumed.last_checkpoint)

    step_a, weights_a, optimizer_a = _final_weights(straight.path)
    step_b, weights_b, optimizer_b = _final_weights(resumed.path)
    assert step_a == step_b == TOTAL_STEPS
    assert weights_a.keys() == weights_b.keys()
    different = [key for key in weights_a if not torch.equal(weights_a[key], weights_b[key])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
    for index, state in optimizer_a.items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(optimizer_b[index][name])), (index, name)
    # ... and Lightning no longer warns that the dataloader cannot resume mid-epoch.
    assert not [w for w in recwarn if "not resumable" in str(w.message)]


def test_training_moved_the_weights(tmp_path, ldm_ckpt):
    """The comparison above is not trivially true: a shorter run ends elsewhere (the steps change weights)."""
    short = RunDirectory(tmp_path / "short")
    train(_config(ldm_ckpt, 4), short, seed=5)
    shorter = RunDirectory(tmp_path / "shorter")
    train(_config(ldm_ckpt, 3), shorter, seed=5)
    _, a, _ = _final_weights(short.path)
    _, b, _ = _final_weights(shorter.path)
    assert any(not torch.equal(a[key], b[key]) for key in a)


def test_sampler_state_continues_the_epoch_where_training_stopped():
    import numpy as np

    from disdiff.data.datamodule import IndexBatchSampler

    def sampler():
        return IndexBatchSampler(np.arange(40), batch_size=4, shuffle=True, seed=9, drop_last=True)

    first = sampler()
    first.set_epoch(2)
    epoch = list(first)
    first.batches_trained = 6  # what SamplerProgress records after batch index 5
    state = first.state_dict()

    second = sampler()
    second.load_state_dict(state)
    second.set_epoch(2)
    rest = list(second)
    assert len(rest) == 4 and all(np.array_equal(a, b) for a, b in zip(rest, epoch[6:]))
    second.set_epoch(3)  # the next epoch is whole again
    assert len(list(second)) == 10
    # A state from a sampler over other data is not continued (the epoch restarts).
    other = IndexBatchSampler(np.arange(44), batch_size=4, shuffle=True, seed=9, drop_last=True)
    other.load_state_dict(state)
    other.set_epoch(2)
    assert len(list(other)) == 11
