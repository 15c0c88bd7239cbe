"""The Collections tab: index a folder of your own photos, and manage collections, from the page.

Only folders under the roots given at launch (``--library-root DIR``, repeatable) can be indexed,
added or named by path; without one, the tab lists the collections and says how to turn indexing on.
A path is checked after resolving symbolic links, so a link cannot lead out of a root.

An index job runs in a thread of its own, one at a time, outside Gradio's queue: searching goes on
while it runs. The page polls :meth:`LibraryHandlers.progress_html` (a ``gr.Timer`` in
:mod:`app.web.library_tab`) for its progress (phase, done/total, images/s, ETA); Cancel stops it between
steps, leaving the collection as it was.
Every change goes through :mod:`app.service.library` (locked, atomic, mirrored to Milvus with
``--backend milvus``); errors become one-line messages in the tab's guards. A folder is chosen by
browsing under the roots (:mod:`app.web.library_browse`) or typed; the table and a collection's details
come from :mod:`app.web.library_info`; the "Watch this folder" switch starts and stops a
:class:`~app.service.watch.FolderWatcher` thread (:mod:`app.web.library_watch`).
"""

from __future__ import annotations

import html
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.core.models import model_names
from app.errors import AppError, OperationCancelled
from app.service import library
from app.service.progress import Progress
from app.web.context import Context
from app.web.library_browse import Place, go_into, go_up, place
from app.web.library_info import code_span, collection_rows, folder_of
from app.web.library_watch import Watchers
from app.web.text import md_escape

log = logging.getLogger(__name__)

class LibraryRootError(AppError):
    """A path outside the library roots, or indexing from the page is off."""


def library_path(roots: tuple[Path, ...], text: str, *, must_be_dir: bool = False) -> Path:
    """``text`` as a real path inside one of ``roots``; :class:`LibraryRootError` otherwise."""
    if not roots:
        raise LibraryRootError("Indexing from the page is off.",
                               hint="Start the app with --library-root DIR (repeatable) to allow folders under DIR.")
    text = (text or "").strip()
    if not text:
        raise LibraryRootError("Give a folder (or file) path.")
    real = Path(os.path.realpath(os.path.expanduser(text)))
    if not any(real == r or r in real.parents for r in (Path(os.path.realpath(x)) for x in roots)):
        raise LibraryRootError(f"{text} is not under a library root ({', '.join(str(r) for r in roots)}).",
                               hint="Only folders under the --library-root folders given at launch can be indexed.")
    if not real.exists():
        raise LibraryRootError(f"{text} does not exist.")
    if must_be_dir and not real.is_dir():
        raise LibraryRootError(f"{text} is not a folder.")
    return real


@dataclass
class Job:
    """An index job: what it builds, where it is, and how it ended."""

    name: str
    folder: Path
    model: str
    started: float = field(default_factory=time.monotonic)
    progress: Progress | None = None
    result: Any = None
    error: str = ""
    cancelled: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


class LibraryHandlers:
    """The Collections tab's events, and the management API endpoints (the same rules)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.roots: tuple[Path, ...] = tuple(Path(r) for r in ctx.config.library_roots)
        self.job: Job | None = None
        self.watchers = Watchers(ctx)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.roots)

    # -- the table -----------------------------------------------------------------------------------
    def rows(self) -> list[list[Any]]:
        """The table of collections (:data:`app.web.library_info.HEADERS`)."""
        return collection_rows(self.ctx, self.watchers.names())

    def roots_md(self) -> str:
        if not self.enabled:
            return ("Indexing your own folders from this page is off. Start the app with "
                    "`--library-root DIR` to allow folders under `DIR` (the command line can index any folder: "
                    "`python scripts/build_index.py --kind folder --data DIR --name NAME`).")
        return "Folders under " + ", ".join(code_span(r) for r in self.roots) + " can be indexed."

    # -- an index job ---------------------------------------------------------------------------------
    def start(self, folder: str, name: str, model: str | None) -> str:
        """Start indexing ``folder`` as ``name`` (a new collection, or an incremental update); a message."""
        path, name, model = self._target(folder, name, model)
        with self._lock:
            if self.job is not None and not self.job.done.is_set():
                raise AppError(f"{self.job.name} is being indexed; wait for it or cancel it first.")
            job = self.job = Job(name, path, model)
        threading.Thread(target=self._run, args=(job,), name=f"index-{name}", daemon=True).start()
        return f"Indexing {path} as {name} with {model}…"

    def _target(self, folder: str, name: str, model: str | None) -> tuple[Path, str, str]:
        """(folder, collection name, model) of an index job, checked: the folder under a root, a known model."""
        self._allowed()
        path = library_path(self.roots, folder, must_be_dir=True)
        model = model or self.ctx.running_model
        if model not in model_names():
            raise AppError(f"Unknown model {model!r}.")
        return path, (name or "").strip() or path.name, model

    def _index(self, path: Path, name: str, model: str, **kwargs: Any):
        """Index ``path`` as ``name`` with ``model`` (the loaded embedder when it is the running model)."""
        embedder = self.ctx.service.embedder if model == self.ctx.running_model else None
        return library.index_folder(self.ctx.config.with_(model=model), name, path, embedder=embedder, **kwargs)

    def _run(self, job: Job) -> None:
        try:
            job.result = self._index(job.folder, job.name, job.model, progress=lambda p: setattr(job, "progress", p),
                                     cancel=job.cancelled.is_set)
        except OperationCancelled:
            job.error = "Cancelled: the collection is as it was before."
        except AppError as exc:
            job.error = exc.user_message()
        except Exception:  # noqa: BLE001 - the page gets a message, the log the traceback
            log.exception("indexing %s failed", job.folder)
            job.error = "Indexing failed. The details are in the server log."
        finally:
            job.done.set()

    def cancel(self) -> str:
        job = self.job
        if job is None or job.done.is_set():
            return "Nothing is being indexed."
        job.cancelled.set()
        return f"Cancelling {job.name}…"

    def progress_html(self) -> str:
        job = self.job
        if job is None:
            return ""
        p = job.progress
        elapsed = time.monotonic() - job.started
        if job.done.is_set():
            return f'<div class="ris-progress" data-state="done">Finished in {elapsed:.1f} s.</div>'
        if p is None:
            return '<div class="ris-progress" data-state="running">Starting…</div>'
        pct = 100.0 * p.fraction
        rate = f" · {p.images_per_s:.1f} images/s" if p.images_per_s else ""
        eta = f" · about {p.eta_s:.0f} s left" if p.eta_s is not None else ""
        return (f'<div class="ris-progress" data-state="running"><progress max="100" value="{pct:.0f}"></progress> '
                f"{html.escape(p.phase)} {p.done:,}/{p.total:,}{rate}{eta}</div>")

    def summary_md(self) -> str:
        job = self.job
        if job is None or not job.done.is_set():
            return ""
        if job.error:
            return f"⚠️ {md_escape(job.error)}"
        s = job.result
        lines = [f"**{md_escape(s.collection)}**: {s.count:,} images · {s.line()} · {s.seconds:.1f} s "
                 f"(index {md_escape(s.index)})"]
        if s.skipped:
            lines.append(f"Skipped {len(s.skipped)}:")
            lines += [f"- {md_escape(x['path'])}: {md_escape(x['reason'])}" for x in s.skipped[:20]]
            if len(s.skipped) > 20:
                lines.append(f"- … and {len(s.skipped) - 20} more")
        return "\n".join(lines)

    def running(self) -> bool:
        return self.job is not None and not self.job.done.is_set()

    # -- management (the tab's controls, and the API's endpoints) ------------------------------------
    def _allowed(self) -> None:
        if not self.enabled:
            raise LibraryRootError("Changing collections from the app is off.",
                                   hint="Start the app with --library-root DIR.")

    def index_now(self, folder: str, name: str, model: str | None = None):
        """Index ``folder`` as ``name`` in this thread (the API's ``/index_folder``); the change summary."""
        return self._index(*self._target(folder, name, model))

    def add(self, collection: str, path: str):
        self._allowed()
        return library.add_paths(self.ctx.config, self.ctx.existing(collection), [library_path(self.roots, path)],
                                 embedder=self.ctx.service.embedder)

    def delete(self, collection: str, ids: list[int], paths: list[str]):
        self._allowed()
        if not ids and not paths:
            raise AppError("Give the ids or paths to delete.")
        return library.delete_items(self.ctx.config, self.ctx.existing(collection), ids=[int(i) for i in ids],
                                    paths=list(paths))

    def rename(self, collection: str, new_name: str):
        self._allowed()
        name = self.ctx.existing(collection)
        self.watchers.stop(name)  # a watcher holds the old name
        return library.rename_collection(self.ctx.config, name, (new_name or "").strip())

    def drop(self, collection: str, confirm: str):
        self._allowed()
        name = self.ctx.existing(collection)
        if (confirm or "").strip() != name:
            raise AppError(f"To drop {name}, give its name again to confirm.")
        self.watchers.stop(name)
        return library.drop_collection(self.ctx.config, name)

    def count(self, collection: str) -> int:
        return library.count_items(self.ctx.config, self.ctx.existing(collection))

    # -- the tab's one-line answers: each change has its own control ---------------------------------
    def add_text(self, collection: str, path: str) -> str:
        s = self.add(collection, path)
        return f"{md_escape(s.collection)}: {s.line()}; {s.count:,} images."

    def delete_text(self, collection: str, arg: str) -> str:
        words = (arg or "").replace(",", " ").split()
        s = self.delete(collection, [int(w) for w in words if w.isdigit()], [w for w in words if not w.isdigit()])
        return f"{md_escape(s.collection)}: {s.line()}; {s.count:,} images."

    def rename_text(self, collection: str, new_name: str) -> str:
        r = self.rename(collection, new_name)
        return f"Renamed {md_escape(r.old)} to {md_escape(r.new)} ({r.count:,} images)."

    def drop_text(self, collection: str, confirm: str) -> str:
        d = self.drop(collection, confirm)
        return f"Dropped {md_escape(d.collection)} ({len(d.removed)} files removed; the images were not touched)."

    # -- browsing for a folder, and watching ------------------------------------------------------------
    def browse(self, folder: str, into: str | None = None, *, up: bool = False) -> Place:
        """The folder browser: ``folder`` (a root when empty), one of its sub-folders, or its parent."""
        self._allowed()
        here = library_path(self.roots, folder or str(self.roots[0]), must_be_dir=True)
        if into:
            return go_into(self.roots, here, into)
        return go_up(self.roots, here) if up else place(here)

    def watch(self, collection: str, on: bool) -> str:
        """Start or stop watching ``collection``'s folder (its folder must be under a library root)."""
        self._allowed()
        name = self.ctx.existing(collection)
        if not on:
            return self.watchers.stop(name)
        folder = folder_of(self.ctx, name)
        if folder is None:
            raise AppError(f"{name} records no folder to watch.")
        library_path(self.roots, str(folder), must_be_dir=True)
        return self.watchers.start(name)
