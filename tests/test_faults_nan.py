"""A NaN or infinite loss stops ``disdiff train`` with the step in a one-line message (exit 1), and the
last checkpoint on disk stays the last good one (nothing is saved after the bad step)."""

from __future__ import annotations

import textwrap

import pytest
from test_faults_helpers import load_weights_only, make_stage1_checkpoint, stage2_config, train, write_config

MODULE = textwrap.dedent('''
    from disdiff.training.ldm_module import LatentDiffusionModule


    class BadLossLDM(LatentDiffusionModule):
        """The stage-2 module whose loss turns non-finite from step ``bad_step`` on."""

        def __init__(self, bad_step=5, bad_value="nan", **params):
            super().__init__(**params)
            self.bad_step, self.bad_value = bad_step, float(bad_value)

        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return loss * self.bad_value if self.global_step >= self.bad_step else loss
''')


@pytest.fixture()
def bad_module(tmp_path, monkeypatch):
    (tmp_path / "bad_loss_module.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "bad_loss_module.BadLossLDM"


def _config(tmp_path, target, bad_step, bad_value):
    config = stage2_config(make_stage1_checkpoint(tmp_path / "s1.ckpt"), max_steps=20, every=2,
                           bad_step=bad_step, bad_value=bad_value)
    config["model"]["target"] = target
    return write_config(tmp_path / "bad.yaml", config)


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path, bad_module, capsys):
    run = tmp_path / "run"
    assert train(["-b", _config(tmp_path, bad_module, 5, "nan"), "--run-dir", str(run)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1
    line = err[-1]
    assert line.startswith("disdiff train: error: non-finite training loss (nan) at global step 5"), line
    assert f"last good checkpoint: {run / 'checkpoints' / 'last.ckpt'}" in line
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    # step 5's update would have been checkpointed at step 6: nothing after the bad step is saved
    assert names == ["last.ckpt", "step=00000002.ckpt", "step=00000004.ckpt"], names
    last = load_weights_only(run / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 4
    assert all(v.isfinite().all() for v in last["state_dict"].values() if v.is_floating_point())


def test_infinite_loss_before_any_checkpoint_says_so(tmp_path, bad_module, capsys):
    run = tmp_path / "run"
    assert train(["-b", _config(tmp_path, bad_module, 1, "inf"), "--run-dir", str(run)]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "non-finite training loss (inf) at global step 1" in line and "no checkpoint had been written yet" in line
    assert not list((run / "checkpoints").glob("*.ckpt"))
    # -r on a run without a checkpoint starts it again from step 0 (here with the fault removed)
    assert train(["-r", str(run), "model.params.bad_step=1000", "--max-steps", "2"]) == 0
    assert load_weights_only(run / "checkpoints" / "last.ckpt")["global_step"] == 2
