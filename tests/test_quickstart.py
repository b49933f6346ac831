"""The quickstart end to end at a tiny budget: stages, export, evaluation, figures, report, resume."""

from __future__ import annotations

import json

import pytest

from disdiff.pipeline.quickstart import Quickstart, QuickstartSettings
from disdiff.pipeline.report import read_training_log

TINY_OVERRIDES = {
    # Tiny networks so that each stage makes several steps within seconds on a CPU.
    "autoencoder": ["model.params.autoencoder_config.params.ddconfig.ch=8",
                    "model.params.autoencoder_config.params.ddconfig.num_groups=4",
                    "model.params.autoencoder_config.params.n_embed=32",
                    "data.params.batch_size=8", "lightning.checkpoint.every_n_train_steps=4"],
    "ldm": ["model.params.unet_config.params.model_channels=16", "model.params.unet_config.params.num_groups=8",
            "model.params.unet_config.params.num_heads=2", "model.params.log_ddim_steps=3",
            "data.params.batch_size=8", "lightning.checkpoint.every_n_train_steps=4"],
    "disdiff": ["model.params.encoder_config.width=16", "model.params.log_ddim_steps=3",
                "data.params.batch_size=8", "lightning.checkpoint.every_n_train_steps=4"],
}


@pytest.fixture()
def tiny_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("DISDIFF_CACHE", str(tmp_path / "cache"))
    return QuickstartSettings(
        out=tmp_path / "qs", minutes=0.6, seed=0, resolution=16, factor_sizes=[2, 2, 2, 2, 4, 3],
        overrides=TINY_OVERRIDES, figure_steps=2,
        metrics_settings=["beta_vae.num_train=200", "beta_vae.num_eval=100", "factor_vae.num_train=200",
                          "factor_vae.num_eval=100", "factor_vae.num_variance_estimate=500", "dci.num_train=200",
                          "dci.num_test=100", "mig.num_train=500"],
    )


def test_quickstart_tiny_end_to_end_and_resume(tiny_settings):
    md_path, html_path = Quickstart(tiny_settings).run()
    out = tiny_settings.out
    for stage in ("stage1_autoencoder", "stage2_ldm", "stage3_disdiff"):
        done = json.loads((out / stage / "DONE.json").read_text())
        assert done["global_step"] > 0
        assert (out / stage / "checkpoints" / "last.ckpt").is_file()
    reps = sorted((out / "stage3_disdiff" / "representations").glob("step=*.npz"))
    assert len(reps) == 1
    records = sorted((out / "stage3_disdiff" / "metrics").glob("step=*.json"))
    assert records, "evaluation wrote no metrics"
    headline = json.loads(records[-1].read_text())["headline"]
    for name in ("FactorVAE", "DCI", "MIG", "beta-VAE"):
        assert 0.0 <= headline[name] <= 1.0
    for figure in ("swap.png", "swap_partial.png", "traverse.png", "dataset_preview.png"):
        assert (out / "figures" / figure).stat().st_size > 0
    markdown = md_path.read_text()
    assert "FactorVAE" in markdown and "0.902" in markdown  # ours next to the paper's
    html = html_path.read_text()
    assert "data:image/png;base64," in html and "<table>" in html  # self-contained

    # Run again: everything is complete, so nothing is retrained or recomputed.
    mtimes = {p: p.stat().st_mtime for p in out.rglob("*.ckpt")}
    rep_mtime = reps[0].stat().st_mtime
    Quickstart(tiny_settings).run()
    assert {p: p.stat().st_mtime for p in out.rglob("*.ckpt")} == mtimes
    assert reps[0].stat().st_mtime == rep_mtime


def test_quickstart_resumes_a_stage_in_progress(tiny_settings):
    quick = Quickstart(tiny_settings)
    quick.out.mkdir(parents=True)
    quick.train_stage("autoencoder")
    # Simulate an interruption during stage 1: no DONE marker, but a last.ckpt.
    (quick.done_marker("autoencoder")).unlink()
    first_step = json.loads((quick.stage_dir("autoencoder") / "run.json").read_text())["invocations"][0]
    assert first_step["resume_from"] is None
    quick.train_stage("autoencoder")
    invocations = json.loads((quick.stage_dir("autoencoder") / "run.json").read_text())["invocations"]
    assert invocations[-1]["resume_from"].endswith(".ckpt")
    # The loss history of the first invocation survives the resume.
    logs = quick.stage_dir("autoencoder") / "logs"
    assert (logs / "metrics.part0.csv").is_file()
    first_steps = {step for step, _ in _series(logs / "metrics.part0.csv")}
    all_steps = {step for step, _ in read_training_log(quick.stage_dir("autoencoder"))["train/rec_loss"]}
    assert first_steps and first_steps <= all_steps


def _series(path):
    from disdiff.pipeline.report import _read_csv_into

    series = {}
    _read_csv_into(path, series)
    return series["train/rec_loss"]


def test_stage_budgets_absorb_an_earlier_overrun(tmp_path):
    settings = QuickstartSettings(out=tmp_path / "qs", minutes=20.0)
    shares = settings.stage_minutes()  # 17 training minutes split 0.2 / 0.3 / 0.5
    qs = Quickstart(settings)
    # on time: every stage gets its share
    assert qs.stage_budget_minutes("autoencoder") == pytest.approx(shares["autoencoder"], abs=0.01)
    # 2 minutes late before the ldm stage: the ldm stage gives them back, the others keep theirs
    qs.clock.deadline -= 60.0 * (shares["autoencoder"] + 2.0)
    assert qs.stage_budget_minutes("ldm") == pytest.approx(shares["ldm"] - 2.0, abs=0.01)
    # hopelessly late: a floor of a tenth of the share still trains something
    qs.clock.deadline -= 60.0 * 100
    assert qs.stage_budget_minutes("disdiff") == pytest.approx(0.1 * shares["disdiff"])
