"""Managing collections: the use cases behind ``python -m app.cli build|count|add|delete|rename|drop``
and the app's Collections tab. Every function takes the :class:`~app.config.Config`, names and paths,
and returns a typed summary; the long ones take an optional embedder, a ``progress`` callback and a
``cancel`` check (:mod:`app.service.progress`).

* :func:`index_folder` builds a collection from a folder, or updates it incrementally (the same
  as ``scripts/build_index.py``); :func:`update_collection` rescans what a collection was built from;
* :func:`add_paths` indexes files and folders (inside the collection's folder, or elsewhere: those
  are stored by absolute path); :func:`delete_items` removes items by id or path (the files stay on
  disk; a rescan does not add them back until ``add`` names them);
* :func:`count_items`, :func:`rename_collection`, :func:`drop_collection`.

Each change holds the collection's lock and is committed atomically through its
:class:`~app.service.collection_store.CollectionStore`: a crash leaves the previous state loadable.
The store's mirror then gets the change too (Milvus with ``--backend milvus``,
:mod:`app.service.milvus_mirror`), so ids and labels stay the same in both.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from app.config import Config
from app.core.changes import ChangePlan, plan_changes
from app.core.datasets import Item, folder_label
from app.core.embed import Embedder, embedder_for
from app.core.feature_table import FeatureTable
from app.core.scan import scan_paths
from app.errors import IndexMissingError, UnknownItemError
from app.service.build import BuildResult, BuildSpec, build_collection
from app.service.collection_store import DropSummary, RenameSummary, open_collection
from app.service.commit import State
from app.service.excludes import manifest_excludes
from app.service.object_upkeep import prune_objects, refresh_objects
from app.service.progress import CancelFn, ProgressFn, Reporter
from app.service.update import ChangeOptions, ChangeSummary, apply_plan

# -- building and updating -------------------------------------------------------------------------


def build(config: Config, spec: BuildSpec, *, embedder: Embedder | None = None, progress_bar: bool = False,
          progress: ProgressFn | None = None, cancel: CancelFn | None = None,
          objects: bool | None = None) -> BuildResult:
    """:func:`~app.service.build.build_collection`, then the change mirrored (backend milvus), then the
    object vectors refreshed (``objects``: see :func:`~app.service.object_upkeep.refresh_objects`)."""
    result = build_collection(config, spec, embedder=embedder, progress_bar=progress_bar, progress=progress,
                              cancel=cancel)
    store = open_collection(config, result.name)
    if result.changes is not None and store.mirror.phase:
        Reporter(progress).phase(store.mirror.phase)
        result.changes = store.mirrored(result.changes)
        result.stats["milvus"] = result.changes.milvus
    if result.changes is not None:
        result.changes = _with_objects(config, result.name, result.changes, objects, embedder, progress)
    return result


def index_folder(config: Config, name: str, folder: str | os.PathLike, *, kind: str = "folder",
                 embedder: Embedder | None = None, progress: ProgressFn | None = None,
                 cancel: CancelFn | None = None, exclude: Sequence[str] | None = None) -> ChangeSummary:
    """Build the collection ``name`` from ``folder`` (sub-folders are labels), or update it incrementally
    when it exists (built from that folder with the same model). The model is ``config``'s. ``exclude``:
    patterns to leave out, stored with the collection (None: those it has stored)."""
    result = build(config, BuildSpec(kind=kind, data=folder, name=name,
                                     exclude=tuple(exclude) if exclude is not None else None),
                   embedder=embedder, progress=progress, cancel=cancel)
    assert result.changes is not None
    return result.changes


def update_collection(config: Config, name: str, *, embedder: Embedder | None = None,
                      progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> ChangeSummary:
    """Rescan what ``name`` was built from (its folder, sample and index as recorded) and apply the changes,
    with the collection's own model."""
    m = open_collection(config, name).read_state().manifest
    if not m.dataset_root:
        raise IndexMissingError(f"The collection {name!r} does not record the folder it was built from.")
    spec = BuildSpec(kind=m.kind or "folder", data=m.dataset_root, name=name, limit=m.limit,
                     include=tuple(m.include))
    result = build(_with_model(config, m), spec, embedder=embedder, progress=progress, cancel=cancel)
    assert result.changes is not None
    return result.changes


def add_paths(config: Config, name: str, paths: Sequence[str | os.PathLike], *, embedder: Embedder | None = None,
              progress: ProgressFn | None = None, cancel: CancelFn | None = None,
              exclude: Sequence[str] = ()) -> ChangeSummary:
    """Index the image files and folders ``paths`` in ``name`` (new or changed ones; unchanged ones are
    counted as such). A path deleted on purpose earlier is taken back. Folders are scanned with the
    collection's stored exclude patterns plus ``exclude``."""
    t0 = time.perf_counter()
    reporter = Reporter(progress)
    reporter.phase("scanning")
    store = open_collection(config, name)
    with store.lock():
        state = store.read_state()
        root = Path(state.table.image_root)
        found = scan_paths(list(paths), exclude=(*manifest_excludes(state.manifest), *exclude))
        items = [_item(path, stamp, root) for path, stamp in found.files]
        reporter.phase("reading", total=len(items))
        plan = plan_changes(state.table, items, root, full=False, include_excluded=True, listed_skips=found.skipped,
                            cancel=cancel, on_hashed=lambda n: reporter.step(n, len(items)))
        summary = apply_plan(store, state, plan, ChangeOptions(
            kind=state.manifest.kind or "folder", image_root=root, embedder=_embedder(config, state, embedder),
            reporter=reporter, cancel=cancel, full=False, unexclude=tuple(it.path for it in items), started=t0))
    return _with_objects(config, name, store.mirrored(replace(summary, excluded=found.excluded)), None, embedder,
                         progress)


def delete_items(config: Config, name: str, *, ids: Sequence[int] = (),
                 paths: Sequence[str | os.PathLike] = (), on_purpose: bool = True) -> ChangeSummary:
    """Remove items from ``name`` by id, or by path (a file, or a folder: every item below it; as stored,
    or as a path on disk). The files themselves are not touched; a rescan leaves them out (``on_purpose``
    False: the files are gone from disk, and one that comes back is indexed again, as the watcher wants)."""
    t0 = time.perf_counter()
    store = open_collection(config, name)
    with store.lock():
        state = store.read_state()
        table = state.table
        doomed = sorted(set(_ids_of(state, ids)) | set(_ids_at(table, paths)))
        plan = ChangePlan(removed=tuple(doomed), unchanged=table.live_count - len(doomed))
        summary = apply_plan(store, state, plan, ChangeOptions(
            kind=state.manifest.kind or "folder", image_root=Path(table.image_root),
            embedder=lambda: embedder_for(config), reporter=Reporter(None), full=False,
            exclude=tuple(table.paths[i] for i in doomed) if on_purpose else (), started=t0))
    summary = store.mirrored(summary)
    dropped = prune_objects(config, name)  # the deleted photos' objects go at once
    return replace(summary, objects={"removed": dropped}) if dropped else summary


# -- reading ---------------------------------------------------------------------------------------


def count_items(config: Config, name: str) -> int:
    """The number of valid images of ``name`` (in its mirror, checked against the local table, when it has one)."""
    return open_collection(config, name).count()


# -- renaming and dropping -------------------------------------------------------------------------


def rename_collection(config: Config, old: str, new: str) -> RenameSummary:
    """Rename ``old`` to ``new`` (its files, and its Milvus copy with backend milvus); crash-safe
    (:meth:`~app.service.collection_store.CollectionStore.rename`)."""
    return open_collection(config, old).rename(new)


def drop_collection(config: Config, name: str) -> DropSummary:
    """Remove ``name``'s files and mirror copy; images are never touched
    (:meth:`~app.service.collection_store.CollectionStore.drop`)."""
    return open_collection(config, name).drop()


# -- helpers ---------------------------------------------------------------------------------------


def _with_objects(config: Config, name: str, summary: ChangeSummary, wanted: bool | None,
                  embedder: Embedder | None, progress: ProgressFn | None) -> ChangeSummary:
    """``summary`` with the object vectors' refresh after a committed change (when there was one to do)."""
    if wanted is None and not (summary.added or summary.changed or summary.removed or summary.full_build):
        return summary
    done = refresh_objects(config, name, wanted=wanted, new=summary.full_build, embedder=embedder, progress=progress)
    return replace(summary, objects=done.to_json()) if done is not None else summary


def _with_model(config: Config, manifest) -> Config:
    return config.with_(model=manifest.model_name, weights=manifest.weights_arg or config.weights)


def _embedder(config: Config, state: State, embedder: Embedder | None):
    """The embedder to use for ``state``'s collection: the one given, else one for its own model and weights."""
    made: list[Embedder] = [embedder] if embedder is not None else []

    def get() -> Embedder:
        if not made:
            made.append(embedder_for(_with_model(config, state.manifest)))
        return made[0]

    return get


def _item(path: str, stamp, root: Path) -> Item:
    """An item for the file ``path`` (absolute): relative to the collection's folder when inside it."""
    for base in (root, root.resolve()):
        with contextlib.suppress(ValueError):
            rel = Path(path).relative_to(base).as_posix()
            return Item(rel, folder_label(rel), stamp)
    return Item(Path(path).as_posix(), (), stamp)


def _ids_of(state: State, ids: Sequence[int]) -> list[int]:
    out = []
    for i in ids:
        if not state.table.is_live(int(i)):
            what = "was deleted from" if 0 <= int(i) < len(state.table) else "is not an item of"
            raise UnknownItemError(f"Item {i} {what} {state.name}; nothing was deleted.")
        out.append(int(i))
    return out


def _ids_at(table: FeatureTable, paths: Sequence[str | os.PathLike]) -> list[int]:
    """The valid items at ``paths``: a stored path, or a file or folder on disk (every item below it)."""
    live = table.live_paths()
    root = Path(table.image_root)
    out: list[int] = []
    for given in paths:
        forms = {str(given).rstrip("/")}
        absolute = Path(os.path.abspath(os.path.expanduser(os.fspath(given))))
        forms.add(absolute.as_posix())
        with contextlib.suppress(ValueError):
            forms.add(absolute.relative_to(root).as_posix())
        hits = [i for p, i in live.items() if any(p == f or p.startswith(f + "/") for f in forms if f and f != ".")]
        if not hits:
            raise UnknownItemError(f"No item of {table.name} is at {given}; nothing was deleted.")
        out += hits
    return out
