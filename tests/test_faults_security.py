"""Loading an untrusted file cannot run code: every checkpoint is read with ``torch.load(weights_only=True)``
and every array file with ``allow_pickle=False``. Crafted pickles go through the real commands."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from test_faults_helpers import FACTORS, make_stage1_checkpoint, stage2_config, stage3_config, train, write_config

pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol")


class _Exploit:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _craft(path, marker, kind):
    payload = {"state_dict": {"w": torch.ones(1)}, "hyper_parameters": {"x": _Exploit(marker)}, "global_step": 1}
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "pickle":
        with open(path, "wb") as handle:
            pickle.dump(payload, handle)
    else:  # a genuine torch.save zip archive whose data.pkl calls os.system
        torch.save(payload, path)
    return path


@pytest.fixture(params=["pickle", "torch-zip"])
def evil(request, tmp_path):
    marker = tmp_path / "pwned"
    return _craft(tmp_path / "evil" / "last.ckpt", marker, request.param), marker


def _error_line(capsys):
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_resume_from_crafted_checkpoint(tmp_path, evil, capsys):
    path, marker = evil
    run = tmp_path / "run"
    write_config(run / "configs" / "config.yaml", stage2_config(make_stage1_checkpoint(tmp_path / "s1.ckpt")))
    (run / "checkpoints").mkdir()
    os.replace(path, run / "checkpoints" / "last.ckpt")
    assert train(["-r", str(run)]) == 1
    line = _error_line(capsys)
    assert "weights_only=True" in line and str(run / "checkpoints" / "last.ckpt") in line, line
    assert not marker.exists()


def test_crafted_stage1_checkpoint_in_stage2_config(tmp_path, evil, capsys):
    path, marker = evil
    config = write_config(tmp_path / "s2.yaml", stage2_config(path))
    assert train(["-b", config, "--run-dir", str(tmp_path / "run")]) == 1
    line = _error_line(capsys)
    assert f"first-stage checkpoint '{path}'" in line and "weights_only" in line.replace("Weights only", "weights_only"), line
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_crafted_stage2_checkpoint_in_stage3_config(tmp_path, evil, capsys):
    path, marker = evil
    config = write_config(tmp_path / "s3.yaml", stage3_config(path))
    assert train(["-b", config, "--run-dir", str(tmp_path / "run")]) == 1
    line = _error_line(capsys)
    assert str(path) in line and "weights_only=True" in line, line
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_export_of_crafted_checkpoint(tmp_path, evil, capsys):
    from disdiff.cli.main import main

    path, marker = evil
    out = tmp_path / "reps.npz"
    assert main(["export", str(path), "--out", str(out), "--dataset", "shapes3d-synth", "--dataset-option",
                 "resolution=16", "--dataset-option", f"factor_sizes={FACTORS}", "--no-progress"]) == 1
    line = _error_line(capsys)
    assert str(path) in line and "weights_only=True" in line, line
    assert not marker.exists() and not out.exists()


def test_representations_with_pickled_objects_are_refused(tmp_path, capsys):
    from disdiff.cli.main import main

    marker = tmp_path / "pwned"
    latents = np.empty((64,), dtype=object)
    latents[0] = _Exploit(marker)
    path = tmp_path / "reps.npz"
    np.savez(path, latents=latents)
    assert main(["evaluate", str(path), "--dataset", "shapes3d-synth", "--dataset-option", "resolution=16",
                 "--dataset-option", f"factor_sizes={FACTORS}", "--metrics", "mig"]) == 1
    line = _error_line(capsys)
    assert str(path) in line and "allow_pickle" in line, line
    assert not marker.exists()
