"""Atomic file writes: a temp file in the same folder, fsync, then ``os.replace``.

A write that fails because of the storage itself (a full disk, a quota, a read-only or unwritable
folder) leaves no temp file and raises :class:`~app.errors.StorageError`, saying what to do.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from app.errors import StorageError

_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}

# The process umask, read once at import (reading it means setting it, which is not thread-safe).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], *, durable: bool = True) -> Iterator[BinaryIO]:
    """Open a binary temp file beside ``path``; on clean exit it replaces ``path`` atomically.

    On any exception the temp file is removed and ``path`` is left untouched. ``durable=False``
    skips the fsyncs: for caches, which can be remade (a crash may lose the file, never half-write it).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        typed = storage_error(exc, path)
        if typed is None:
            raise
        raise typed from exc
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would have,
        # or keep the mode of the file it replaces.
        try:
            mode = path.stat().st_mode & 0o7777
        except OSError:
            mode = 0o666 & ~_UMASK
        with contextlib.suppress(OSError):
            os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        typed = storage_error(exc, path) if isinstance(exc, OSError) else None
        if typed is not None:
            raise typed from exc
        raise
    if durable:
        fsync_dir(path.parent)


def storage_error(exc: OSError, path: Path) -> StorageError | None:
    """The typed error for a write to ``path`` that the storage refused (full, quota, read-only...);
    None for any other failure."""
    if exc.errno in _FULL:
        return StorageError(
            f"No space left on device while writing {path} ({exc.strerror or 'disk full'}).",
            hint=f"Free some space on the disk holding {path.parent} (or choose another folder with "
                 "--indexes/--features), then run the same command again: a build continues where it stopped.")
    if exc.errno in _NOT_WRITABLE:
        return StorageError(f"Cannot write {path} ({exc.strerror or exc}).",
                            hint=f"Make {path.parent} writable, or choose another folder with --indexes/--features.")
    return None


def fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not supported everywhere (e.g. Windows), hence best effort.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def glob_escape(name: str) -> str:
    return "".join(f"[{ch}]" if ch in "*?[" else ch for ch in name)


def write_bytes(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> None:
    with atomic_writer(path, durable=durable) as fh:
        fh.write(data)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8"))


def write_npy(path: str | os.PathLike[str], array: Any) -> None:
    import numpy as np

    with atomic_writer(path) as fh:
        np.save(fh, array, allow_pickle=False)
