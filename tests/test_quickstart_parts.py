"""The quickstart's parts on their own: stage plan, curve checkpoints, console lines, and the
train command's progress bar total."""

from __future__ import annotations

import io
import warnings
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from disdiff.pipeline.console import Console
from disdiff.pipeline.curve import dci_sample_fraction, describe_settings, select_curve_steps
from disdiff.pipeline.pretrained import PRETRAINED_ENV, plan_stages
from disdiff.pipeline.settings import STAGES, QuickstartSettings
from disdiff.training.progress import remaining_batches


# ---------------------------------------------------------------------------------- stage plan
@pytest.fixture()
def packaged(tmp_path):
    folder = tmp_path / "pre"
    folder.mkdir()
    for name in ("stage1.ckpt", "stage2.ckpt"):
        (folder / name).write_bytes(b"weights")
    return folder


def test_packaged_stages_only_for_shapes3d_synth_at_32(tmp_path, packaged):
    def plan(dataset="shapes3d-synth", **changes):
        return plan_stages(QuickstartSettings(out=tmp_path, pretrained_dir=packaged, **changes), dataset)

    default = plan()
    assert default.trained == ("disdiff",) and default.stage2_checkpoint == packaged / "stage2.ckpt"
    assert default.notice is None
    assert plan(from_scratch=True).trained == STAGES
    assert plan(resolution=64).trained == STAGES and plan(resolution=64).notice is None
    assert plan("shapes3d").trained == STAGES
    assert plan(None).trained == STAGES  # a bring-your-own file


def test_missing_packaged_files_fall_back_with_a_notice(tmp_path, packaged):
    (packaged / "stage2.ckpt").unlink()
    plan = plan_stages(QuickstartSettings(out=tmp_path, pretrained_dir=packaged), "shapes3d-synth")
    assert plan.trained == STAGES and not plan.uses_pretrained
    assert "stage2.ckpt missing" in plan.notice and str(packaged) in plan.notice and "\n" not in plan.notice


def test_packaged_folder_from_the_environment(tmp_path, packaged, monkeypatch):
    monkeypatch.setenv(PRETRAINED_ENV, str(packaged))
    assert plan_stages(QuickstartSettings(out=tmp_path), "shapes3d-synth").pretrained_dir == packaged
    monkeypatch.setenv(PRETRAINED_ENV, str(tmp_path / "empty"))
    assert plan_stages(QuickstartSettings(out=tmp_path), "shapes3d-synth").notice is not None


def test_budget_goes_to_the_stages_that_train(tmp_path):
    settings = QuickstartSettings(out=tmp_path, minutes=40.0, overhead_fraction=0.25, overhead_minutes_max=10.0)
    assert settings.stage_minutes(("disdiff",)) == {"disdiff": pytest.approx(30.0)}
    assert settings.stage_minutes() == {"autoencoder": pytest.approx(6.0), "ldm": pytest.approx(9.0),
                                        "disdiff": pytest.approx(15.0)}


def test_overhead_and_stage_tail_are_a_fraction_of_the_budget_up_to_a_cap(tmp_path):
    short = QuickstartSettings(out=tmp_path, minutes=12.0)  # 25 % of 12 = 3 minutes, under the 5-minute cap
    assert short.overhead_minutes() == pytest.approx(3.0) and short.training_minutes() == pytest.approx(9.0)
    default = QuickstartSettings(out=tmp_path)  # 30 minutes: 7.5 capped to 5, so 25 minutes train
    assert default.overhead_minutes() == pytest.approx(5.0) and default.training_minutes() == pytest.approx(25.0)
    long = QuickstartSettings(out=tmp_path, minutes=120.0)
    assert long.training_minutes() == pytest.approx(115.0)
    assert long.stage_minutes(("disdiff",)) == {"disdiff": pytest.approx(115.0)}
    # the tail: 5 % of a stage's minutes, at most one minute
    assert default.stage_tail_minutes(10.0) == pytest.approx(0.5)
    assert long.stage_tail_minutes(115.0) == pytest.approx(1.0)
    uncapped = QuickstartSettings(out=tmp_path, minutes=120.0, overhead_minutes_max=float("inf"))
    assert uncapped.training_minutes() == pytest.approx(90.0)


# ------------------------------------------------------------------------------ metric curve
def test_curve_checkpoints_spread_over_the_steps():
    steps = list(range(200, 2801, 200)) + [2913]
    # targets 728, 1456, 2185 of 2913: nearest kept checkpoints 800, 1400, 2200
    assert select_curve_steps(steps, 4) == [800, 1400, 2200, 2913]
    assert select_curve_steps(steps, 1) == [2913]
    assert select_curve_steps([0, 4, 8], 5) == [4, 8]  # fewer checkpoints than points; step 0 is never a point
    assert select_curve_steps([], 4) == []


def test_evaluation_settings_are_named_against_the_published_ones():
    published = {"settings": {"dci": {"num_train": 10000, "num_test": 5000}, "mig": {"num_train": 10000}}}
    assert describe_settings(published) == "published settings"
    cheaper = {"settings": {"dci": {"num_train": 2000, "num_test": 1000}, "mig": {"num_train": 10000}}}
    assert describe_settings(cheaper) == ("cheaper: dci.num_test 1000 (published 5000), "
                                          "dci.num_train 2000 (published 10000)")


# ---------------------------------------------------------------------------------- console
class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_terminal_rewrites_the_stage_line_in_place():
    stream = _Stream(tty=True)
    console = Console(stream, interval=1000.0)
    console.show("[1/2] a: step 1")
    console.show("[1/2] a: step 2")
    console.show("[1/2] a: done", final=True)
    assert stream.getvalue() == "\r[1/2] a: step 1\x1b[K\r[1/2] a: step 2\x1b[K\r[1/2] a: done\x1b[K\n"


def test_other_streams_get_the_line_periodically_and_at_the_end():
    stream = _Stream(tty=False)
    console = Console(stream, interval=1000.0)
    console.show("[1/2] a: step 1")
    console.show("[1/2] a: step 2")  # within the interval: not printed
    console.show("[1/2] a: done", final=True)
    assert stream.getvalue().splitlines() == ["[1/2] a: step 1", "[1/2] a: done"]


# ------------------------------------------------------------------- disdiff train's bar total
def _trainer(batches=14992, max_steps=-1, global_step=0, time_left=None):
    from lightning.pytorch.callbacks import Timer

    callbacks = []
    if time_left is not None:
        timer = Timer(duration={"seconds": 3600})
        timer.time_remaining = lambda stage="train": time_left
        callbacks.append(timer)
    return SimpleNamespace(num_training_batches=batches, max_steps=max_steps, global_step=global_step,
                           callbacks=callbacks)


def test_bar_total_ends_where_the_budget_ends():
    # 10 minutes left at 0.5 s per batch: 1200 batches, not the 14,992 of the epoch
    assert remaining_batches(_trainer(time_left=600.0), 0, 0.5, 1.0) == pytest.approx(1200)
    # max_steps 100 from step 40 with two optimizer steps per batch (the autoencoder): 30 batches
    assert remaining_batches(_trainer(max_steps=100, global_step=40), 0, None, 2.0) == pytest.approx(30)
    # neither: the rest of the epoch
    assert remaining_batches(_trainer(), 92, None, 1.0) == pytest.approx(14900)


def test_train_command_bar_shows_the_steps_it_will_run(tmp_path, monkeypatch, capsys):
    from disdiff.cli.main import main

    monkeypatch.setenv("DISDIFF_CACHE", str(tmp_path / "cache"))
    vq = {"target": "disdiff.models.autoencoder.VQModel",
          "params": {"embed_dim": 3, "n_embed": 16,
                     "ddconfig": dict(double_z=False, z_channels=3, resolution=16, in_channels=3, out_ch=3, ch=8,
                                      ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[], dropout=0.0,
                                      num_groups=4)}}
    config = {"model": {"target": "disdiff.training.autoencoder_module.AutoencoderModule",
                        "params": {"autoencoder_config": vq, "loss_config": {
                            "target": "disdiff.models.autoencoder.losses.VQLPIPSWithDiscriminator",
                            "params": {"disc_start": 0, "disc_ndf": 8, "disc_num_layers": 1, "perceptual_weight": 0.0}}}},
              "data": {"target": "disdiff.data.datamodule.GroundTruthDataModule",
                       "params": {"dataset": "shapes3d-synth",
                                  "dataset_options": {"resolution": 16, "factor_sizes": [2, 2, 2, 2, 2, 4]},
                                  "batch_size": 4, "val_size": 4}},
              "lightning": {"trainer": {"limit_val_batches": 0, "num_sanity_val_steps": 0,
                                        "enable_model_summary": False},
                            "image_logger": {"every_n_train_steps": 0}}}
    path = tmp_path / "ae.yaml"
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # 124 training images in batches of 4: 31 batches per epoch; 6 optimizer steps are 3 batches
        assert main(["train", "-b", str(path), "--run-dir", str(tmp_path / "run"), "--max-steps", "6"]) == 0
    bar = capsys.readouterr().out  # Lightning's tqdm bars write to stdout
    assert "3/3 [" in bar and "/31 [" not in bar and "/6 [" not in bar


def test_bar_resumed_mid_epoch_counts_from_the_restored_batch(tmp_path):
    # Lightning does not call on_train_epoch_start when it resumes mid-epoch; the bar must still
    # start at the restored batch, or tqdm divides all the restored batches by the first second
    # (a resumed 0.5 s/step run showed "84 it/s").
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from disdiff.training.progress import BudgetProgressBar

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    seen = []

    class Spy(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            bar = next(cb for cb in trainer.callbacks if isinstance(cb, BudgetProgressBar)).train_progress_bar
            seen.append((trainer.global_step, bar.n, bar.initial, bar.desc))

    data = DataLoader(TensorDataset(torch.randn(80, 2)), batch_size=4)  # 20 batches per epoch

    def fit(max_steps, ckpt_path=None):
        checkpoints = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=6, save_top_k=-1)
        trainer = pl.Trainer(max_steps=max_steps, callbacks=[BudgetProgressBar(), Spy(), checkpoints], logger=False,
                             accelerator="cpu", enable_model_summary=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(Tiny(), data, ckpt_path=ckpt_path)

    fit(6)
    seen.clear()
    fit(10, str(next(tmp_path.glob("*step=6.ckpt"))))
    step, n, initial, desc = seen[0]
    assert (step, n, initial) == (7, 7, 6) and desc.startswith("Epoch 0")
    assert seen[-1][:3] == (10, 10, 6)


def test_budget_checkpoints_fall_at_fractions_of_the_time_budget(tmp_path):
    from lightning.pytorch.callbacks import Timer

    from disdiff.training.callbacks import BudgetCheckpoints

    clock = {"elapsed": 0.0}
    timer = Timer(duration={"seconds": 100})
    timer.time_elapsed = lambda stage="train": clock["elapsed"]
    timer.time_remaining = lambda stage="train": 100.0 - clock["elapsed"]
    saved = []
    trainer = SimpleNamespace(callbacks=[timer], global_step=0,
                              save_checkpoint=lambda path, weights_only=False: saved.append(path.name))
    callback = BudgetCheckpoints(tmp_path, [0.25, 0.5, 0.75])
    for step, elapsed in [(10, 10.0), (20, 24.9), (30, 25.1), (40, 30.0), (50, 80.0), (60, 99.0)]:
        trainer.global_step, clock["elapsed"] = step, elapsed
        callback.on_train_batch_end(trainer, None, None, None, 0)
    # 25 % first passed at step 30; 50 % and 75 % both at step 50 (one file for both)
    assert saved == ["step=00000030.ckpt", "step=00000050.ckpt"]
    # resumed from a checkpoint that already saved the 25 % point: it is not saved again
    resumed = BudgetCheckpoints(tmp_path, [0.25, 0.5, 0.75])
    resumed.load_state_dict({"saved": [0.25]})
    saved.clear()
    trainer.global_step, clock["elapsed"] = 35, 40.0
    resumed.on_train_batch_end(trainer, None, None, None, 0)
    assert saved == [] and resumed.state_dict() == {"saved": [0.25]}
    # a step the periodic checkpoint (every 10 steps here) saves anyway is left to it
    periodic = BudgetCheckpoints(tmp_path, [0.25, 0.5], periodic_every=10)
    trainer.global_step, clock["elapsed"] = 30, 26.0
    periodic.on_train_batch_end(trainer, None, None, None, 0)
    trainer.global_step, clock["elapsed"] = 51, 55.0
    periodic.on_train_batch_end(trainer, None, None, None, 0)
    assert saved == ["step=00000051.ckpt"] and periodic.saved == [0.25, 0.5]


# ------------------------------------------------------------------------------ report: recipe
@pytest.mark.parametrize("params, expected", [
    ({"num_units": 6, "unit_dim": 1}, "with the paper's loss and procedure (no opt-in deviation)"),
    ({"num_units": 6, "train_reencoder": True, "dis_logit_scale": 5},
     "deviations from the paper's training: train_reencoder = True, dis_logit_scale = 5.0 ("),
    ({"encoder_config": {"width": 8, "downsamplings": 4, "standardize_code": True}, "nested_unit_dropout": 0.5},
     "deviations from the paper's training: nested_unit_dropout = 0.5, encoder_config.standardize_code = True ("),
])
def test_report_names_stage3_deviations(tmp_path, params, expected):
    from disdiff.pipeline.layout import QuickstartLayout
    from disdiff.pipeline.quickstart_report import _stage3_recipe
    from disdiff.pipeline.report import Report

    layout = QuickstartLayout(tmp_path)
    report = Report("t")
    _stage3_recipe(report, layout)  # no stage-3 run yet: nothing to say
    assert report.blocks == []
    config = layout.stage_dir("disdiff") / "configs" / "config.yaml"
    config.parent.mkdir(parents=True)
    OmegaConf.save({"model": {"base_learning_rate": 8e-6, "params": params}}, config)
    _stage3_recipe(report, layout)
    [(kind, text)] = report.blocks
    assert kind == "paragraph" and expected in text and "Base learning rate 8e-06" in text


def test_report_votes_table_gives_each_factors_vote_shares():
    from disdiff.pipeline.quickstart_report import _votes
    from disdiff.pipeline.report import Report

    def record(step, votes):
        return {"step": step, "num_units": 3, "representation_dims": 3,
                "dataset": {"factor_names": ["hue", "size"]}, "metrics": {"factor_vae": {"eval_votes": votes}}}

    report = Report("r")
    _votes(report, [record(5, [[9, 1, 0], [0, 0, 10]]), record(10, [[10, 0, 0], [2, 2, 4]]), {"step": 12}])
    tables = [payload for kind, payload in report.blocks if kind == "table"]
    assert tables == [(["factor", "unit 0", "unit 1", "unit 2"],
                       [["hue", "1.000", "0.000", "0.000"], ["size", "0.250", "0.250", "0.500"]])]
    assert any(kind == "paragraph" and "At step 10" in text for kind, text in report.blocks)
    empty = Report("r")
    _votes(empty, [record(5, [])])
    assert empty.blocks == []  # no active dimension, no votes: no table


def test_the_curve_estimates_a_cheaper_point_by_the_share_of_dci_samples_it_keeps():
    cheaper = {"dci": {"num_train": 2000, "num_test": 1000}}
    assert dci_sample_fraction(cheaper, {}) == pytest.approx(3000 / 15000)  # against the published 10,000 + 5,000
    assert dci_sample_fraction({}, {}) == 1.0
    # a final already cheaper than the curve's settings: never estimated above the final's own time
    assert dci_sample_fraction(cheaper, {"dci": {"num_train": 500, "num_test": 500}}) == 1.0
