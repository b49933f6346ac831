"""``GroundTruthDataModule``: a LightningDataModule over any ground-truth dataset.

Batches are dicts ``{"image": float32 (B, C, H, W) in [-1, 1], "factors": int64 (B, K),
"index": int64 (B,)}``. Whole batches are read at once by index (one sorted read of a memmap or
HDF5 file per batch instead of B single reads): the loaders' sampler yields index lists and the
dataset view below turns each list into a batch.

* ``val_size`` images are held out for validation, chosen by a permutation seeded with ``seed``
  (an int count, or a float fraction of the dataset; default ``None`` = min(1000, 10% of it)).
* Training batches are reshuffled every epoch, deterministically from ``seed`` and the epoch.
* ``predict_dataloader()`` (and ``test_dataloader()``) go through the whole dataset in canonical
  order without shuffling (representation export for the metrics).
* Resumable: the training loader is a :class:`ResumableDataLoader`, whose sampler state (seed,
  epoch, batches of the epoch already trained) Lightning stores in every checkpoint and restores
  on resume, so a run resumed mid-epoch trains on exactly the batches the uninterrupted run would
  have. :class:`disdiff.training.callbacks.SamplerProgress` tells the sampler how many batches of
  the epoch have been trained (what the loader itself has handed out includes batches Lightning
  fetched ahead). The loaders draw their worker base seed from their own generator, so creating
  an iterator never advances the global torch RNG that training draws its noise from.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from disdiff.data.base import DatasetError, GroundTruthDataset

log = logging.getLogger(__name__)


class BatchView(Dataset):
    """``view[list_of_indices] -> batch dict`` over a GroundTruthDataset (used with ``batch_size=None``)."""

    def __init__(self, dataset: GroundTruthDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices: Sequence[int] | np.ndarray) -> dict[str, torch.Tensor]:
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        images = self.dataset.images(indices)
        return {
            "image": torch.from_numpy(images),
            "factors": torch.from_numpy(np.ascontiguousarray(self.dataset.factors_of(indices), dtype=np.int64)),
            "index": torch.from_numpy(indices.copy()),
        }


def reopen_in_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: drop file handles inherited from the parent (HDF5 is not fork-safe)."""
    info = torch.utils.data.get_worker_info()
    dataset = getattr(info.dataset, "dataset", None) if info is not None else None
    if dataset is not None and getattr(dataset, "_opener", None) is not None:
        dataset._storage = None


class IndexBatchSampler(Sampler):
    """Yields index arrays of ``batch_size`` drawn from ``indices``.

    ``shuffle``: a new permutation every epoch, from ``seed`` and the epoch number (call
    ``set_epoch``; otherwise the sampler counts its own passes).

    Its state (:meth:`state_dict`) is the epoch and ``batches_trained``, the number of batches of
    that epoch that training has consumed; after :meth:`load_state_dict` the pass over that epoch
    starts after those batches.
    """

    def __init__(self, indices: np.ndarray, batch_size: int, shuffle: bool, seed: int = 0, drop_last: bool = False):
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.epoch = 0
        self._explicit_epoch = False
        self.batches_trained = 0
        self._resume: tuple[int, int] | None = None  # (epoch, batches to skip) of a restored state

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._explicit_epoch = True

    def __len__(self) -> int:
        n = len(self.indices)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[np.ndarray]:
        order = self.indices
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            order = order[rng.permutation(len(order))]
        skip = 0
        if self._resume is not None:
            if self._resume[0] == self.epoch:
                skip = self._resume[1]
            self._resume = None
        self.batches_trained = skip
        if not self._explicit_epoch:
            self.epoch += 1
        stop = len(self) * self.batch_size
        for start in range(skip * self.batch_size, stop, self.batch_size):
            yield order[start:start + self.batch_size]

    # ------------------------------------------------------------------ state
    def _identity(self) -> dict[str, int | bool]:
        return {"seed": self.seed, "batch_size": self.batch_size, "num_indices": int(len(self.indices)),
                "shuffle": bool(self.shuffle)}

    def state_dict(self) -> dict[str, int | bool]:
        """Plain ints (checkpoints are read with ``weights_only=True``)."""
        return {**self._identity(), "epoch": int(self.epoch), "batches_trained": int(self.batches_trained)}

    def load_state_dict(self, state: dict) -> None:
        """Resume the pass over ``state["epoch"]`` after its ``batches_trained`` batches.

        A state saved by a sampler over other indices, with another seed or batch size cannot be
        continued exactly; then the epoch restarts from its first batch, with a warning.
        """
        saved = {key: state.get(key) for key in self._identity()}
        if saved != self._identity():
            log.warning("the checkpoint's training sampler differs from this one (%s, now %s): the resumed epoch "
                        "starts from its first batch", saved, self._identity())
            return
        self._resume = (int(state["epoch"]), int(state["batches_trained"]))


class ResumableDataLoader(DataLoader):
    """A DataLoader whose :meth:`state_dict` is its :class:`IndexBatchSampler`'s (Lightning's stateful-loader protocol).

    Under DDP Lightning wraps the sampler in a distributed one; the state is then empty and a
    resumed epoch starts from its first batch, as with any non-resumable loader.
    """

    def index_sampler(self) -> IndexBatchSampler | None:
        return self.sampler if isinstance(self.sampler, IndexBatchSampler) else None

    def state_dict(self) -> dict:
        sampler = self.index_sampler()
        return {"sampler": sampler.state_dict()} if sampler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        sampler = self.index_sampler()
        if sampler is not None and state.get("sampler"):
            sampler.load_state_dict(state["sampler"])


def _plain(options: Any) -> dict:
    """Options as plain Python containers (an OmegaConf DictConfig is converted)."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(options, DictConfig):
            return dict(OmegaConf.to_container(options, resolve=True))
    except ImportError:  # pragma: no cover
        pass
    return dict(options)


def split_indices(num_images: int, val_size: int | float | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) canonical indices; val chosen by a permutation seeded with ``seed``, both sorted."""
    if val_size is None:
        n_val = min(1000, num_images // 10)
    elif isinstance(val_size, float) and 0.0 < val_size < 1.0:
        n_val = int(round(val_size * num_images))
    elif float(val_size).is_integer():
        n_val = int(val_size)
    else:
        raise DatasetError(f"val_size must be a count or a fraction in (0, 1), got {val_size}")
    if n_val < 0 or n_val >= num_images:
        raise DatasetError(f"val_size={val_size} leaves no training images (dataset has {num_images})")
    permutation = np.random.default_rng(seed).permutation(num_images)
    return np.sort(permutation[n_val:]), np.sort(permutation[:n_val])


class GroundTruthDataModule(L.LightningDataModule):
    """LightningDataModule over ``disdiff.data.registry.load_dataset(dataset, data_dir, **dataset_options)``."""

    def __init__(self, dataset: str = "shapes3d-synth", dataset_options: dict[str, Any] | None = None,
                 data_dir: str | None = None, batch_size: int = 64, num_workers: int = 0,
                 val_size: int | float | None = None, seed: int = 0, val_batch_size: int | None = None,
                 predict_batch_size: int | None = None, pin_memory: bool = False):
        super().__init__()
        self.dataset_name = dataset
        self.dataset_options = _plain(dataset_options or {})
        self.data_dir = data_dir
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.val_size = val_size
        self.seed = int(seed)
        self.val_batch_size = int(val_batch_size or batch_size)
        self.predict_batch_size = int(predict_batch_size or max(batch_size, 256))
        self.pin_memory = pin_memory
        if self.batch_size < 1:
            raise DatasetError(f"batch_size must be positive, got {batch_size}")
        self._dataset: GroundTruthDataset | None = None
        self.train_indices: np.ndarray | None = None
        self.val_indices: np.ndarray | None = None

    # ----------------------------------------------------------------- dataset
    @property
    def dataset(self) -> GroundTruthDataset:
        if self._dataset is None:
            from disdiff.data.registry import load_dataset

            self._dataset = load_dataset(self.dataset_name, data_dir=self.data_dir, **self.dataset_options)
        return self._dataset

    def prepare_data(self) -> None:
        prepare = getattr(self.dataset, "prepare", None)
        if callable(prepare):
            prepare()  # e.g. render the shapes3d-synth disk cache once

    def setup(self, stage: str | None = None) -> None:
        if self.train_indices is None:
            self.train_indices, self.val_indices = split_indices(self.dataset.num_images, self.val_size, self.seed)

    # ------------------------------------------------------------- dataloaders
    def _loader(self, sampler: IndexBatchSampler, resumable: bool = False) -> DataLoader:
        # Its own generator: DataLoader.__iter__ draws the workers' base seed from it, which would
        # otherwise advance the global RNG whenever an iterator is made (e.g. on resume).
        generator = torch.Generator().manual_seed(self.seed)
        cls = ResumableDataLoader if resumable else DataLoader
        return cls(BatchView(self.dataset), batch_size=None, sampler=sampler, num_workers=self.num_workers,
                   pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0,
                   worker_init_fn=reopen_in_worker if self.num_workers > 0 else None, generator=generator)

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        drop_last = len(self.train_indices) >= self.batch_size
        # Lightning calls sampler.set_epoch(epoch) at every epoch start.
        sampler = IndexBatchSampler(self.train_indices, self.batch_size, shuffle=True, seed=self.seed, drop_last=drop_last)
        return self._loader(sampler, resumable=True)

    def val_dataloader(self) -> DataLoader | list:
        self.setup("validate")
        if len(self.val_indices) == 0:
            return []
        return self._loader(IndexBatchSampler(self.val_indices, self.val_batch_size, shuffle=False))

    def predict_dataloader(self) -> DataLoader:
        """The whole dataset in canonical order (index 0, 1, 2, ...), no shuffling."""
        return self._loader(IndexBatchSampler(np.arange(self.dataset.num_images), self.predict_batch_size, shuffle=False))

    def test_dataloader(self) -> DataLoader:
        return self.predict_dataloader()
