"""One view over ``.npz`` and ``.h5`` files: list arrays, read small ones, open big ones lazily."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from disdiff.data import npz
from disdiff.data.base import DatasetError

NPZ_SUFFIXES = (".npz",)
H5_SUFFIXES = (".h5", ".hdf5", ".hdf")


def _is_hdf5(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(8) == b"\x89HDF\r\n\x1a\n"


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == b"PK\x03\x04"


class ArrayFile:
    """The arrays of an ``.npz`` or HDF5 file, recognised from the file's first bytes.

    ``lazy(key)`` returns a memory map (uncompressed npz member; compressed members are extracted
    into ``extract_dir`` when given) or an ``h5py.Dataset``; ``read(key)`` loads the whole array.
    """

    def __init__(self, path: str | Path, extract_dir: str | Path | None = None):
        self.path = Path(path)
        self.extract_dir = extract_dir
        if not self.path.exists():
            raise DatasetError(f"{self.path}: file not found")
        if not self.path.is_file():
            raise DatasetError(f"{self.path}: not a file")
        if _is_zip(self.path):
            self.kind = "npz"
            self._members = npz.list_members(self.path)
            self._h5 = None
        elif _is_hdf5(self.path):
            self.kind = "h5"
            self._members = None
            self._h5 = self._open_h5()
        else:
            size = self.path.stat().st_size
            raise DatasetError(f"{self.path}: neither an .npz (zip) archive nor an HDF5 file "
                               f"({size} bytes; the file may be truncated, corrupt or of another format)")

    def _open_h5(self) -> Any:
        import h5py

        try:
            return h5py.File(self.path, "r")
        except OSError as exc:
            raise DatasetError(f"{self.path}: unreadable HDF5 file ({exc}); the file may be truncated or corrupt") from exc

    def keys(self) -> list[str]:
        if self.kind == "npz":
            return sorted(self._members)
        return sorted(k for k, v in self._h5.items() if hasattr(v, "shape"))

    def __contains__(self, key: str) -> bool:
        return key in self.keys()

    def shape(self, key: str) -> tuple[int, ...]:
        self._require(key)
        return tuple(self._members[key].shape) if self.kind == "npz" else tuple(self._h5[key].shape)

    def dtype(self, key: str) -> np.dtype:
        self._require(key)
        return self._members[key].dtype if self.kind == "npz" else self._h5[key].dtype

    def _require(self, key: str) -> None:
        if key not in self.keys():
            raise DatasetError(f"{self.path}: no array {key!r} (found: {', '.join(self.keys()) or 'none'})")

    def lazy(self, key: str) -> Any:
        self._require(key)
        if self.kind == "npz":
            return npz.open_member(self.path, key, extract_dir=self.extract_dir, members=self._members)
        return self._h5[key]

    def read(self, key: str) -> np.ndarray:
        self._require(key)
        if self.kind == "npz":
            info = self._members[key]
            if info.dtype.hasobject:
                raise DatasetError(f"{self.path}: {key!r} holds Python objects; expected a plain array")
            return np.array(npz.open_member(self.path, key, members=self._members))
        try:
            data = self._h5[key][()]
        except OSError as exc:
            raise DatasetError(f"{self.path}: {key!r} could not be read ({exc}); the file may be truncated or corrupt") from exc
        return np.asarray(data)

    def read_strings(self, key: str) -> list[str]:
        values = self.read(key)
        return [v.decode() if isinstance(v, bytes) else str(v) for v in np.ravel(values)]

    def opener(self, key: str) -> Callable[[], Any]:
        """A picklable zero-argument callable reopening ``key`` lazily (for DataLoader workers)."""
        return _Reopen(str(self.path), key, None if self.extract_dir is None else str(self.extract_dir))

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None


class _Reopen:
    def __init__(self, path: str, key: str, extract_dir: str | None):
        self.path, self.key, self.extract_dir = path, key, extract_dir

    def __call__(self) -> Any:
        return ArrayFile(self.path, self.extract_dir).lazy(self.key)


def check_readable_tail(storage: Any, where: str, key: str) -> None:
    """Read the last row, so that a truncated file fails now with a clear message, not mid-training."""
    if storage.shape[0] == 0:
        return
    try:
        np.asarray(storage[storage.shape[0] - 1])
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{where}: the last image of {key!r} cannot be read ({exc}); the file is truncated or corrupt") from exc
