"""Keeping a folder's collection current: ``python -m app.cli watch --collection NAME``.

:class:`FolderWatcher` listens to the collection's folder with ``watchdog`` (inotify, FSEvents...) and
applies what changed as incremental changes (:mod:`app.service.library`): the paths the events name are
gathered until the folder has been quiet for ``debounce_s`` (a burst of events, such as a copied
album, becomes one change; a steady stream is applied at least every ``max_delay_s``); then every
gathered path that exists is added (new or changed: ``add_paths``) and every one that is gone is
deleted (``delete_items``); a move is both.

* **Start and restart**: an update first (``update_collection``, a rescan that reads only files whose
  size or mtime changed), so what changed while nothing watched is caught up.
* **The folder disappears** (an unmounted drive, a folder moved away) **or is an empty mount point**:
  nothing is deleted; the watcher says so in its status line and waits, then catches up once the
  folder is back. Events are never applied while the folder is missing.
* **Bounded and stoppable**: :meth:`FolderWatcher.run` returns when its ``stop`` event is set (the CLI
  sets it on Ctrl-C) or after ``max_seconds``; the observer thread is always stopped.
* Paths a folder scan would leave out (hidden, excluded by the collection's patterns or ``.risignore``,
  not an image by extension, deleted on purpose with ``delete``) are ignored.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from app.config import Config
from app.core.embed import Embedder, embedder_for
from app.core.exclude import exclude_rules
from app.core.scan import IMAGE_SUFFIXES
from app.errors import AppError, CollectionBusyError
from app.service.commit import read_state
from app.service.excludes import manifest_excludes
from app.service.library import add_paths, delete_items, update_collection
from app.service.update import ChangeSummary

log = logging.getLogger(__name__)

POLL_S = 0.2  # how often the loop looks at the clock, the stop event and the folder
BUSY_RETRY_S = 1.0  # another change holds the collection's lock: try again after this


@dataclass
class WatchStatus:
    """What the watcher is doing, for a status line: ``state`` is ``catching up``, ``watching``,
    ``applying``, ``waiting`` (the folder is gone or empty) or ``stopped``."""

    state: str
    message: str
    changes: int = 0  # changes applied since the start (the catch-up included)
    last: ChangeSummary | None = None


@dataclass
class _Pending:
    """Paths named by events since the last change, and when the first and the last event came."""

    paths: set[str] = field(default_factory=set)
    first: float = 0.0
    last: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, *paths: str) -> None:
        now = time.monotonic()
        with self.lock:
            if not self.paths:
                self.first = now
            self.paths.update(p for p in paths if p)
            self.last = now

    def take(self) -> set[str]:
        with self.lock:
            out, self.paths = self.paths, set()
            return out

    def due(self, debounce_s: float, max_delay_s: float) -> bool:
        now = time.monotonic()
        with self.lock:
            return bool(self.paths) and (now - self.last >= debounce_s or now - self.first >= max_delay_s)


class FolderWatcher:
    """Watches the folder of the collection ``name`` and applies its changes (module docstring)."""

    def __init__(self, config: Config, name: str, *, embedder: Embedder | None = None, debounce_s: float = 0.5,
                 max_delay_s: float = 10.0, on_status: Callable[[WatchStatus], None] | None = None) -> None:
        self.config, self.name = config, name
        self.debounce_s, self.max_delay_s = debounce_s, max_delay_s
        self.on_status = on_status
        self._embedder = embedder
        state = read_state(config, name, mmap=True)
        self.root = Path(state.table.image_root)
        self.patterns = manifest_excludes(state.manifest)
        self.model_config = config.with_(model=state.manifest.model_name,
                                         weights=state.manifest.weights_arg or config.weights)
        self.pending = _Pending()
        self.status = WatchStatus("starting", f"starting to watch {self.root}")
        self._observer: Any = None

    # -- the loop ----------------------------------------------------------------------------------

    def run(self, stop: threading.Event, *, max_seconds: float | None = None) -> WatchStatus:
        """Catch up, then apply changes until ``stop`` is set (or ``max_seconds`` pass)."""
        deadline = time.monotonic() + max_seconds if max_seconds is not None else None
        available, waiting_for = False, ""
        try:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                problem = self._folder_problem()
                if problem:
                    self._stop_observer()
                    self.pending.take()  # what the disappearance looked like: never applied
                    if problem != waiting_for:
                        self._report("waiting", f"waiting for {self.root}: {problem}; the collection is kept "
                                                "and catches up when the folder is back")
                    available, waiting_for = False, problem
                    stop.wait(POLL_S)
                    continue
                waiting_for = ""
                if not available:
                    self._start_observer()  # first, so that nothing changing during the catch-up is missed
                    self._catch_up()
                    available = True
                elif self.pending.due(self.debounce_s, self.max_delay_s):
                    if not self._apply(self.pending.take()):
                        self._catch_up()  # a change failed (a race with another change): a rescan settles it
                stop.wait(POLL_S)
        finally:
            self._stop_observer()
            self._report("stopped", f"stopped watching {self.root}")
        return self.status

    def _folder_problem(self) -> str:
        """Why the folder cannot be watched now ("" when it can): gone, not a folder, or empty."""
        try:
            with os.scandir(self.root) as it:
                empty = next(it, None) is None
        except FileNotFoundError:
            return "the folder is gone (an unmounted drive, or moved away?)"
        except NotADirectoryError:
            return "it is not a folder any more"
        except OSError as exc:
            return f"it cannot be read ({exc.strerror or exc})"
        return "the folder is empty (a drive not mounted?)" if empty else ""

    def _catch_up(self) -> None:
        self._report("catching up", f"catching up with {self.root}")
        self.pending.take()  # the rescan sees all of it
        summary = self._change(lambda emb: update_collection(self.config, self.name, embedder=emb))
        if summary is not None:
            self._changed(summary, "caught up")

    def _apply(self, paths: set[str]) -> bool:
        """Add the gathered paths that exist, delete the ones that are gone (as one change each).
        False when a change failed."""
        if self._folder_problem():
            return True  # the folder went away while the events came in: the loop will wait
        try:
            state = read_state(self.config, self.name)
        except AppError as exc:
            self._report(self.status.state, f"cannot read the collection: {' '.join(exc.user_message().split())}")
            return True
        live, excluded = state.table.live_paths(), set(state.table.excluded)
        rules = exclude_rules(self.root, self.patterns)
        to_add, gone_ids = [], set()
        for path in sorted(paths):
            rel = self._relative(path)
            if rel is None or rel in excluded or self._ignored(rel, rules, os.path.isdir(path)):
                continue
            if os.path.exists(path):
                to_add.append(path)
            else:
                gone_ids.update(i for p, i in live.items() if p == rel or p.startswith(rel + "/"))
        if not to_add and not gone_ids:
            return True
        self._report("applying", f"applying {len(to_add)} new or changed, {len(gone_ids)} removed")
        ok = True
        if gone_ids:
            done = self._change(lambda emb: delete_items(self.config, self.name, ids=sorted(gone_ids),
                                                           on_purpose=False))
            ok = done is not None
            if done is not None:
                self._changed(done, "removed")
        if to_add:
            done = self._change(lambda emb: add_paths(self.config, self.name, to_add, embedder=emb))
            ok = ok and done is not None
            if done is not None:
                self._changed(done, "updated")
        return ok

    def _change(self, fn: Callable[[Embedder], ChangeSummary]) -> ChangeSummary | None:
        """Run one change, waiting while another process holds the collection; a failure is reported
        (None), and the caller catches up with a rescan."""
        for _ in range(30):
            try:
                return fn(self._model())
            except CollectionBusyError:
                time.sleep(BUSY_RETRY_S)
            except AppError as exc:
                self._report(self.status.state, f"a change failed: {' '.join(exc.user_message().split())}")
                return None
        self._report(self.status.state, "the collection stayed busy; the change waits for the next event")
        return None

    # -- helpers -----------------------------------------------------------------------------------

    def _model(self) -> Embedder:
        if self._embedder is None:
            self._embedder = embedder_for(self.model_config)
        return self._embedder

    def _relative(self, path: str) -> str | None:
        try:
            rel = Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return None
        return rel if rel not in ("", ".") else None

    @staticmethod
    def _ignored(rel: str, rules, is_dir: bool) -> bool:
        """Whether a folder scan would leave ``rel`` out without a word: hidden, excluded, not an image."""
        parts = rel.split("/")
        if any(part.startswith(".") for part in parts):
            return True
        if not is_dir and os.path.splitext(parts[-1])[1].lower() not in IMAGE_SUFFIXES:
            return True
        return rules.excluded(rel, is_dir)

    def _changed(self, summary: ChangeSummary, what: str) -> None:
        self.status.changes += 1
        self.status.last = summary
        self._report("watching", f"{what}: {summary.line()}; {summary.collection} has {summary.count} images")

    def _report(self, state: str, message: str) -> None:
        self.status.state, self.status.message = state, message
        log.info("%s", message)
        if self.on_status is not None:
            self.on_status(self.status)

    def _start_observer(self) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        pending = self.pending

        class _Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                if event.event_type in ("opened", "closed_no_write"):
                    return
                if event.is_directory and event.event_type == "modified":
                    return  # a folder's mtime changes with its files: their own events say what changed
                pending.add(os.fsdecode(event.src_path), os.fsdecode(getattr(event, "dest_path", "") or ""))

        self._stop_observer()
        observer = Observer()
        observer.schedule(_Handler(), str(self.root), recursive=True)
        observer.daemon = True
        observer.start()
        self._observer = observer
        self._report("watching", f"watching {self.root} ({self.name})")

    def _stop_observer(self) -> None:
        if self._observer is not None:
            observer, self._observer = self._observer, None
            try:
                observer.stop()
                observer.join(timeout=5)
            except Exception:  # noqa: BLE001 - an observer of a vanished folder may fail to stop cleanly
                log.debug("stopping the observer failed", exc_info=True)
