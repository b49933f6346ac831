"""Stage 3 reading its images' frozen features from the quickstart's features process once it is done, or,
without that process, from the features computed before it (``QuickstartSettings.child_features_in_training``,
:class:`TrainOnChildFeatures`, :class:`TrainOnFeatures`, docs/EXPERIMENTS.md D65, D67)."""

from __future__ import annotations

import json

import numpy as np
import torch
from disdiff_support import ImageSet, make_module, random_images
from quickstart_support import make_pretrained, tiny_settings

from disdiff.pipeline import quickstart as quickstart_module
from disdiff.evaluation.export import FrozenFeatureCache
from disdiff.pipeline.background_features import TrainOnChildFeatures, TrainOnFeatures
from disdiff.pipeline.quickstart import Quickstart

EDGES = {"backbone": "dpm", "hidden": 16, "edge_features": True, "edge_source": "reconstruction"}


def test_looked_up_features_give_the_losses_of_computed_ones(ldm_ckpt):
    module = make_module(ldm_ckpt, encoder_config=EDGES, dis_weight=0.5)
    x = random_images(4)
    with torch.no_grad():
        features = module.encoder.features(x)
        computed = module.compute_losses(x, generator=torch.Generator().manual_seed(0))
        looked_up = module.compute_losses(x, generator=torch.Generator().manual_seed(0), x0_features=features)
        other = module.compute_losses(x, generator=torch.Generator().manual_seed(0), x0_features=features.flip(0))
    assert torch.allclose(looked_up["loss"], computed["loss"], rtol=1e-5, atol=1e-7)
    assert torch.allclose(looked_up["z"], computed["z"], atol=1e-5)
    assert not torch.allclose(other["z"], computed["z"], atol=1e-3)  # the looked-up features are what it reads


def test_a_training_step_reads_the_lookup_by_dataset_index(ldm_ckpt):
    module = make_module(ldm_ckpt, encoder_config=EDGES)
    table = torch.randn(10, module.encoder.features(random_images(1)).shape[1])
    asked = []
    module.x0_feature_lookup = lambda index: (asked.append(index.tolist()), table[index])[1]
    batch = {"image": random_images(3), "index": torch.tensor([7, 2, 5])}
    module.training_step(batch, 0)
    assert asked == [[7, 2, 5]]


class FakeJob:
    def __init__(self) -> None:
        self.running = True


class FakeTrainer:
    global_step = 0


def test_the_callback_attaches_once_the_child_is_done_and_detaches_at_the_end():
    job, opened = FakeJob(), []
    features = np.arange(12, dtype=np.float32).reshape(4, 3)
    callback = TrainOnChildFeatures(job, lambda module: (opened.append(module), features)[1])
    module, trainer = type("Module", (), {"x0_feature_lookup": None})(), FakeTrainer()
    callback.on_train_batch_start(trainer, module, None, 0)
    assert module.x0_feature_lookup is None and opened == []  # the child still runs
    job.running, trainer.global_step = False, 40
    callback.on_train_batch_start(trainer, module, None, 0)
    assert callback.attached_at == 40 and opened == [module]
    rows = module.x0_feature_lookup(torch.tensor([3, 0]))
    assert rows.dtype == torch.float32 and rows.tolist() == [[9, 10, 11], [0, 1, 2]]
    callback.on_train_batch_start(trainer, module, None, 0)
    assert opened == [module]  # opened once
    callback.on_train_end(trainer, module)
    assert module.x0_feature_lookup is None


def test_no_features_to_read_leaves_training_computing_them():
    job = FakeJob()
    job.running = False
    callback = TrainOnChildFeatures(job, lambda module: None)
    module = type("Module", (), {"x0_feature_lookup": None})()
    callback.on_train_batch_start(FakeTrainer(), module, None, 0)
    assert module.x0_feature_lookup is None and callback.attached_at is None


def count_reads(pl_module, reads: list) -> None:
    """Wrap the module's feature lookup (once) so that every read appends its batch size to ``reads``."""
    lookup = pl_module.x0_feature_lookup
    if lookup is not None and not getattr(lookup, "counted", False):
        def counted(index):
            reads.append(len(index))
            return lookup(index)
        counted.counted = True
        pl_module.x0_feature_lookup = counted


def test_the_quickstart_trains_on_the_childs_file_once_it_is_written(tmp_path, two_threads, monkeypatch):
    reads = []

    class WaitingReader(TrainOnChildFeatures):
        """Waits for the child at the first step, so the file is there from step 0 on."""

        def on_train_batch_start(self, trainer, pl_module, *args, **kwargs):
            self.job.process.wait()
            super().on_train_batch_start(trainer, pl_module, *args, **kwargs)
            count_reads(pl_module, reads)

    monkeypatch.setattr(quickstart_module, "TrainOnChildFeatures", WaitingReader)
    pretrained = make_pretrained(tmp_path / "pretrained", resolution=32)
    settings = tiny_settings(tmp_path / "qs", dataset="shapes3d-synth", resolution=32, factor_sizes=[2, 2, 2, 2, 2, 3],
                             pretrained_dir=pretrained, features_bf16="false", curve_points=2)
    md_path, _ = Quickstart(settings).run()
    done = json.loads((settings.out / "stage3_disdiff" / "DONE.json").read_text())
    markdown = md_path.read_text()
    assert done["child_features_from_step"] == 0
    assert len(reads) == done["global_step"] and all(n > 0 for n in reads)
    assert "From step 0 on, stage 3 read its images' frozen features" in markdown


def test_without_a_features_process_training_reads_the_features_computed_before_it_from_step_0(tmp_path,
                                                                                                monkeypatch):
    reads = []

    class CountingReader(TrainOnFeatures):
        def on_train_batch_start(self, trainer, pl_module, *args, **kwargs):
            super().on_train_batch_start(trainer, pl_module, *args, **kwargs)
            count_reads(pl_module, reads)

    monkeypatch.setattr(quickstart_module, "TrainOnFeatures", CountingReader)
    pretrained = make_pretrained(tmp_path / "pretrained", resolution=32)
    settings = tiny_settings(tmp_path / "qs", dataset="shapes3d-synth", resolution=32, factor_sizes=[2, 2, 2, 2, 2, 3],
                             pretrained_dir=pretrained, features_bf16="false", curve_points=1,
                             background_features=False)
    md_path, _ = Quickstart(settings).run()
    done = json.loads((settings.out / "stage3_disdiff" / "DONE.json").read_text())
    assert done["child_features_from_step"] == 0
    assert len(reads) == done["global_step"] > 0 and all(n > 0 for n in reads)
    assert "stage 3 read its images' frozen features from those computed before it" in md_path.read_text()


def test_the_cache_hands_over_only_the_features_of_the_encoder_asked_for():
    class Encoder(torch.nn.Module):
        def __init__(self, digest):
            super().__init__()
            self.weight, self.digest = torch.nn.Parameter(torch.zeros(1)), digest

        def features_fingerprint(self):
            return self.digest

        def features(self, x):
            return x.flatten(1)[:, :2]

    cache = FrozenFeatureCache(bf16=False)
    assert cache.held(Encoder("a")) is None  # nothing computed: nothing handed over, nothing computed
    computed = cache.features(Encoder("a"), ImageSet(5), batch_size=2, progress=False)
    assert cache.held(Encoder("a")) is computed and cache.held(Encoder("b")) is None
