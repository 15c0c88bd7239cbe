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

Each change holds the collection's lock and is committed atomically (:mod:`app.service.commit`):
a crash leaves the previous state loadable. With ``config.backend == "milvus"`` the change then goes
to Milvus too (:mod:`app.service.milvus_mirror`), so ids and labels stay the same in both.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from app.config import Config
from app.core.changes import ChangePlan, plan_changes
from app.core.datasets import Item, folder_label
from app.core.embed import Embedder, embedder_for
from app.core.feature_table import FeatureTable
from app.core.scan import scan_paths
from app.errors import CollectionExistsError, IndexMissingError, UnknownItemError
from app.files.atomic import write_json
from app.files.digest import file_sha256
from app.index.faiss_store import manifest_path
from app.service import dba
from app.service.build import BuildResult, BuildSpec, build_collection
from app.service.commit import State, check_name, collection_lock, lock_path, own_files, read_state
from app.service.milvus_mirror import mirror_change, push_collection
from app.service.progress import CancelFn, ProgressFn, Reporter
from app.service.update import ChangeSummary, apply_plan


@dataclass(frozen=True)
class DropSummary:
    collection: str
    removed: tuple[str, ...]  # the files removed
    milvus: tuple[str, ...] = ()  # the Milvus collections dropped

    def to_json(self) -> dict[str, Any]:
        return {"collection": self.collection, "removed": list(self.removed), "milvus": list(self.milvus)}


@dataclass(frozen=True)
class RenameSummary:
    old: str
    new: str
    count: int
    files: tuple[str, ...]  # the new collection's files
    milvus: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"old": self.old, "new": self.new, "count": self.count, "files": list(self.files),
                "milvus": self.milvus}


# -- building and updating -------------------------------------------------------------------------


def build(config: Config, spec: BuildSpec, *, embedder: Embedder | None = None, progress_bar: bool = False,
          progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> BuildResult:
    """:func:`~app.service.build.build_collection`, then the change mirrored to Milvus (backend milvus)."""
    result = build_collection(config, spec, embedder=embedder, progress=progress_bar, on_progress=progress,
                              cancel=cancel)
    if config.backend == "milvus" and result.changes is not None:
        Reporter(progress).phase("milvus")
        result.changes = _mirrored(config, result.changes)
        result.stats["milvus"] = result.changes.milvus
    return result


def index_folder(config: Config, name: str, folder: str | os.PathLike, *, kind: str = "folder",
                 embedder: Embedder | None = None, progress: ProgressFn | None = None,
                 cancel: CancelFn | None = None) -> ChangeSummary:
    """Build the collection ``name`` from ``folder`` (sub-folders are labels), or update it incrementally
    when it exists (built from that folder with the same model). The model is ``config``'s."""
    result = build(config, BuildSpec(kind=kind, data=folder, name=name), embedder=embedder, progress=progress,
                   cancel=cancel)
    assert result.changes is not None
    return result.changes


def update_collection(config: Config, name: str, *, embedder: Embedder | None = None,
                      progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> ChangeSummary:
    """Rescan what ``name`` was built from (its folder, sample and index as recorded) and apply the changes,
    with the collection's own model."""
    m = read_state(config, name).manifest
    if not m.dataset_root:
        raise IndexMissingError(f"The collection {name!r} does not record the folder it was built from.")
    spec = BuildSpec(kind=m.collection or "folder", data=m.dataset_root, name=name, limit=m.limit,
                     include=tuple(m.include))
    result = build(_with_model(config, m), spec, embedder=embedder, progress=progress, cancel=cancel)
    assert result.changes is not None
    return result.changes


def add_paths(config: Config, name: str, paths: Sequence[str | os.PathLike], *, embedder: Embedder | None = None,
              progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> ChangeSummary:
    """Index the image files and folders ``paths`` in ``name`` (new or changed ones; unchanged ones are
    counted as such). A path deleted on purpose earlier is taken back."""
    t0 = time.perf_counter()
    reporter = Reporter(progress)
    reporter.phase("scanning")
    with collection_lock(config, name):
        state = read_state(config, name)
        root = Path(state.table.image_root)
        found = scan_paths(list(paths))
        items = [_item(path, stamp, root) for path, stamp in found.files]
        reporter.phase("reading", total=len(items))
        plan = plan_changes(state.table, items, root, full=False, include_excluded=True, listed_skips=found.skipped,
                            cancel=cancel, on_hashed=lambda n: reporter.step(n, len(items)))
        summary = apply_plan(config, state, plan, kind=state.manifest.collection or "folder", image_root=root,
                             embedder=_embedder(config, state, embedder), reporter=reporter, cancel=cancel,
                             full=False, unexclude=[it.path for it in items], started=t0)
    return _mirrored(config, summary)


def delete_items(config: Config, name: str, *, ids: Sequence[int] = (),
                 paths: Sequence[str | os.PathLike] = ()) -> ChangeSummary:
    """Remove items from ``name`` by id, or by path (a file, or a folder: every item below it; as stored,
    or as a path on disk). The files themselves are not touched; a rescan leaves them out."""
    t0 = time.perf_counter()
    with collection_lock(config, name):
        state = read_state(config, name)
        table = state.table
        doomed = sorted(set(_ids_of(state, ids)) | set(_ids_at(table, paths)))
        plan = ChangePlan(removed=tuple(doomed), unchanged=table.live_count - len(doomed))
        summary = apply_plan(config, state, plan, kind=state.manifest.collection or "folder",
                             image_root=Path(table.image_root), embedder=lambda: embedder_for(config),
                             reporter=Reporter(None), full=False, exclude=[table.paths[i] for i in doomed],
                             started=t0)
    return _mirrored(config, summary)


# -- reading ---------------------------------------------------------------------------------------


def count_items(config: Config, name: str) -> int:
    """The number of valid images of ``name`` (in Milvus with ``config.backend == "milvus"``, which is
    checked against the local table)."""
    state = read_state(config, name)
    if config.backend != "milvus":
        return state.table.live_count
    from app.index.milvus_store import MilvusIndex

    n = MilvusIndex(config.milvus_uri or "", name, token=config.milvus_token, timeout=config.milvus_timeout_s).count()
    if n != state.table.live_count:
        from app.errors import IndexMismatchError

        raise IndexMismatchError(f"Milvus holds {n} vectors of {name}, the local table {state.table.live_count}.",
                                 hint=f"Push them again with: python -m app.cli sync {name} --uri {config.milvus_uri}")
    return n


# -- renaming and dropping -------------------------------------------------------------------------


def rename_collection(config: Config, old: str, new: str) -> RenameSummary:
    """Rename ``old`` to ``new`` (its files, and its Milvus copy with backend milvus).

    The new name's files are written first (the vectors and the index hard-linked, or copied), then its
    manifest; only then is the old manifest removed, then the old files: a crash leaves the old
    collection loadable (and perhaps the new one too)."""
    check_name(new)
    if manifest_path(config.indexes_dir, new).exists():
        raise CollectionExistsError(f"A collection named {new!r} exists already.",
                                    hint=f"Drop it first (python -m app.cli drop --collection {new}), or pick "
                                         "another name.")
    with collection_lock(config, old), collection_lock(config, new):
        state = read_state(config, old)
        m, feat, idx = state.manifest, Path(config.features_dir), Path(config.indexes_dir)
        table = replace(state.table, name=new)
        files = [feat / f"{new}.npy", feat / f"{new}.json", idx / f"{new}.faiss"]
        _link(feat / m.features, files[0])
        write_json(files[1], table.to_json())
        _link(idx / m.index_file, files[2])
        if dba.dba_path(feat, old).exists():  # its augmentation goes with it (the same rows)
            _link(dba.dba_path(feat, old), dba.dba_path(feat, new))
        new_manifest = m.with_(name=new, generation=0, features=files[0].name, table=files[1].name,
                               index_file=files[2].name, table_sha256=file_sha256(files[1]))  # the table names it
        write_json(manifest_path(config.indexes_dir, new), new_manifest.to_json())  # the new name exists
        try:
            milvus = _rename_milvus(config, old, new)
        except Exception:  # Milvus refused or is unreachable: undo, the old name stays as it was
            for path in (manifest_path(config.indexes_dir, new), *files):
                path.unlink(missing_ok=True)
            raise
        manifest_path(config.indexes_dir, old).unlink()  # the old name is gone
        for path in own_files(config, old):
            path.unlink(missing_ok=True)
        dba.remove(feat, old)
        _remove_parts(config, old)
    lock_path(config, old).unlink(missing_ok=True)
    return RenameSummary(old, new, table.live_count, tuple(str(f) for f in files), milvus)


def drop_collection(config: Config, name: str) -> DropSummary:
    """Remove ``name``: its manifest first (it then no longer exists), then its own data files (every
    generation), resumable parts and lock, and its Milvus copy with backend milvus. Images are never touched."""
    mpath = manifest_path(config.indexes_dir, name)
    with collection_lock(config, name):
        files = own_files(config, name)
        if not mpath.exists() and not files:
            raise IndexMissingError(f"There is no collection named {name!r}.",
                                    hint="python -m app.cli list shows the collections.")
        removed = []
        if mpath.exists():
            mpath.unlink()
            removed.append(str(mpath))
        for path in files:
            path.unlink(missing_ok=True)
            removed.append(str(path))
        if dba.dba_path(config.features_dir, name).exists():
            dba.remove(config.features_dir, name)
            removed.append(str(dba.dba_path(config.features_dir, name)))
        removed += _remove_parts(config, name)
        milvus = _drop_milvus(config, name)
    lock = lock_path(config, name)
    with contextlib.suppress(FileNotFoundError):
        lock.unlink()
    return DropSummary(name, tuple(removed), tuple(milvus))


# -- helpers ---------------------------------------------------------------------------------------


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


def _link(src: Path, dst: Path) -> None:
    """``dst`` as a hard link to ``src`` (files are never changed in place), or a copy across file systems."""
    tmp = dst.with_name(f".{dst.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _remove_parts(config: Config, name: str) -> list[str]:
    removed = []
    for parts in (Path(config.features_dir) / f"{name}.parts", Path(config.features_dir) / f"{name}.update.parts"):
        if parts.is_dir():
            shutil.rmtree(parts, ignore_errors=True)
            removed.append(str(parts))
    return removed


def _mirrored(config: Config, summary: ChangeSummary) -> ChangeSummary:
    if config.backend != "milvus":
        return summary
    if summary.full_build:
        meta = push_collection(config, summary.collection)
        return replace(summary, milvus={"mode": "full", "count": meta["count"], "uri": config.milvus_uri})
    return replace(summary, milvus=mirror_change(config, summary.collection,
                                                 previous_fingerprint=summary.previous_fingerprint,
                                                 added=summary.added_ids, removed=summary.removed_ids))


def _rename_milvus(config: Config, old: str, new: str) -> bool:
    if config.backend != "milvus":
        return False
    from app.index.milvus_store import MilvusIndex

    MilvusIndex(config.milvus_uri or "", old, token=config.milvus_token, timeout=config.milvus_timeout_s).rename(new)
    return True


def _drop_milvus(config: Config, name: str) -> list[str]:
    if config.backend != "milvus":
        return []
    from app.index.milvus_store import MilvusIndex

    store = MilvusIndex(config.milvus_uri or "", name, token=config.milvus_token, connect=False,
                        timeout=config.milvus_timeout_s)
    return store.drop()
