"""An exclusive lock on a file (``fcntl.flock``): one change to a collection at a time, across processes."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Iterator

from app.errors import CollectionBusyError


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, *, what: str = "it", wait_s: float = 0.0) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) for the ``with`` block.

    Waits up to ``wait_s`` seconds for another holder, then raises :class:`CollectionBusyError`.
    The lock ends with the process too, so a crash never leaves it held.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise CollectionBusyError(f"Another change to {what} is running.",
                                              hint="Wait for it to finish, then try again.") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
