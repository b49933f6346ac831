"""An output directory that already holds a different run (or other files) is refused unless told to
resume (-r) or overwrite (--overwrite); a refusal changes nothing on disk."""

from __future__ import annotations

import pytest
from test_faults_helpers import load_weights_only, make_stage1_checkpoint, stage2_config, train, write_config


@pytest.fixture()
def finished_run(tmp_path):
    stage1 = make_stage1_checkpoint(tmp_path / "s1.ckpt")
    first = write_config(tmp_path / "a.yaml", stage2_config(stage1, max_steps=2, every=2))
    run = tmp_path / "run"
    assert train(["-b", first, "--run-dir", str(run)]) == 0
    other = write_config(tmp_path / "b.yaml", stage2_config(stage1, max_steps=2, every=2, loss_type="l2"))
    return run, first, other


def _snapshot(run):
    return {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_refuses_a_different_run_then_overwrites_or_resumes_on_request(finished_run, capsys):
    run, first, other = finished_run
    before = _snapshot(run)
    capsys.readouterr()

    for config in (other, first):  # a different config, and the same config again
        assert train(["-b", config, "--run-dir", str(run)]) == 1
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert line.startswith("disdiff train: error: ") and str(run) in line, line
        assert "-r" in line and "--overwrite" in line, line
        assert _snapshot(run) == before  # nothing touched

    # resume continues the same run; --overwrite replaces it
    assert train(["-r", str(run), "--max-steps", "4"]) == 0
    assert load_weights_only(run / "checkpoints" / "last.ckpt")["global_step"] == 4
    assert train(["-b", other, "--run-dir", str(run), "--overwrite"]) == 0
    ckpt = load_weights_only(run / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 2 and ckpt["hyper_parameters"]["loss_type"] == "l2"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt", "step=00000002.ckpt"]


def test_refuses_a_directory_holding_other_files(tmp_path, capsys):
    stage1 = make_stage1_checkpoint(tmp_path / "s1.ckpt")
    config = write_config(tmp_path / "a.yaml", stage2_config(stage1))
    target = tmp_path / "precious"
    target.mkdir()
    (target / "thesis.tex").write_text("do not lose me")
    assert train(["-b", config, "--run-dir", str(target)]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"output directory {target} exists and is not empty" in line, line
    assert sorted(p.name for p in target.iterdir()) == ["thesis.tex"]
    assert (target / "thesis.tex").read_text() == "do not lose me"


def test_resume_of_a_directory_without_a_run(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert train(["-r", str(tmp_path / "empty")]) == 1
    assert "holds no run" in capsys.readouterr().err
    assert train(["-r", str(tmp_path / "nowhere")]) == 1
    assert "neither a run directory nor a checkpoint file" in capsys.readouterr().err
