"""A failed write (disk full, simulated) is reported in one line with a non-zero exit, and no earlier
file is lost: checkpoints and exports are written to a temporary file and renamed."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import torch
from test_faults_helpers import (
    load_weights_only,
    make_stage1_checkpoint,
    make_stage3_run,
    stage2_config,
    train,
    write_config,
)


def _disk_full(path) -> None:
    Path(path).write_bytes(b"PK\x03\x04 half-written")  # what a full disk leaves behind
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_while_checkpointing(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    config = write_config(tmp_path / "s2.yaml", stage2_config(make_stage1_checkpoint(tmp_path / "s1.ckpt"),
                                                              max_steps=6, every=2))
    real_save = torch.save
    saves = []

    def save(obj, f, *args, **kwargs):
        saves.append(f)
        if len(saves) > 2:  # step=00000002.ckpt and last.ckpt fit on the disk, the next save does not
            _disk_full(f)
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    assert train(["-b", config, "--run-dir", str(run)]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == (f"disdiff train: error: [Errno 28] cannot write {run / 'checkpoints' / 'step=00000004.ckpt'}: "
                    "No space left on device"), line
    monkeypatch.undo()

    # the earlier checkpoints are intact and no half-written file is left
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt", "step=00000002.ckpt"]
    assert load_weights_only(run / "checkpoints" / "last.ckpt")["global_step"] == 2
    assert load_weights_only(run / "checkpoints" / "step=00000002.ckpt")["global_step"] == 2
    assert (run / "configs" / "config.yaml").is_file() and (run / "run.json").is_file()

    # once there is space again the run resumes from its last checkpoint
    assert train(["-r", str(run), "--max-steps", "4"]) == 0
    assert load_weights_only(run / "checkpoints" / "last.ckpt")["global_step"] == 4


def test_disk_full_while_exporting_keeps_the_previous_export(tmp_path, monkeypatch, capsys):
    from disdiff.cli.main import main

    run = make_stage3_run(tmp_path)
    out = tmp_path / "exports" / "reps.npz"
    assert main(["export", str(run), "--out", str(out), "--no-progress"]) == 0
    before = out.read_bytes()
    capsys.readouterr()

    monkeypatch.setattr(np, "savez", lambda file, **arrays: _disk_full(file))
    assert main(["export", str(run), "--out", str(out), "--overwrite", "--no-progress"]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == f"disdiff export: error: [Errno 28] cannot write {out}: No space left on device", line
    monkeypatch.undo()
    assert out.read_bytes() == before and sorted(p.name for p in out.parent.iterdir()) == ["reps.npz"]
    with np.load(out, allow_pickle=False) as data:
        assert data["latents"].shape == (64, 3, 4)
