"""Stages 2 and 3 under Lightning DDP: 2 CPU processes (gloo) through ``disdiff train --strategy ddp``.

A script written into tmp_path runs ``disdiff.cli.main.main(["train", ...])`` twice (stage 2, then
stage 3 on the stage-2 run). Lightning's launcher starts the second process by running the same
script again. A test-only callback, added by wrapping ``disdiff.training.run.build_trainer``,
saves every rank's full state dict and its first batch at the end of training; the test then
checks that the ranks agree on everything, and that the stage-2 scale factor is 1/std over the
latents of *both* ranks' first batches (the original set it on rank 0 only, from rank 0's batch).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from test_faults_helpers import (
    first_stage_config,
    load_weights_only,
    make_stage1_checkpoint,
    stage2_config,
    stage3_config,
    subprocess_env,
    write_config,
)

SCRIPT = textwrap.dedent('''
    import sys
    from pathlib import Path

    import lightning.pytorch as pl
    import torch

    import disdiff.training.run as run_module
    from disdiff.cli.main import main

    OUT = Path(sys.argv[1])
    STAGE = {}


    class DumpRankState(pl.Callback):
        """Save this rank's module state and first batch when training ends."""

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.global_step == 0 and batch_idx == 0:
                self.first = {"image": batch["image"].clone(), "index": batch["index"].clone(),
                              "scale_before": module.scale_factor.clone()}

        def on_train_end(self, trainer, module):
            state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
            torch.save({"state_dict": state, "first_batch": self.first, "world_size": trainer.world_size,
                        "global_step": trainer.global_step},
                       OUT / f"{STAGE['tag']}_rank{trainer.global_rank}.pt")


    original = run_module.build_trainer


    def build_trainer(config, run, extra_trainer_args=None, extra_callbacks=None):
        return original(config, run, extra_trainer_args, [*(extra_callbacks or []), DumpRankState()])


    run_module.build_trainer = build_trainer
    ddp = ["--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "-s", "5"]
    for tag in ("s2", "s3"):
        STAGE["tag"] = tag
        code = main(["train", "-b", str(OUT / f"{tag}.yaml"), "--run-dir", str(OUT / tag), *ddp])
        if code != 0:
            raise SystemExit(code)
''')


def _run(command, tmp_path, env=None, timeout=400):
    """Run ``command`` in its own session; on time-out kill the whole group (the launcher and its ranks)."""
    proc = subprocess.Popen(command, env=env or subprocess_env(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"DDP run timed out:\n{out[-4000:]}")
    return proc.returncode, out


def _run_script(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    return _run([sys.executable, str(script), str(tmp_path)], tmp_path)


def _ranks(tmp_path, tag):
    return [load_weights_only(tmp_path / f"{tag}_rank{r}.pt") for r in (0, 1)]


def _assert_identical(states, what):
    a, b = states[0]["state_dict"], states[1]["state_dict"]
    assert a.keys() == b.keys()
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differing, f"{what}: ranks differ in {differing[:10]}"


def test_stage2_and_stage3_under_ddp_keep_ranks_identical(tmp_path):
    stage1 = make_stage1_checkpoint(tmp_path / "s1.ckpt")
    write_config(tmp_path / "s2.yaml", stage2_config(stage1, max_steps=3, every=3))
    write_config(tmp_path / "s3.yaml", stage3_config(tmp_path / "s2", max_steps=3, every=3))
    code, out = _run_script(tmp_path)
    assert code == 0, out[-4000:]

    # -- stage 2 ----------------------------------------------------------------------------------
    s2 = _ranks(tmp_path, "s2")
    assert [r["world_size"] for r in s2] == [2, 2] and [r["global_step"] for r in s2] == [3, 3]
    _assert_identical(s2, "stage 2")
    # The two ranks trained on different data (the sampler was sharded) ...
    first = [r["first_batch"] for r in s2]
    assert not set(first[0]["index"].tolist()) & set(first[1]["index"].tolist())
    assert all(float(f["scale_before"]) == 1.0 for f in first)
    # ... and the scale factor is 1/std over the latents of both first batches, on both ranks.
    from disdiff.models.autoencoder import load_first_stage
    from disdiff.training.ldm_module import scale_factor_from_latents

    fs = load_first_stage(first_stage_config(), stage1)
    with torch.no_grad():
        z = [fs.encode_to_latent(f["image"]) for f in first]
    expected = scale_factor_from_latents(torch.cat(z))
    per_rank = [scale_factor_from_latents(zr) for zr in z]
    assert min(abs(expected - v) for v in per_rank) > 1e-4 * expected  # the check can tell them apart
    for r in s2:
        assert abs(float(r["state_dict"]["scale_factor"]) - expected) < 1e-5 * expected
    saved = load_weights_only(tmp_path / "s2" / "checkpoints" / "last.ckpt")
    assert saved["global_step"] == 3
    for key, value in saved["state_dict"].items():
        assert torch.equal(value, s2[0]["state_dict"][key]), key  # the checkpoint is what every rank holds

    # -- stage 3 ----------------------------------------------------------------------------------
    s3 = _ranks(tmp_path, "s3")
    assert [r["world_size"] for r in s3] == [2, 2] and [r["global_step"] for r in s3] == [3, 3]
    _assert_identical(s3, "stage 3")
    for r in s3:
        state = r["state_dict"]
        # the stage-2 scale factor, copied at construction on every rank (not by a rank-0 hook)
        assert float(r["first_batch"]["scale_before"]) == float(saved["state_dict"]["scale_factor"])
        assert float(state["scale_factor"]) == float(saved["state_dict"]["scale_factor"])
        # the frozen first stage is the stage-2 one on every rank
        for key, value in saved["state_dict"].items():
            if key.startswith("first_stage."):
                assert torch.equal(state[key], value), key
        # the frozen UNet holds the stage-2 EMA weights on every rank
        for key, value in state.items():
            if key.startswith("denoiser.unet.") and not key.endswith("num_batches_tracked"):
                ema_key = "ema." + key[len("denoiser.unet."):].replace(".", "__")
                source = saved["state_dict"].get(ema_key, saved["state_dict"].get(key[len("denoiser."):]))
                assert torch.equal(value, source), key
    run_json = (tmp_path / "s3" / "run.json").read_text()
    assert '"devices": 2' in run_json  # lr = accumulate x devices x nodes x batch x base


RANK_NAN_MODULE = textwrap.dedent('''
    from disdiff.training.ldm_module import LatentDiffusionModule


    class RankOneNaN(LatentDiffusionModule):
        """Stage 2 whose loss turns NaN on rank 1 only, from step 3 on."""

        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return loss * float("nan") if self.global_step >= 3 and self.global_rank == 1 else loss
''')


@pytest.mark.slow
def test_nan_on_one_rank_stops_every_rank(tmp_path):
    """Without agreement the healthy rank would wait forever in the next all-reduce."""
    (tmp_path / "rank_nan.py").write_text(RANK_NAN_MODULE)
    config = stage2_config(make_stage1_checkpoint(tmp_path / "s1.ckpt"), max_steps=10, every=2)
    config["model"]["target"] = "rank_nan.RankOneNaN"
    path = write_config(tmp_path / "s2.yaml", config)
    env = subprocess_env(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    code, out = _run([sys.executable, "-m", "disdiff", "train", "-b", path, "--run-dir", str(tmp_path / "run"),
                      "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"], tmp_path, env=env, timeout=300)
    assert code == 1, out[-3000:]
    errors = [line for line in out.splitlines() if line.startswith("disdiff train: error:")]
    assert any("(nan) at global step 3" in line for line in errors), errors
    assert any("(on another process) at global step 3" in line for line in errors), errors
    assert load_weights_only(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == 2
