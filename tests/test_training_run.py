"""The train command's own logic: config validation, lr scaling, run directories, safe checkpoints."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from omegaconf import OmegaConf

from disdiff.config import ConfigError, instantiate_from_config, load_configs
from disdiff.training.checkpoint_io import AtomicCheckpointIO, load_checkpoint_file
from disdiff.training.run import RunDirectory
from disdiff.training.run_config import scaled_learning_rate, validate_config


def _config(**extra):
    base = {"model": {"target": "torch.nn.Linear", "params": {"in_features": 2, "out_features": 1}},
            "data": {"target": "builtins.dict", "params": {}}}
    base.update(extra)
    return OmegaConf.create(base)


def test_instantiate_from_config_builds_target():
    layer = instantiate_from_config({"target": "torch.nn.Linear", "params": {"in_features": 3, "out_features": 2}})
    assert isinstance(layer, torch.nn.Linear) and layer.weight.shape == (2, 3)


def test_unknown_param_names_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) \['in_feat'\].*valid parameters.*in_features"):
        instantiate_from_config({"target": "torch.nn.Linear", "params": {"in_feat": 3, "out_features": 2}})


def test_unknown_top_level_and_trainer_keys_are_named():
    with pytest.raises(ConfigError, match=r"<root>.modle.*valid keys"):
        validate_config(_config(modle={}))
    with pytest.raises(ConfigError, match=r"lightning.trainer.max_stepz"):
        validate_config(_config(lightning={"trainer": {"max_stepz": 3}}))


def test_wrong_type_base_lr_is_rejected():
    config = _config()
    config.model.base_learning_rate = "fast"
    with pytest.raises(ConfigError, match="base_learning_rate must be a number"):
        validate_config(config)


def test_lr_scaling_matches_spec():
    # Stage 2/3: 1 x 1 x 128 x 2e-6 = 2.56e-4; stage 1: 2 x 1 x 128 x 4.5e-6 = 1.152e-3 (spec 1.5).
    assert scaled_learning_rate(2e-6, 128, 1, 1, 1, True).scaled == pytest.approx(2.56e-4)
    assert scaled_learning_rate(4.5e-6, 128, 2, 1, 1, True).scaled == pytest.approx(1.152e-3)
    assert scaled_learning_rate(4.5e-6, 128, 2, 4, 2, False).scaled == 4.5e-6


def test_dotlist_overrides_merge(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text("model:\n  params:\n    x: 1\n    y: 2\n")
    merged = load_configs([path], ["model.params.y=5"])
    assert merged.model.params.x == 1 and merged.model.params.y == 5


def test_run_directory_refuses_a_different_run(tmp_path):
    run = RunDirectory(tmp_path / "run")
    run.prepare(_config(), resume=False, overwrite=False)
    other = _config(lightning={"trainer": {"max_steps": 7}})
    with pytest.raises(ConfigError, match="already holds a run"):
        run.prepare(other, resume=False, overwrite=False)
    assert OmegaConf.load(run.config_path) == _config()  # the earlier run's config is intact
    run.prepare(other, resume=False, overwrite=True)
    assert OmegaConf.load(run.config_path).lightning.trainer.max_steps == 7


def test_checkpoint_io_is_atomic_and_keeps_old_file_on_failure(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "ckpt" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}}, path)
    assert torch.equal(io.load_checkpoint(path)["state_dict"]["w"], torch.ones(2))

    def disk_full(obj, f, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(2)}}, path)
    monkeypatch.undo()
    assert torch.equal(io.load_checkpoint(path)["state_dict"]["w"], torch.ones(2))
    assert sorted(os.listdir(path.parent)) == ["last.ckpt"]  # no temporary left behind


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned_marker",))


def test_crafted_pickle_checkpoint_cannot_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": _Exploit()}, handle)
    with pytest.raises(ConfigError, match="weights_only=True"):
        load_checkpoint_file(path)
    assert not (tmp_path / "pwned_marker").exists()


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(ConfigError, match="checkpoint file not found.*nope.ckpt"):
        load_checkpoint_file(tmp_path / "nope.ckpt")
