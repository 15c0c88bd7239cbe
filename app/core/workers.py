"""DataLoader worker processes that never outlive the build that started them.

A ``kill -9`` of a build gives its decoding workers no chance to be told: one was found asleep 23
minutes later, re-parented to PID 1, holding 561 MB and a pipe. :func:`worker_init_fn` makes each
worker exit on its own within about :data:`PARENT_CHECK_S` of the build's death, two ways:

* Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, so the kernel kills the worker when its parent dies;
* everywhere: a daemon thread that checks the parent is still alive and ends the worker if not (it
  also covers a parent that died before the death signal was armed, and forkserver workers, whose
  parent is the fork server rather than the build).
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
import threading
import time
from typing import Callable

from app.files.lock import pid_alive

PARENT_CHECK_S = 0.5
_MAX_CHECKS = int(30 * 24 * 3600 / PARENT_CHECK_S)  # a month of checks: longer than any build
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def worker_init_fn(parent_pid: int | None = None) -> Callable[[int], None]:
    """The ``worker_init_fn`` for a DataLoader started by this process (``parent_pid``: by default, us)."""
    return functools.partial(_init_worker, os.getpid() if parent_pid is None else parent_pid)


def _init_worker(parent_pid: int, worker_id: int) -> None:
    set_death_signal()
    if not _parent_alive(parent_pid, os.getppid()):  # it died before the death signal was armed
        os._exit(1)
    watcher = threading.Thread(target=_watch_parent, args=(parent_pid, os.getppid()),
                               name=f"parent-watch-{worker_id}", daemon=True)
    watcher.start()


def set_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux); False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _parent_alive(parent_pid: int, first_ppid: int) -> bool:
    ppid = os.getppid()
    if ppid == parent_pid:
        return True
    # Not our direct child (a fork server in between): the build must still exist, and so must the
    # process that forked us (once it is gone we are re-parented and getppid changes).
    return ppid == first_ppid and ppid != 1 and pid_alive(parent_pid)


def _watch_parent(parent_pid: int, first_ppid: int) -> None:
    for _ in range(_MAX_CHECKS):
        if not _parent_alive(parent_pid, first_ppid):
            os._exit(1)  # nothing to flush: the parent that wanted our results is gone
        time.sleep(PARENT_CHECK_S)
