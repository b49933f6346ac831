"""Representation files that do not fit (row count vs dataset size, unit count vs the model or
``--units``), and outputs that already exist: one-line error, exit status 1, nothing overwritten."""

from __future__ import annotations

import numpy as np
import pytest
from test_faults_helpers import FACTORS, make_stage3_run

from disdiff.cli.main import main

DATASET = ["--dataset", "shapes3d-synth", "--dataset-option", "resolution=16", "--dataset-option",
           f"factor_sizes={FACTORS}"]


@pytest.fixture(scope="module")
def run3(tmp_path_factory):
    return make_stage3_run(tmp_path_factory.mktemp("s3"))


def _npz(path, latents):
    np.savez(path, latents=np.asarray(latents, dtype=np.float32))
    return path


def _error(capsys, command):
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"disdiff {command}: error: "), line
    return line


def test_evaluate_rows_do_not_match_dataset(tmp_path, capsys):
    path = _npz(tmp_path / "reps.npz", np.random.default_rng(0).normal(size=(60, 3, 4)))
    out = tmp_path / "m.json"
    assert main(["evaluate", str(path), *DATASET, "--metrics", "mig", "--out", str(out)]) == 1
    line = _error(capsys, "evaluate")
    assert str(path) in line and "60 rows" in line and "64 images" in line, line
    assert not out.exists()


def test_evaluate_units_do_not_divide(tmp_path, capsys):
    path = _npz(tmp_path / "reps.npz", np.random.default_rng(0).normal(size=(64, 3, 4)))
    assert main(["evaluate", str(path), *DATASET, "--metrics", "mig", "--units", "5",
                 "--out", str(tmp_path / "m.json")]) == 1
    line = _error(capsys, "evaluate")
    assert str(path) in line and "5 units" in line, line


def test_evaluate_file_without_latents(tmp_path, capsys):
    path = tmp_path / "reps.npz"
    np.savez(path, codes=np.zeros((64, 3, 4), np.float32))
    assert main(["evaluate", str(path), *DATASET, "--metrics", "mig", "--out", str(tmp_path / "m.json")]) == 1
    line = _error(capsys, "evaluate")
    assert "no 'latents' array" in line and "codes" in line, line


def test_traverse_latents_with_other_unit_count(tmp_path, run3, capsys):
    path = _npz(tmp_path / "reps.npz", np.zeros((64, 4, 3)))
    out = tmp_path / "t.png"
    assert main(["traverse", str(run3), "--latents", str(path), "--steps", "2", "--out", str(out)]) == 1
    line = _error(capsys, "traverse")
    assert str(path) in line and "(64, 4, 3)" in line and "(3, 4)" in line, line
    assert not out.exists()


def test_export_refuses_to_overwrite_and_keeps_the_file(tmp_path, run3, capsys):
    out = tmp_path / "reps.npz"
    out.write_bytes(b"an earlier export")
    assert main(["export", str(run3), "--out", str(out), "--no-progress"]) == 1
    line = _error(capsys, "export")
    assert str(out) in line and "--overwrite" in line, line
    assert out.read_bytes() == b"an earlier export"


def test_export_to_dataset_of_other_image_size(tmp_path, run3, capsys):
    out = tmp_path / "reps.npz"
    assert main(["export", str(run3), "--out", str(out), "--dataset", "shapes3d-synth", "--dataset-option",
                 "resolution=32", "--dataset-option", f"factor_sizes={FACTORS}", "--no-progress"]) == 1
    line = _error(capsys, "export")
    assert "32x32x3" in line and "16x16x3" in line, line
    assert not out.exists()
