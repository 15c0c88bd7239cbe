"""Watching folders from the Collections tab: :class:`Watchers`, one
:class:`~app.service.watch.FolderWatcher` per watched collection, each in a thread of its own owned by
the tab's handlers (:class:`app.web.library.LibraryHandlers`).

A watcher catches up first, then applies the folder's changes as they come (the service's rules: a
folder that disappears deletes nothing). Stopping sets its stop event and waits for its thread (bounded);
:meth:`Watchers.stop_all` runs when the app stops (and at exit). A rename or drop of a watched
collection stops its watcher first.
"""

from __future__ import annotations

import atexit
import logging
import threading
from dataclasses import dataclass, field

from app.errors import AppError
from app.service.watch import FolderWatcher, WatchStatus
from app.web.context import Context
from app.web.library_info import built_with

log = logging.getLogger(__name__)

STOP_WAIT_S = 10.0  # how long stopping waits for a watcher's thread (a change in progress finishes first)


@dataclass
class Watch:
    """One running watcher: its thread, its stop event and its last status."""

    watcher: FolderWatcher
    thread: threading.Thread
    stop: threading.Event = field(default_factory=threading.Event)
    status: WatchStatus | None = None


class Watchers:
    """The folder watchers the page started, by collection name."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._watches: dict[str, Watch] = {}
        self._lock = threading.Lock()
        self._atexit = False

    def names(self) -> set[str]:
        """The collections being watched (their thread alive)."""
        with self._lock:
            return {n for n, w in self._watches.items() if w.thread.is_alive()}

    def watching(self, name: str | None) -> bool:
        return bool(name) and name in self.names()

    def start(self, name: str) -> str:
        """Start watching ``name``'s folder (nothing when it is watched already); a message."""
        with self._lock:
            current = self._watches.get(name)
            if current is not None and current.thread.is_alive():
                return f"{name} is watched already."
            embedder = self.ctx.service.embedder  # the app's model, when the collection was built with it
            watcher = FolderWatcher(self.ctx.config, name, on_status=lambda s: self._seen(name, s),
                                    embedder=embedder if built_with(self.ctx, name) == _model_of(embedder) else None)
            watch = Watch(watcher, threading.Thread(target=self._run, args=(name,), name=f"watch-{name}", daemon=True))
            self._watches[name] = watch
            if not self._atexit:
                atexit.register(self.stop_all)
                self._atexit = True
        watch.thread.start()
        return f"Watching {watcher.root} for {name}: changes are applied as they happen."

    def _run(self, name: str) -> None:
        watch = self._watches[name]
        try:
            watch.watcher.run(watch.stop)
        except AppError as exc:
            watch.status = WatchStatus("stopped", f"stopped: {' '.join(exc.user_message().split())}")
        except Exception:  # noqa: BLE001 - the page gets a line, the log the traceback
            log.exception("watching %s failed", name)
            watch.status = WatchStatus("stopped", "stopped: something went wrong (the details are in the server log)")

    def _seen(self, name: str, status: WatchStatus) -> None:
        watch = self._watches.get(name)
        if watch is not None:
            watch.status = WatchStatus(status.state, status.message, status.changes, status.last)

    def stop(self, name: str) -> str:
        """Stop watching ``name`` and wait for its thread (bounded); a message."""
        with self._lock:
            watch = self._watches.pop(name, None)
        if watch is None or not watch.thread.is_alive():
            return f"{name} is not watched."
        watch.stop.set()
        watch.thread.join(timeout=STOP_WAIT_S)
        return f"Stopped watching {name}."

    def stop_all(self) -> None:
        """Stop every watcher (the app is stopping)."""
        for name in list(self._watches):
            self.stop(name)

    def status_line(self, name: str | None) -> str:
        """The watcher's last status for ``name`` (empty when it is not watched)."""
        watch = self._watches.get(name or "")
        if watch is None:
            return ""
        s = watch.status
        if s is None:
            return "starting…"
        return f"{s.state}: {s.message}" + (f" ({s.changes} changes applied)" if s.changes else "")


def _model_of(embedder) -> tuple[str, str]:
    return embedder.model.name, embedder.weights_id
