"""A collection's files, and how a change to them is made durable and atomic.

A collection ``NAME`` is four files: the vectors and the table in ``features/``, the faiss index
and its manifest in ``indexes/``. The **manifest is the commit record**: it names the current
vectors, table and index files (``features``, ``table``, ``index_file``), their generation, the
vectors' checksums and how many of the table's rows the index file holds (``index_rows``).

A change (an incremental build, ``add``, ``delete``) appends its new rows to the vectors file after the
committed ones (:mod:`app.files.vector_file`), writes the table's difference in one SQLite transaction
whose rows carry the new generation (:mod:`app.core.table_db`: readers of the old manifest still see the
old generation), writes the index under the next generation's name only when it lacks enough rows, and
then replaces the manifest atomically. A first build, a rebuild, or the first change of a table from
before SQLite writes whole files under the next generation's names (``NAME.gN.npy``,
``NAME.gN.sqlite``, ``NAME.gN.faiss``; generation 0 is ``NAME.npy``...). Until the manifest's
``os.replace`` nothing the old manifest names has changed for its readers, so a crash at any moment
leaves the previous state loadable; after it, the new one. Files no manifest names are removed
afterwards (and any a crashed change left behind, on the next change). Readers never lock: they read
the manifest, then the files it names. Writers take the collection's lock (:func:`collection_lock`).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from app.config import Config
from app.core.feature_table import FeatureTable, features_for
from app.core.manifest import Manifest
from app.core.photo_meta import fill_photo_meta
from app.core.table_db import create_table_db, write_change
from app.errors import DatasetError, IndexMismatchError
from app.files import vector_file
from app.files.atomic import write_bytes, write_json
from app.files.layout import CollectionFiles
from app.files.lock import exclusive_lock
from app.files.vector_file import AppendedRows
from app.index.faiss_store import build_command, index_manifest, keeps_ids, read_manifest

LOCK_HINT = ("Another build or change of it is running: wait for it to finish (or stop it), "
             "then run the command again.")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def check_name(name: str) -> str:
    """A new collection's name: letters, digits, ``-`` and ``_`` (it names files and a Milvus collection)."""
    if not NAME_RE.match(name or ""):
        raise DatasetError(f"{name!r} is not a valid collection name.",
                           hint="Use letters, digits, '-' and '_' (at most 64, starting with a letter or digit).")
    return name


def check_safe_name(name: str) -> str:
    """Any collection's name as a change uses it: one file-name component, so it cannot reach outside
    ``indexes/`` and ``features/`` (older collections may have names :func:`check_name` refuses)."""
    if not name or name in (".", "..") or name.startswith(".") or any(c in name for c in "/\\\0"):
        raise DatasetError(f"{name!r} is not a collection name.", hint="python -m app.cli list shows the collections.")
    return name


@contextlib.contextmanager
def collection_lock(config: Config, name: str, *, wait_s: float = 0.0) -> Iterator[None]:
    """One change to ``name`` at a time (the CLI, the app and other processes alike): ``indexes/NAME.lock``,
    released by the kernel when its holder dies (:mod:`app.files.lock`)."""
    check_safe_name(name)
    with exclusive_lock(files_of(config, name).lock, what=f"The {name} collection", hint=LOCK_HINT, wait_s=wait_s):
        yield


def files_of(config: Config, name: str) -> CollectionFiles:
    """Where the files of ``name`` are, for ``config``'s folders."""
    return CollectionFiles.at(config.features_dir, config.indexes_dir, name)


@dataclass
class State:
    """A built collection as its manifest names it: the manifest, the table and the vectors (memory-mapped)."""

    name: str
    manifest: Manifest
    table: FeatureTable
    vectors: np.ndarray


def read_state(config: Config, name: str, *, mmap: bool = True, full_check: bool = False) -> State:
    """The current state of ``name``, checked: the table and vectors its manifest names (their checksums:
    a sample of the vectors' chunks, every one with ``full_check``), agreeing with it. The whole table is
    read, ready for a change."""
    manifest = read_manifest(config.indexes_dir, name)
    vectors, table = features_for(config.features_dir, manifest.with_(name=name), mmap=mmap, full_check=full_check,
                                  hint=rebuild_advice(name, manifest))
    check_agrees(name, manifest, table)
    return State(name, manifest, table, vectors)


def rebuild_advice(name: str, manifest: Manifest) -> str:
    return f"Rebuild it with: {build_command(name, manifest)}"


def check_agrees(name: str, manifest: Manifest, table: FeatureTable) -> None:
    if (
        table.live_count != manifest.count
        or table.weights_id != manifest.weights_id
        # the features of another build (written after this index, or of another sample)
        or manifest.features_created not in (None, table.created)
        or manifest.features_fingerprint not in (None, table.fingerprint)
    ):
        raise IndexMismatchError(
            f"The {name} features ({table.live_count} vectors, {table.weights_id}) do not match its index "
            f"({manifest.count} vectors, {manifest.weights_id}).",
            hint=f"Rebuild it with: {build_command(name, manifest)}",
        )


def commit(config: Config, name: str, manifest: Manifest | dict[str, Any], table: FeatureTable, *,
           vectors: np.ndarray | AppendedRows | None = None, index: Any = None, generation: int | None = None,
           index_in_place: bool = False) -> Manifest:
    """Make ``table`` (with ``vectors`` and ``index`` when they changed) the current state of ``name``.

    ``manifest``: the current manifest (or, for a first build, the build fields) whose other fields
    are kept. A change of a table read from SQLite is written in place, as its difference (new rows,
    tombstones, stamps: :func:`app.core.table_db.write_change`), and new rows are appended to the
    vectors file (``vectors`` an :class:`~app.files.vector_file.AppendedRows`); anything else (a first
    build, a table read from JSON) is written whole under generation ``generation`` (default: the
    current one + 1). An index changed only in place by adds and deletes (``index_in_place``) is not
    written while what it lacks stays small (:data:`INDEX_PENDING_SHARE`): its file plus the rows since
    (``index_rows``) are the index. Then the manifest, the commit point; then the files no manifest names
    any more are removed. Returns the new manifest.
    """
    current = manifest if isinstance(manifest, Manifest) else None
    if current is None and (vectors is None or index is None):
        raise ValueError("a first commit needs the vectors and the index")
    g = generation if generation is not None else (current.generation + 1 if current else 0)
    files = files_of(config, name)
    fields: dict[str, Any] = current.build_fields() if current else dict(manifest)
    fields.update(name=name, generation=g, features_fingerprint=table.fingerprint,
                  features_created=table.created, skipped=len(table.skipped))
    fill_photo_meta(table, table.image_root)  # capture time and camera of the rows that have none yet
    sums = _write_vectors(config, name, current, table, vectors, g, fields)
    _write_table(files, current, table, g, fields)
    new = _with_index(config, name, current, table, index, index_in_place, g, fields)
    new = new.with_(**sums)  # what a loader checks (app.core.feature_table.load_features)
    if new.count != table.live_count:
        raise IndexMismatchError(f"Internal error: the {name} index holds {new.count} vectors for "
                                 f"{table.live_count} valid items; nothing was changed.")
    write_json(files.manifest, new.to_json())  # the commit point
    remove_stale_files(config, name, new)
    return new


INDEX_PENDING_SHARE = 0.01  # an index file is written again once it lacks more than this share of the rows
INDEX_PENDING_MIN = 256  # ... or this many rows, whichever is more


def _in_place(current: Manifest | None, table: FeatureTable) -> bool:
    """Whether the change can be written into the current files (an SQLite table read at this generation)."""
    return (current is not None and current.table.endswith(".sqlite") and table.origin is not None
            and table.origin.generation == current.generation)


def _write_vectors(config: Config, name: str, current: Manifest | None, table: FeatureTable,
                   vectors: np.ndarray | AppendedRows | None, g: int, fields: dict[str, Any]) -> dict[str, Any]:
    """The vectors: appended in place, or written whole; returns their checksum fields for the manifest."""
    files = files_of(config, name)
    rows, dim = len(table.paths), table.dim
    if vectors is None:  # unchanged (a delete, new metadata)
        assert current is not None
        path = files.features_dir / current.features
        return {"features_chunks": current.features_chunks or vector_file.chunk_digests(path, rows, dim),
                "features_sha256": None}  # a file from before chunk checksums: checked whole when it was read
    if len(vectors) != rows:
        raise IndexMismatchError(f"Internal error: {len(vectors)} vectors for {rows} rows of {name}; nothing was changed.")
    if isinstance(vectors, AppendedRows) and current is not None and current.features_chunks is not None:
        path, committed = files.features_dir / current.features, len(vectors.base)
        if vector_file.append_rows(path, committed, vectors.new):
            return {"features_chunks": vector_file.chunk_digests(path, rows, dim, current.features_chunks, committed)}
    path = files.vectors(g)
    vector_file.write_vectors(path, np.asarray(vectors, dtype=np.float32))
    fields["features"] = path.name
    return {"features_chunks": vector_file.chunk_digests(path, rows, dim), "features_sha256": None}


def _write_table(files: CollectionFiles, current: Manifest | None, table: FeatureTable, g: int,
                 fields: dict[str, Any]) -> None:
    if _in_place(current, table):
        assert current is not None
        write_change(files.features_dir / current.table, table, g)
        fields["table"] = current.table
    else:
        path = files.table(g)
        create_table_db(path, table, g)
        fields.update(table=path.name, table_sha256=None)


def _with_index(config: Config, name: str, current: Manifest | None, table: FeatureTable, index: Any,
                index_in_place: bool, g: int, fields: dict[str, Any]) -> Manifest:
    """The new manifest, with the index written under generation ``g`` unless it is unchanged or only
    lacks a few rows since its file was written (then its file and ``index_rows`` stay)."""
    keep = ("generation", "table", "features", "features_fingerprint", "features_created", "skipped", "table_sha256")
    if index is None or (index_in_place and current is not None and _pending_small(current, table, index)):
        assert current is not None
        rows_in, counted = _index_file_holds(current, table)
        return current.with_(**{k: v for k, v in fields.items() if k in keep}, count=table.live_count,
                             index_rows=rows_in, index_count=counted)
    new, data = index_manifest(index, config.indexes_dir, name, {**fields, "index_rows": len(table.paths),
                                                                 "index_count": None}, generation=g)
    write_bytes(files_of(config, name).index(g), data)
    return new


def _index_file_holds(current: Manifest, table: FeatureTable) -> tuple[int, int]:
    """(the table rows the current index file was written for, the vectors in it): what its manifest
    records, or for an older manifest every row the table had before the change and its count."""
    rows_in = current.index_rows if current.index_rows is not None else (
        table.origin.rows if table.origin is not None else len(table.paths))
    return rows_in, current.index_count if current.index_count is not None else current.count


def _pending_small(current: Manifest, table: FeatureTable, index: Any) -> bool:
    """Whether the index file may stay as it is: it keeps ids (a delete can be applied when loading) and
    lacks at most the larger of :data:`INDEX_PENDING_MIN` rows and :data:`INDEX_PENDING_SHARE` of them."""
    if not keeps_ids(index) or not current.index_file or table.origin is None:
        return False
    rows_in, counted = _index_file_holds(current, table)
    live_in = int(table.live_mask()[:rows_in].sum())
    pending = (len(table.paths) - rows_in) + (counted - live_in)
    return pending <= max(INDEX_PENDING_MIN, INDEX_PENDING_SHARE * len(table.paths))


def remove_stale_files(config: Config, name: str, manifest: Manifest) -> list[Path]:
    """Remove the generations of ``name`` that ``manifest`` does not name; returns what was removed."""
    files = files_of(config, name)
    table = files.features_dir / manifest.table
    keep = {files.features_dir / manifest.features, table, table.with_name(f"{table.name}-journal"),
            files.indexes_dir / manifest.index_file}
    removed = []
    for path in files.data_files() + files.stale_temps():
        if path not in keep:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed

