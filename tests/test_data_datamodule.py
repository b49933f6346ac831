"""GroundTruthDataModule: batch dicts, deterministic held-out split, canonical predict order."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from disdiff.data.base import DatasetError
from disdiff.data.datamodule import GroundTruthDataModule, IndexBatchSampler, split_indices

SYNTH = {"factor_sizes": [2, 2, 2, 2, 4, 3], "resolution": 16, "storage": "memory"}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DISDIFF_CACHE", str(tmp_path / "cache"))


def test_batches_are_dicts_matching_the_dataset():
    dm = GroundTruthDataModule("shapes3d-synth", dataset_options=SYNTH, batch_size=16, val_size=20, seed=3)
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_indices) == 172 and len(dm.val_indices) == 20
    assert not set(dm.train_indices) & set(dm.val_indices)
    batches = list(dm.train_dataloader())
    assert len(batches) == 172 // 16  # drop_last
    batch = batches[0]
    assert set(batch) == {"image", "factors", "index"}
    assert batch["image"].shape == (16, 3, 16, 16) and batch["image"].dtype == torch.float32
    assert batch["factors"].dtype == torch.int64 and batch["factors"].shape == (16, 6)
    assert batch["index"].dtype == torch.int64 and batch["index"].shape == (16,)
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1
    ds = dm.dataset
    assert np.allclose(batch["image"].numpy(), ds.images(batch["index"].numpy()))
    assert np.array_equal(batch["factors"].numpy(), ds.factors_of(batch["index"].numpy()))
    seen = np.concatenate([b["index"].numpy() for b in batches])
    assert set(seen) <= set(dm.train_indices)
    val = list(dm.val_dataloader())
    assert np.array_equal(np.concatenate([b["index"].numpy() for b in val]), dm.val_indices)


def test_split_is_deterministic_by_seed():
    a, b = split_indices(1000, 50, seed=1), split_indices(1000, 50, seed=1)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(split_indices(1000, 50, seed=2)[1], a[1])
    assert len(split_indices(1000, 0.1, seed=0)[1]) == 100
    assert len(split_indices(1000, None, seed=0)[1]) == 100
    with pytest.raises(DatasetError):
        split_indices(10, 10, seed=0)


def test_epochs_reshuffle_deterministically():
    sampler = IndexBatchSampler(np.arange(100), 10, shuffle=True, seed=0)
    sampler.set_epoch(0)
    first = np.concatenate(list(sampler))
    sampler.set_epoch(1)
    second = np.concatenate(list(sampler))
    sampler.set_epoch(0)
    assert np.array_equal(first, np.concatenate(list(sampler)))
    assert not np.array_equal(first, second) and sorted(first) == sorted(second) == list(range(100))


def test_predict_is_canonical_order():
    dm = GroundTruthDataModule("shapes3d-synth", dataset_options=SYNTH, batch_size=8, predict_batch_size=50)
    index = np.concatenate([b["index"].numpy() for b in dm.predict_dataloader()])
    assert np.array_equal(index, np.arange(dm.dataset.num_images))


def test_h5_dataset_with_a_worker(tmp_path):
    sizes = (2, 3, 4)
    factors = np.stack(np.unravel_index(np.arange(24), sizes), axis=1)
    images = np.zeros((24, 8, 8, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(24)
    with h5py.File(tmp_path / "mine.h5", "w") as f:
        f["images"] = images
        f["factor_sizes"] = np.array(sizes)
    dm = GroundTruthDataModule(str(tmp_path / "mine.h5"), batch_size=5, num_workers=1, val_size=4)
    dm.setup()
    got = np.concatenate([((b["image"][:, 0, 0, 0].numpy() + 1) * 127.5).round() for b in dm.predict_dataloader()])
    assert np.array_equal(got, np.arange(24)) and factors.shape == (24, 3)
