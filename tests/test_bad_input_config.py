"""Bad configs through ``disdiff train``: unknown keys name the valid ones, wrong types name the
parameter and the expected type; exit status 1 and no run directory made."""

from __future__ import annotations

import pytest
from test_faults_helpers import make_stage1_checkpoint, stage2_config, train, write_config


@pytest.fixture(scope="module")
def config_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("cfg")
    return write_config(root / "s2.yaml", stage2_config(make_stage1_checkpoint(root / "s1.ckpt")))


CASES = {
    "unknown-model-param": (["model.params.warmup_stepz=3"],
                            ["unknown parameter(s) ['warmup_stepz']", "LatentDiffusionModule", "valid parameters:",
                             "'warmup_steps'"]),
    "unknown-nested-param": (["model.params.unet_config.params.num_res_blockz=1"],
                             ["unknown parameter(s) ['num_res_blockz']", "UNetModel", "'num_res_blocks'"]),
    "unknown-top-level-key": (["trainer.max_steps=3"], ["<root>.trainer", "valid keys", "'lightning'"]),
    "unknown-trainer-key": (["lightning.trainer.max_stepz=3"], ["lightning.trainer.max_stepz", "'max_steps'"]),
    "unknown-data-param": (["data.params.batchsize=3"], ["unknown parameter(s) ['batchsize']", "'batch_size'"]),
    "unknown-checkpoint-key": (["lightning.checkpoint.every=3"], ["lightning.checkpoint.every",
                                                                  "['every_n_train_steps']"]),
    "wrong-type-model": (["model.params.timesteps=many"],
                         ["parameter 'timesteps' of disdiff.training.ldm_module.LatentDiffusionModule must be int",
                          "got str 'many'"]),
    "wrong-type-bool": (["model.params.use_ema=3"], ["parameter 'use_ema'", "must be bool", "got int 3"]),
    "wrong-type-block": (["model.params.unet_config=8"], ["parameter 'unet_config'", "must be dict", "got int 8"]),
    "wrong-type-data": (["data.params.batch_size=1.5"], ["parameter 'batch_size'", "GroundTruthDataModule",
                                                         "must be int", "got float 1.5"]),
    "wrong-type-trainer": (["lightning.trainer.max_steps=ten"], ["parameter 'max_steps' of lightning.trainer must be int"]),
    "wrong-type-checkpoint": (["lightning.checkpoint.every_n_train_steps=often"],
                              ["lightning.checkpoint.every_n_train_steps must be an int", "'often'"]),
    "wrong-type-lr": (["model.base_learning_rate=fast"], ["model.base_learning_rate must be a number"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config_value(tmp_path, config_path, capsys, case):
    overrides, expected = CASES[case]
    run = tmp_path / "run"
    assert train(["-b", config_path, "--run-dir", str(run), *overrides]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("disdiff train: error: ")
    for fragment in expected:
        assert fragment in line, (fragment, line)
    assert not run.exists()


def test_missing_and_malformed_config_files(tmp_path, capsys):
    assert train(["-b", str(tmp_path / "nope.yaml"), "--run-dir", str(tmp_path / "run")]) == 1
    assert "config file" in capsys.readouterr().err and not (tmp_path / "run").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  target: x\n   params: [\n")
    assert train(["-b", str(bad), "--run-dir", str(tmp_path / "run")]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"cannot parse config file {bad}" in line.replace("\\", "/") or "bad.yaml" in line, line
    assert not (tmp_path / "run").exists()
