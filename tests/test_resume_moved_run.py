"""A run directory copied or moved elsewhere, then resumed and interrupted: its ``last.ckpt`` must
be the resume point of the interrupted run, not the state it was copied with.

Lightning restores a ModelCheckpoint's ``last_model_path`` only when the checkpoint directory is
unchanged; in a moved run it finds a ``last.ckpt`` it did not write and, by default, saves the new
"last" as ``last-v1.ckpt`` beside it. The next ``disdiff train -r`` would then resume from the
stale ``last.ckpt`` and silently lose every step since the copy.
"""

from __future__ import annotations

import shutil

import lightning.pytorch as pl
import pytest
from test_faults_helpers import load_weights_only, make_stage1_checkpoint, stage2_config, train, write_config

import disdiff.training.run as run_module


class _StopAt(pl.Callback):
    """Raise once the trainer reaches ``step``: an interruption after a periodic checkpoint."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            raise RuntimeError("interrupted on purpose")


def test_a_copied_run_keeps_last_ckpt_as_its_resume_point(tmp_path, monkeypatch):
    stage1 = make_stage1_checkpoint(tmp_path / "s1.ckpt")
    config = write_config(tmp_path / "s2.yaml", stage2_config(stage1, max_steps=4, every=2))
    original_run = tmp_path / "original"
    assert train(["-b", config, "--run-dir", str(original_run), "-s", "0"]) == 0
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(original_run, moved)

    build = run_module.build_trainer
    monkeypatch.setattr(run_module, "build_trainer",
                        lambda config, run_dir, extra=None, callbacks=None: build(config, run_dir, extra, [_StopAt(7)]))
    with pytest.raises(RuntimeError, match="interrupted on purpose"):
        train(["-r", str(moved), "--max-steps", "10"])

    names = sorted(p.name for p in (moved / "checkpoints").glob("*.ckpt"))
    assert not [n for n in names if n.startswith("last-")], names
    # The periodic save at step 6 is the newest state, and last.ckpt holds it.
    assert load_weights_only(moved / "checkpoints" / "last.ckpt")["global_step"] == 6
    assert load_weights_only(moved / "checkpoints" / "step=00000006.ckpt")["global_step"] == 6
    # The run it was copied from is untouched.
    assert load_weights_only(original_run / "checkpoints" / "last.ckpt")["global_step"] == 4
