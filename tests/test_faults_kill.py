"""A real SIGKILL in the middle of ``disdiff train``, then ``disdiff train -r``: no checkpoint is ever
half-written (each is written to a temporary file and renamed), and training continues from the
last checkpoint to the end."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import lightning.pytorch as pl
import pytest
import torch
from test_faults_helpers import (
    load_weights_only,
    make_stage1_checkpoint,
    stage2_config,
    subprocess_env,
    train,
    write_config,
)

import disdiff.training.run as run_module


class _Recorder(pl.Callback):
    """Where the resumed fit starts (step and weights) and how many batches it trains."""

    batches = 0

    def on_train_start(self, trainer, module):
        self.start_step = trainer.global_step
        self.start_state = {k: v.detach().clone() for k, v in module.state_dict().items()}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.batches += 1


def _checkpoints(run):
    return sorted((run / "checkpoints").glob("*.ckpt"))


def test_sigkill_at_a_random_moment_then_resume(tmp_path, monkeypatch):
    stage1 = make_stage1_checkpoint(tmp_path / "s1.ckpt")
    config = write_config(tmp_path / "s2.yaml", stage2_config(stage1, max_steps=100_000, every=2))
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "disdiff", "train", "-b", config, "--run-dir", str(run), "-s", "3"],
                            env=subprocess_env(tmp_path), cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not list((run / "checkpoints").glob("step=*.ckpt")):
            if proc.poll() is not None:
                pytest.fail(f"training ended before its first checkpoint:\n{proc.stderr.read()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint within 180 s")
            time.sleep(0.02)
        delay = random.uniform(0.0, 1.5)
        time.sleep(delay)
        assert proc.poll() is None, "training ended before the kill"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    # Every *.ckpt on disk is complete; an interrupted write can only leave a hidden temporary.
    names = _checkpoints(run)
    assert run / "checkpoints" / "last.ckpt" in names
    steps = {}
    for path in names:
        ckpt = load_weights_only(path)
        assert "state_dict" in ckpt and "optimizer_states" in ckpt, path
        steps[path.name] = ckpt["global_step"]
    for path in (run / "checkpoints").iterdir():
        assert path.suffix == ".ckpt" or (path.name.startswith(".") and path.name.endswith(".tmp")), path
    # The resume point is the newest checkpoint: last.ckpt, or step=N.ckpt if the kill came between
    # the two files of one save (step=N.ckpt is written first).
    killed_at = max(steps.values())
    assert killed_at >= 2 and killed_at % 2 == 0, f"killed after {delay:.2f}s; checkpoints {steps}"
    assert steps["last.ckpt"] in (killed_at, killed_at - 2), steps
    resume_point = "last.ckpt" if steps["last.ckpt"] == killed_at else f"step={killed_at:08d}.ckpt"

    # Resume: continues from the last checkpoint (step, weights, optimizer) and finishes.
    recorder = _Recorder()
    original = run_module.build_trainer
    monkeypatch.setattr(run_module, "build_trainer",
                        lambda config, run_dir, extra=None, callbacks=None: original(config, run_dir, extra, [recorder]))
    target = killed_at + 4
    assert train(["-r", str(run), "--max-steps", str(target)]) == 0
    assert recorder.start_step == killed_at and recorder.batches == 4
    saved = load_weights_only(run / "checkpoints" / f"step={killed_at:08d}.ckpt")["state_dict"]
    assert all(torch.equal(recorder.start_state[k], saved[k]) for k in saved)
    final = load_weights_only(run / "checkpoints" / "last.ckpt")
    assert final["global_step"] == target
    after = {p.name: load_weights_only(p)["global_step"] for p in _checkpoints(run)}
    assert after[f"step={target:08d}.ckpt"] == target
    for name, step in steps.items():  # nothing written before the kill was lost
        if name != "last.ckpt":
            assert after[name] == step
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.endswith(".tmp")]  # stale temporaries removed
    invocations = json.loads((run / "run.json").read_text())["invocations"]
    assert invocations[-1]["resume_from"] == str(run / "checkpoints" / resume_point)
