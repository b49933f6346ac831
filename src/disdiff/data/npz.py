"""Lazy access to the members of an ``.npz`` archive.

``np.load(path, mmap_mode='r')`` memory-maps ``.npy`` files but *not* the members of an ``.npz``
(it silently reads them whole), which is fatal for MPI3D (12.7 GB). An ``.npz`` is a zip archive
of ``.npy`` files; a member written without compression (``np.savez``) lies in the archive as
plain bytes, so it can be memory-mapped directly: find the member's local file header, skip it and
the ``.npy`` header, and ``np.memmap`` the rest.

Compressed members (``np.savez_compressed``, e.g. the published dSprites file) cannot be mapped.
:func:`open_member` then either decompresses the member once, streaming, into an ``.npy`` file in
the cache folder and maps that (``extract_dir`` given), or reads it into memory.
"""

from __future__ import annotations

import hashlib
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from disdiff.data.base import DatasetError
from disdiff.utils.io import atomic_path

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # 30 bytes
_LOCAL_SIGNATURE = b"PK\x03\x04"
#: Members smaller than this are simply read into memory.
SMALL_MEMBER_BYTES = 64 << 20


@dataclass(frozen=True)
class MemberInfo:
    """What the ``.npy`` header of one archive member says, and where its bytes are."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    compressed: bool
    #: Offset of the array data in the archive file (only meaningful when not compressed).
    data_offset: int

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def _read_npy_header(handle) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
    else:  # pragma: no cover - numpy only writes 1.0/2.0 (3.0 for unicode names)
        shape, fortran, dtype = np.lib.format._read_array_header(handle, version)  # type: ignore[attr-defined]
    return tuple(int(s) for s in shape), bool(fortran), np.dtype(dtype)


def _open_zip(path: Path) -> zipfile.ZipFile:
    if not path.exists():
        raise DatasetError(f"{path}: file not found")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DatasetError(f"{path}: not a readable .npz archive ({exc}); the file may be truncated or corrupt") from exc


def list_members(path: str | Path) -> dict[str, MemberInfo]:
    """Shape, dtype and storage of every array in the archive, without reading the arrays."""
    path = Path(path)
    members: dict[str, MemberInfo] = {}
    with _open_zip(path) as archive, open(path, "rb") as raw:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            key = info.filename[: -len(".npy")]
            try:
                with archive.open(info) as handle:
                    shape, fortran, dtype = _read_npy_header(handle)
                    header_len = handle.tell()
            except (ValueError, zipfile.BadZipFile, OSError, EOFError) as exc:
                raise DatasetError(f"{path}: member {key!r} has an unreadable .npy header ({exc}); "
                                   "the file may be truncated or corrupt") from exc
            raw.seek(info.header_offset)
            fixed = raw.read(_LOCAL_HEADER.size)
            if len(fixed) < _LOCAL_HEADER.size or fixed[:4] != _LOCAL_SIGNATURE:
                raise DatasetError(f"{path}: member {key!r}: bad zip local header; the file may be corrupt")
            fields = _LOCAL_HEADER.unpack(fixed)
            name_len, extra_len = fields[9], fields[10]
            data_start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
            members[key] = MemberInfo(
                name=key, shape=shape, dtype=dtype, fortran_order=fortran,
                compressed=info.compress_type != zipfile.ZIP_STORED or bool(info.flag_bits & 0x1),
                data_offset=data_start + header_len,
            )
    return members


def _check_complete(path: Path, info: MemberInfo) -> None:
    end = info.data_offset + info.nbytes
    size = path.stat().st_size
    if end > size:
        raise DatasetError(f"{path}: member {info.name!r} {info.shape} {info.dtype} needs bytes up to {end} "
                           f"but the file has {size}; the file is truncated")


def open_member(path: str | Path, key: str, extract_dir: str | Path | None = None,
                members: dict[str, MemberInfo] | None = None) -> np.ndarray:
    """Array ``key`` of the archive, memory-mapped read-only where possible.

    * uncompressed member: ``np.memmap`` straight into the archive;
    * compressed member, ``extract_dir`` given and member large: decompressed once (streaming)
      into ``extract_dir/<hash>.npy`` (written atomically) and memory-mapped from there;
    * otherwise: read into memory.
    """
    path = Path(path)
    members = members if members is not None else list_members(path)
    if key not in members:
        raise DatasetError(f"{path}: no array {key!r} in the archive (found: {sorted(members) or 'none'})")
    info = members[key]
    if info.dtype.hasobject:
        raise DatasetError(f"{path}: member {key!r} holds Python objects (dtype {info.dtype}); expected a numeric array")
    if not info.compressed:
        _check_complete(path, info)
        if info.nbytes == 0:
            return np.zeros(info.shape, info.dtype)
        return np.memmap(path, dtype=info.dtype, mode="r", offset=info.data_offset, shape=info.shape,
                         order="F" if info.fortran_order else "C")
    if extract_dir is None or info.nbytes < SMALL_MEMBER_BYTES:
        return _read_compressed(path, key)
    return _extract_to_cache(path, info, Path(extract_dir))


def _read_compressed(path: Path, key: str) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return archive[key]
    except (ValueError, zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DatasetError(f"{path}: member {key!r} could not be decompressed ({exc}); the file may be truncated or corrupt") from exc


def _extract_to_cache(path: Path, info: MemberInfo, extract_dir: Path) -> np.ndarray:
    stat = path.stat()
    tag = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{info.name}|{info.shape}|{info.dtype.str}"
    target = extract_dir / f"{path.stem}-{info.name}-{hashlib.sha1(tag.encode()).hexdigest()[:16]}.npy"
    if target.exists():
        try:
            cached = np.load(target, mmap_mode="r")
            if cached.shape == info.shape and cached.dtype == info.dtype:
                return cached
        except (ValueError, OSError):
            pass  # unreadable cache: extract again
    extract_dir.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(target, suffix=".tmp.npy") as tmp, zipfile.ZipFile(path) as archive, \
                archive.open(info.name + ".npy") as handle:
            _read_npy_header(handle)
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=info.dtype, shape=info.shape,
                                            fortran_order=info.fortran_order)
            flat = out.reshape(-1, order="A").view(np.uint8) if info.nbytes else None
            done, chunk = 0, 16 << 20
            while flat is not None and done < info.nbytes:
                block = handle.read(min(chunk, info.nbytes - done))
                if not block:
                    raise DatasetError(f"{path}: member {info.name!r} ended after {done} of {info.nbytes} bytes; the file is truncated")
                flat[done:done + len(block)] = np.frombuffer(block, np.uint8)
                done += len(block)
            out.flush()
            del out, flat
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DatasetError(f"{path}: member {info.name!r} could not be decompressed ({exc}); the file may be corrupt") from exc
    return np.load(target, mmap_mode="r")

