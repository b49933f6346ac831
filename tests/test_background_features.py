"""The quickstart's frozen features computed in a child process while stage 3 trains
(``QuickstartSettings.background_features``, :mod:`disdiff.pipeline.background_features`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from quickstart_support import make_pretrained, tiny_settings

from disdiff.api import DisDiff
from disdiff.evaluation.export import export_representations
from disdiff.pipeline import export_features as export_features_module
from disdiff.pipeline import quickstart as quickstart_module
from disdiff.pipeline.background_features import BackgroundFeatures
from disdiff.pipeline.quickstart import Quickstart


def _settings(tmp_path, **changes):
    pretrained = make_pretrained(tmp_path / "pretrained", resolution=32)
    return tiny_settings(tmp_path / "qs", dataset="shapes3d-synth", resolution=32, factor_sizes=[2, 2, 2, 2, 2, 3],
                         pretrained_dir=pretrained, features_bf16="false", curve_points=2, **changes)


def _final_codes(out):
    final = sorted((out / "stage3_disdiff" / "representations").glob("step=*.npz"))[-1]
    with np.load(final) as npz:
        return np.asarray(npz["latents"])


def test_child_features_give_the_codes_of_an_in_process_export(tmp_path, two_threads):
    settings = _settings(tmp_path)
    md_path, _ = Quickstart(settings).run()
    out = settings.out
    markdown = md_path.read_text()
    assert "computed in a second process on one thread while stage 3 trained (96 images" in markdown
    assert torch.get_num_threads() == 2  # training's thread given back
    assert not (out / "feature-cache").exists()  # the child's file and folder are gone once read
    # The final export read the child's features; encoding the images in this process gives the same codes.
    model = DisDiff.load(out / "stage3_disdiff")
    from disdiff.data.registry import load_dataset

    dataset = load_dataset("shapes3d-synth", resolution=32, factor_sizes=[2, 2, 2, 2, 2, 3])
    direct = export_representations(model, dataset, batch_size=64, progress=False)
    np.testing.assert_allclose(_final_codes(out), direct, rtol=1e-4, atol=1e-5)


def test_a_failed_child_leaves_the_features_to_the_export(tmp_path, two_threads, monkeypatch):
    class BrokenJob(BackgroundFeatures):
        def __init__(self, num_images, job):
            super().__init__(num_images, {**job, "model_config": {"target": "no.such.Module"}})

    monkeypatch.setattr(export_features_module, "BackgroundFeatures", BrokenJob)
    settings = _settings(tmp_path)
    md_path, _ = Quickstart(settings).run()
    markdown = md_path.read_text()
    assert "The frozen-features process failed (exit code 1, see" in markdown
    assert "child.log" in markdown
    assert _final_codes(settings.out).shape[0] == 96  # the export computed the features itself
    assert torch.get_num_threads() == 2


def test_off_or_on_one_thread_the_features_are_computed_before_stage_3(tmp_path, two_threads, monkeypatch):
    started = []
    monkeypatch.setattr(export_features_module.ExportFeatures, "start_child", lambda self, *args: started.append(1))
    torch.set_num_threads(1)
    md_path, _ = Quickstart(_settings(tmp_path / "one")).run()
    torch.set_num_threads(2)
    Quickstart(_settings(tmp_path / "off", background_features=False)).run()
    assert started == []
    assert "second process" not in md_path.read_text()


def test_child_time_left_follows_its_progress(tmp_path, monkeypatch):
    import disdiff.pipeline.background_features as background

    job = BackgroundFeatures.__new__(BackgroundFeatures)  # no process: only the estimate's arithmetic
    job.num_images, job.progress_file, job.started, job.finished = 1000, tmp_path / "progress.txt", 0.0, None
    job.process = type("Running", (), {"poll": staticmethod(lambda: None)})()
    monkeypatch.setattr(background.time, "monotonic", lambda: 100.0)
    assert job.seconds_left() == 0.0  # no progress yet: no rate
    job.progress_file.write_text("250")
    assert job.seconds_left() == pytest.approx(300.0)  # 250 images in 100 s: the other 750 take 300 s
    job.process = type("Done", (), {"poll": staticmethod(lambda: 0)})()
    assert job.seconds_left() == 0.0


def test_a_failed_run_ends_its_child(tmp_path, two_threads, monkeypatch):
    jobs = []

    class RecordedJob(BackgroundFeatures):
        def __init__(self, num_images, job):
            super().__init__(num_images, job)
            jobs.append(self)

    def failing_stage(self, stage):
        raise RuntimeError(f"stage {stage} failed")

    monkeypatch.setattr(export_features_module, "BackgroundFeatures", RecordedJob)
    monkeypatch.setattr(quickstart_module.Quickstart, "train_stage", failing_stage)
    with pytest.raises(RuntimeError, match="stage disdiff failed"):
        Quickstart(_settings(tmp_path)).run()
    assert len(jobs) == 1 and jobs[0].process.returncode is not None  # not left running
