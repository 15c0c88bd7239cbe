"""A collection's files, and how a change to them is made durable and atomic.

A collection ``NAME`` is four files: the vectors and the table in ``features/``, the faiss index
and its manifest in ``indexes/``. The **manifest is the commit record**: it names the current
vectors, table and index files (``features``, ``table``, ``index_file``) and their generation.

A change (an incremental build, ``add``, ``delete``, a rebuild) writes the files it changes under
the *next* generation's names (``NAME.gN.npy``, ``NAME.gN.json``, ``NAME.gN.faiss``; generation 0 is
``NAME.npy``...), each atomically, and then replaces the manifest atomically. Until that last
``os.replace`` every file the old manifest names is untouched, so a crash at any moment leaves
the previous state loadable; after it, the new one. The previous generation's files are removed
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
from app.core.feature_table import FeatureTable
from app.core.features import load_features
from app.core.manifest import Manifest
from app.core.photo_meta import fill_photo_meta
from app.errors import DatasetError, IndexMismatchError
from app.files.atomic import write_bytes, write_json, write_npy
from app.files.digest import file_sha256
from app.files.layout import CollectionFiles
from app.files.lock import exclusive_lock
from app.index.faiss_store import build_command, index_manifest, read_manifest

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


def read_state(config: Config, name: str, *, mmap: bool = True) -> State:
    """The current state of ``name``, checked: the table and vectors its manifest names (byte for byte
    when it records their checksums), agreeing with it."""
    manifest = read_manifest(config.indexes_dir, name)
    vectors, table = load_features(config.features_dir, name, mmap=mmap, files=manifest_files(manifest),
                                   sha256=manifest_sums(manifest), hint=rebuild_advice(name, manifest))
    check_agrees(name, manifest, table)
    return State(name, manifest, table, vectors)


def manifest_sums(manifest: Manifest) -> tuple[str | None, str | None]:
    """The (vectors, table) checksums the manifest records (None for older builds)."""
    return manifest.features_sha256, manifest.table_sha256


def rebuild_advice(name: str, manifest: Manifest) -> str:
    return f"Rebuild it with: {build_command(name, manifest)}"


def manifest_files(manifest: Manifest) -> tuple[str, str]:
    """The (vectors, table) file names in ``features/`` the manifest records."""
    return manifest.features, manifest.table


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
           vectors: np.ndarray | None = None, index: Any = None, generation: int | None = None) -> Manifest:
    """Make ``table`` (with ``vectors`` and ``index`` when they changed) the current state of ``name``.

    ``manifest``: the current manifest (or, for a first build, the build fields) whose other fields
    are kept. Writes the new files under generation ``generation`` (default: the current one + 1),
    then the manifest, then removes the files no manifest names any more. Returns the new manifest.
    """
    current = manifest if isinstance(manifest, Manifest) else None
    g = generation if generation is not None else (current.generation + 1 if current else 0)
    files = files_of(config, name)
    npy, table_path = files.vectors(g), files.table(g)
    fields: dict[str, Any] = current.build_fields() if current else dict(manifest)
    fields.update(name=name, generation=g, table=table_path.name, features_fingerprint=table.fingerprint,
                  features_created=table.created, skipped=len(table.skipped))
    if vectors is not None:
        fields["features"] = npy.name
    if current is None and (vectors is None or index is None):
        raise ValueError("a first commit needs the vectors and the index")
    if index is not None:
        new, data = index_manifest(index, config.indexes_dir, name, fields, generation=g)
    else:
        assert current is not None
        new = current.with_(**{k: v for k, v in fields.items() if k in ("generation", "table", "features",
                                                                         "features_fingerprint", "features_created",
                                                                         "skipped")})
        data = None
    if new.count != table.live_count:
        raise IndexMismatchError(f"Internal error: the {name} index holds {new.count} vectors for "
                                 f"{table.live_count} valid items; nothing was changed.")
    fill_photo_meta(table, table.image_root)  # capture time and camera of the rows that have none yet
    write_json(table_path, table.to_json())
    sums = {"table_sha256": file_sha256(table_path)}
    if vectors is not None:
        write_npy(npy, np.ascontiguousarray(vectors, dtype=np.float32))
        sums["features_sha256"] = file_sha256(npy)
    elif current is not None and current.features_sha256 is None:  # recorded from now on
        sums["features_sha256"] = file_sha256(Path(config.features_dir) / current.features)
    new = new.with_(**sums)  # what a loader checks byte for byte (app.core.feature_table.load_features)
    if data is not None:
        write_bytes(files.index(g), data)
    write_json(files.manifest, new.to_json())  # the commit point
    remove_stale_files(config, name, new)
    return new


def remove_stale_files(config: Config, name: str, manifest: Manifest) -> list[Path]:
    """Remove the generations of ``name`` that ``manifest`` does not name; returns what was removed."""
    files = files_of(config, name)
    keep = {files.features_dir / manifest.features, files.features_dir / manifest.table,
            files.indexes_dir / manifest.index_file}
    removed = []
    for path in files.data_files() + files.stale_temps():
        if path not in keep:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed

