"""Crash-safe file writing: write to a temporary file in the same folder, then rename.

A reader therefore sees either the old file or the complete new one, never a half-written one,
and a failed write (disk full, kill) leaves any earlier file untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=suffix if suffix is not None else target.suffix + ".tmp", dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(exc, OSError) and str(target) not in str(exc):
            # Name the file the caller meant to write (disk full, read-only, ...); the old one is untouched.
            reason = exc.strerror or str(exc)
            if exc.errno is None:
                raise OSError(f"cannot write {target}: {reason}") from exc
            raise OSError(exc.errno, f"cannot write {target}: {reason}") from exc
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    # np.savez appends ".npz" to names without it, so the temporary name keeps that suffix.
    with atomic_path(path, suffix=".tmp.npz") as tmp:
        np.savez(tmp, **arrays)


def atomic_save_with(path: str | Path, save: Callable[[Path], None], suffix: str | None = None) -> None:
    """Run ``save(tmp_path)`` and move the result onto ``path`` only if it succeeded."""
    with atomic_path(path, suffix=suffix) as tmp:
        save(tmp)
