"""``disdiff quickstart --set STAGE:KEY=VALUE``: parsing, the checks made before anything is
written, and the value reaching stage 3's config, the run's identity and the report."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from quickstart_support import make_pretrained, tiny_settings

from disdiff.cli.main import main
from disdiff.pipeline.dataset import QuickstartError
from disdiff.pipeline.overrides import group_sets, parse_set
from disdiff.pipeline.quickstart import Quickstart


@pytest.fixture(autouse=True)
def _small(tmp_path, monkeypatch):
    monkeypatch.setenv("DISDIFF_CACHE", str(tmp_path / "cache"))
    from disdiff.metrics import probe

    monkeypatch.setitem(probe.DEFAULTS, "num_train", 300)
    monkeypatch.setitem(probe.DEFAULTS, "num_test", 100)


def test_set_values_are_split_into_each_stages_dotlist():
    assert parse_set("disdiff:model.params.dis_weight=0.1") == ("disdiff", "model.params.dis_weight=0.1")
    assert parse_set("ldm:model.params.x=[1,2]") == ("ldm", "model.params.x=[1,2]")
    grouped = group_sets(["disdiff:a.b=1", "ldm:c=2", "disdiff:a.b=3"])
    assert grouped == {"disdiff": ["a.b=1", "a.b=3"], "ldm": ["c=2"]}  # order kept: the later value wins
    for bad in ["model.params.x=1", "stage3:model.params.x=1", "disdiff:model.params.x", "disdiff:=1",
                "disdiff:a b=1"]:
        with pytest.raises(ValueError, match="STAGE:KEY=VALUE"):
            parse_set(bad)
    # Keys the quickstart sets itself would be overwritten silently: refused, naming their option.
    for bad, option in [("disdiff:model.params.num_units=5", "--units"),
                        ("disdiff:model.params.encoder_config.resolution=64", "--resolution"),
                        ("disdiff:model.params.encoder_config={width: 8, resolution: 64}", "--resolution"),
                        ("disdiff:data.params.dataset_options.factor_sizes=[2,2]", "--factor-sizes"),
                        ("ldm:model.params.first_stage_ckpt=x.ckpt", "stage 1")]:
        with pytest.raises(ValueError, match="not by --set") as info:
            parse_set(bad)
        assert option in str(info.value)
    assert parse_set("disdiff:model.params.encoder_config.width=32")[1] == "model.params.encoder_config.width=32"


@pytest.mark.parametrize("values, expected", [
    (["disdiff:model.params.no_such_switch=1"], ["unknown parameter(s) ['no_such_switch']", "DisDiffModule"]),
    (["disdiff:model.params.unit_dim=many"], ["'unit_dim'", "must be int", "'many'"]),
    (["disdiff:model.params.train_reencoder=false", "disdiff:model.params.train_reencoder_until=100"],
     ["train_reencoder_until is set but train_reencoder is false"]),
    (["disdiff:model.params.dis_logit_scale=0"], ["dis_logit_scale must be > 0"]),
    (["disdiff:lightning.trainer.no_such_option=1"], ["lightning.trainer.no_such_option"]),
    (["disdiff:data.params.batch_sise=8"], ["unknown parameter(s) ['batch_sise']", "GroundTruthDataModule"]),
    (["ldm:model.params.unet_config.params.model_channels=8"], ["does not train the ldm stage", "--from-scratch"]),
    (["stage3:model.params.dis_weight=1"], ["--set 'stage3:model.params.dis_weight=1'", "autoencoder, ldm, disdiff"]),
])
def test_bad_set_values_fail_before_anything_is_written(tmp_path, capsys, values, expected):
    out = tmp_path / "qs"
    argv = ["quickstart", "--out", str(out)]
    for value in values:
        argv += ["--set", value]
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("disdiff quickstart: error: ")
    for text in expected:
        assert text in err[0]
    assert not out.exists()


def test_set_value_reaches_stage3_the_identity_and_the_report(tmp_path):
    pretrained = make_pretrained(tmp_path / "pretrained", resolution=32)
    value = "disdiff:model.params.dis_logit_scale=3.5"
    settings = tiny_settings(tmp_path / "qs", dataset="shapes3d-synth", resolution=32,
                             factor_sizes=[2, 2, 2, 2, 2, 3], pretrained_dir=pretrained, sets=[value])
    md_path, _ = Quickstart(settings).run()
    config = yaml.safe_load((settings.out / "stage3_disdiff" / "configs" / "config.yaml").read_text())
    assert config["model"]["params"]["dis_logit_scale"] == 3.5  # the small config's 5.0, replaced
    assert config["model"]["params"]["rec_highpass_weight"] == 3.0  # the rest of the small config kept
    assert f"Config values changed with --set (merged after the small configs): {value}." in md_path.read_text()

    # The same folder with another value is another run: refused before anything is touched.
    other = dataclasses.replace(settings, sets=["disdiff:model.params.dis_logit_scale=1.0"])
    with pytest.raises(QuickstartError, match="sets"):
        Quickstart(other).prepare()
    # ... and without any --set too (the identity of a run without values has no "sets" key).
    with pytest.raises(QuickstartError, match="sets"):
        Quickstart(dataclasses.replace(settings, sets=[])).prepare()


def test_a_quickstart_with_the_dpm_feature_encoder_computes_the_frozen_features_once_before_stage3(
        tmp_path, monkeypatch, capsys):
    from disdiff.evaluation.export import FrozenFeatureCache

    fills, calls = [], []
    features = FrozenFeatureCache.features
    stage3_done = tmp_path / "qs" / "stage3_disdiff" / "DONE.json"

    def spy(self, encoder, dataset, batch_size, progress, dataset_key=None, on_batch=None):
        before = self._key
        out = features(self, encoder, dataset, batch_size, progress, dataset_key, on_batch)
        calls.append(len(out))
        if self._key != before:
            fills.append((len(out), stage3_done.is_file()))
        return out

    monkeypatch.setattr(FrozenFeatureCache, "features", spy)
    pretrained = make_pretrained(tmp_path / "pretrained", resolution=32)
    sets = ["disdiff:model.params.encoder_config.backbone=dpm", "disdiff:model.params.encoder_config.hidden=16",
            "disdiff:model.params.encoder_config.standardize_code=true", "disdiff:model.params.train_reencoder=false"]
    settings = tiny_settings(tmp_path / "qs", dataset="shapes3d-synth", resolution=32,
                             factor_sizes=[2, 2, 2, 2, 2, 3], pretrained_dir=pretrained, sets=sets,
                             features_bf16=True)
    quickstart = Quickstart(settings)
    md_path, _ = quickstart.run()
    report = md_path.read_text()
    assert "encoder_config.backbone" in report and "left out" not in report
    assert quickstart.features.cache.used_bf16 and "computed under a bf16 autocast" in report
    # Once, before stage 3 trained (the trained checkpoints' frozen networks hash the same), then
    # read by the final checkpoint's export and the curve's three earlier ones.
    assert fills == [(96, False)] and len(calls) == 5
    console = capsys.readouterr().out
    assert "frozen features: 96 of 96 images" in console  # the progress line (line_interval 0)
    assert "frozen features: 96 images in" in console and "(bf16 autocast)" in console
    assert "features" in quickstart.timings  # timed as a step of its own (the report lists steps of 1 s or more)


def test_the_cnn_encoder_needs_no_frozen_features(tmp_path, capsys):
    pretrained = make_pretrained(tmp_path / "pretrained", resolution=32)
    settings = tiny_settings(tmp_path / "qs", dataset="shapes3d-synth", resolution=32, factor_sizes=[2, 2, 2, 2, 2, 3],
                             pretrained_dir=pretrained, sets=["disdiff:model.params.encoder_config.backbone=cnn",
                                   "disdiff:model.params.dis_reencode_latent=false"],
                             curve_points=1)
    Quickstart(settings).run()
    assert "frozen features: none (the image encoder reads the images themselves)" in capsys.readouterr().out
