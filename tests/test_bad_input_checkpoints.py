"""Stage-2 and stage-3 configs naming a missing checkpoint, or one made for another latent shape:
``disdiff train`` exits 1 with one line naming the file and the shapes, and makes no run directory."""

from __future__ import annotations

import pytest
from test_faults_helpers import (
    make_stage1_checkpoint,
    make_stage2_checkpoint,
    stage2_config,
    stage3_config,
    train,
    unet_config,
    write_config,
)


def _fails(tmp_path, capsys, config, *expected):
    run = tmp_path / "run"
    assert train(["-b", write_config(tmp_path / "c.yaml", config), "--run-dir", str(run)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    line = err[-1]
    assert line.startswith("disdiff train: error: "), err
    for fragment in expected:
        assert str(fragment) in line, (fragment, line)
    assert not run.exists()
    return line


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    return make_stage1_checkpoint(tmp_path_factory.mktemp("s1") / "s1.ckpt")


# -- stage 2 -----------------------------------------------------------------------------------------
def test_stage2_with_missing_stage1_checkpoint(tmp_path, capsys):
    path = tmp_path / "gone" / "last.ckpt"
    _fails(tmp_path, capsys, stage2_config(path), f"first-stage checkpoint '{path}' not found")


def test_stage2_with_stage1_checkpoint_of_other_latent_channels(tmp_path, capsys):
    path = make_stage1_checkpoint(tmp_path / "z4.ckpt", z_channels=4)
    _fails(tmp_path, capsys, stage2_config(path), f"first-stage checkpoint '{path}'", "makes latents 3x8x8",
           "quant_conv.weight: checkpoint (4, 4, 1, 1) vs config (3, 3, 1, 1)")


def test_stage2_with_stage1_checkpoint_of_other_resolution(tmp_path, capsys):
    path = make_stage1_checkpoint(tmp_path / "r32.ckpt", resolution=32, record_config=True)
    _fails(tmp_path, capsys, stage2_config(path), f"first-stage checkpoint '{path}'",
           "trained on 32x32 images with latents 3x16x16", "describes 16x16 images with latents 3x8x8")


def test_stage2_unet_for_other_latent_size(tmp_path, stage1, capsys):
    _fails(tmp_path, capsys, stage2_config(stage1, unet_config=unet_config(16)),
           "unet_config image_size=16", "latents 3x8x8", "image_size=8")


def test_stage2_with_corrupt_stage1_checkpoint(tmp_path, stage1, capsys):
    path = tmp_path / "half.ckpt"
    path.write_bytes(stage1.read_bytes()[:1000])
    _fails(tmp_path, capsys, stage2_config(path), f"first-stage checkpoint '{path}'", "truncated")


# -- stage 3 -----------------------------------------------------------------------------------------
def test_stage3_with_missing_stage2_checkpoint(tmp_path, capsys):
    path = tmp_path / "s2" / "checkpoints" / "last.ckpt"
    _fails(tmp_path, capsys, stage3_config(path), f"stage-2 (LDM) checkpoint '{path}' not found")


def test_stage3_with_stage2_run_without_checkpoint(tmp_path, capsys):
    (tmp_path / "s2" / "checkpoints").mkdir(parents=True)
    _fails(tmp_path, capsys, stage3_config(tmp_path / "s2"), f"stage-2 run directory '{tmp_path / 's2'}'",
           "no checkpoints/last.ckpt")


def test_stage3_with_stage2_checkpoint_of_other_latent_shape(tmp_path, capsys):
    path = make_stage2_checkpoint(tmp_path / "s2r32.ckpt", resolution=32)
    _fails(tmp_path, capsys, stage3_config(path), f"stage-2 checkpoint '{path}' (latents 3x16x16)",
           "encoder_config.resolution=16", "32x32 images")


def test_stage3_whose_stage2_checkpoint_needs_a_missing_stage1_checkpoint(tmp_path, capsys):
    gone = tmp_path / "s1" / "last.ckpt"
    path = make_stage2_checkpoint(tmp_path / "s2.ckpt", keep_first_stage=False, first_stage_ckpt=str(gone))
    _fails(tmp_path, capsys, stage3_config(path), f"stage-2 checkpoint '{path}' holds no first-stage weights",
           f"first-stage checkpoint '{gone}' not found")


def test_stage3_given_a_stage1_checkpoint_instead_of_stage2(tmp_path, stage1, capsys):
    _fails(tmp_path, capsys, stage3_config(stage1), f"'{stage1}' is not a stage-2 checkpoint")
