"""One process at a time: an exclusive lock on a file, held for a ``with`` block.

``fcntl.flock`` on ``PATH`` (created if needed), taken without waiting: the kernel releases it when the
holder exits in any way, ``kill -9`` included, so a lock left by a dead process is simply free again.
The holder's PID is written inside for the message another process gets. Forked children (DataLoader
workers) close their inherited copy at once, so a child that outlives its parent never keeps the lock.
The file itself stays: removing it would let a process that opened it just before lock a file
nobody else can see. Builds and every change to a collection (add, delete, rename, drop) take it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import Iterator

from app.errors import BuildLockedError, StorageError

STALE_RETRY_S = 2.0  # how long a lock whose holder is dead may stay taken (see _try_lock)
_HELD: set[int] = set()  # descriptors of the locks this process holds (closed in forked children)


def _close_inherited() -> None:
    for fd in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(fd)  # closes the child's copy only: the parent's lock stays
    _HELD.clear()


os.register_at_fork(after_in_child=_close_inherited)


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike[str], *, what: str, hint: str | None = None,
                   wait_s: float = 0.0) -> Iterator[Path]:
    """Hold the lock on ``path`` for the block, waiting up to ``wait_s`` seconds for a live holder, or
    raise :class:`BuildLockedError` naming ``what`` is locked, the lock file and the holder's PID."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StorageError(f"Cannot create the lock file {path} ({exc.strerror or exc}).") from exc
    try:
        if not _try_lock(fd, path, wait_s):
            pid = holder_pid(path)
            who = f"process {pid}" if pid is not None else "another process"
            if pid is not None and not pid_alive(pid):
                who += " (no longer running: a process it started still holds the lock)"
            raise BuildLockedError(f"{what} is locked by {who}: {path}.", path=str(path), pid=pid,
                                   hint=hint) from None
        _HELD.add(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield path
        finally:
            _HELD.discard(fd)
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # still locked here: nobody reads a PID that is about to be wrong
    finally:
        os.close(fd)  # releases the lock


def _try_lock(fd: int, path: Path, wait_s: float = 0.0) -> bool:
    """Take the lock, waiting up to ``wait_s`` for a live holder. When the holder is dead, a child it
    forked a moment before may not have closed its copy yet: that takes microseconds, so retry a while."""
    start = time.monotonic()
    for _ in range(200 + int(wait_s * 20)):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            waited = time.monotonic() - start
            pid = holder_pid(path)
            dead = pid is not None and not pid_alive(pid)
            if waited > (max(wait_s, STALE_RETRY_S) if dead else wait_s):
                return False
            time.sleep(0.02 if dead else 0.05)
    return False


def holder_pid(path: str | os.PathLike[str]) -> int | None:
    """The PID written in the lock file ``path``, or None (empty, unreadable, or not a number)."""
    try:
        text = Path(path).read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
