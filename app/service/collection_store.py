"""One collection on disk: :class:`CollectionStore` owns its files and generations, its lock, its
manifest and feature table, its commit, and its mirror.

:func:`open_collection` is the one place that looks at the configuration's backend: the store it
returns carries its mirror (:class:`~app.service.milvus_mirror.LocalOnly`, or
:class:`~app.service.milvus_mirror.MilvusMirror` with ``--backend milvus``), and build, update,
library, catalogue and the CLI ask the store, never the backend string. File names come from
:class:`~app.files.layout.CollectionFiles`; a change's atomic commit is :mod:`app.service.commit`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from app.config import Config
from app.core.embed import Embedder
from app.core.feature_table import FeatureTable
from app.core.features import remove_parts
from app.core.manifest import Manifest
from app.core.table_db import create_table_db
from app.errors import CollectionExistsError, IndexMissingError
from app.files.atomic import write_json
from app.files.layout import CollectionFiles
from app.files.vector_file import AppendedRows
from app.index.faiss_store import read_manifest
from app.index.store import VectorStore
from app.service import commit as commits
from app.service.milvus_mirror import LocalOnly, MilvusMirror
from app.service.objects import drop_objects, rename_objects

if TYPE_CHECKING:
    from app.service.update import ChangeSummary


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


def open_collection(config: Config, name: str) -> "CollectionStore":
    """The store of the collection ``name`` (it may not exist yet), with the mirror ``config`` asks for."""
    return CollectionStore(config, name, MilvusMirror() if config.backend == "milvus" else LocalOnly())


class CollectionStore:
    """The files of one collection and what may be done with them (see the module docstring)."""

    def __init__(self, config: Config, name: str, mirror: LocalOnly) -> None:
        self.config = config
        self.name = commits.check_safe_name(name)
        self.files = CollectionFiles.at(config.features_dir, config.indexes_dir, name)
        self.mirror = mirror

    # -- reading -------------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.files.manifest.exists()

    def manifest(self) -> Manifest:
        return read_manifest(self.config.indexes_dir, self.name)

    def read_state(self, *, mmap: bool = True, full_check: bool = False) -> commits.State:
        """The current manifest, table and vectors, checked against each other (every checksum with
        ``full_check``, else a sample: :func:`app.service.commit.read_state`)."""
        return commits.read_state(self.config, self.name, mmap=mmap, full_check=full_check)

    def vector_store(self, embedder: Embedder) -> tuple[VectorStore, Manifest]:
        """The vector store to search (the mirror's, or the local faiss index) and the manifest."""
        return self.mirror.vector_store(self.config, self.name, embedder)

    def count(self) -> int:
        """The valid images (in the mirror, checked against the local table, when there is one)."""
        return self.mirror.count(self.config, self.read_state())

    # -- changing ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, *, wait_s: float = 0.0) -> Iterator[None]:
        """One change at a time, across processes (:func:`app.service.commit.collection_lock`)."""
        with commits.collection_lock(self.config, self.name, wait_s=wait_s):
            yield

    def commit(self, manifest: Manifest | dict[str, Any], table: FeatureTable, *,
               vectors: np.ndarray | AppendedRows | None = None, index: Any = None, generation: int | None = None,
               index_in_place: bool = False) -> Manifest:
        """Make ``table`` (with ``vectors`` and ``index`` when they changed) current (:func:`app.service.commit.commit`)."""
        return commits.commit(self.config, self.name, manifest, table, vectors=vectors, index=index,
                              generation=generation, index_in_place=index_in_place)

    def remove_stale_files(self, manifest: Manifest) -> list[Path]:
        return commits.remove_stale_files(self.config, self.name, manifest)

    def remove_parts(self) -> list[str]:
        """Remove the resumable parts of a build and of a change; returns the folders removed."""
        removed = []
        for parts in (self.files.parts, self.files.update_parts):
            if parts.is_dir():
                remove_parts(parts)
                removed.append(str(parts))
        return removed

    def mirrored(self, summary: ChangeSummary) -> ChangeSummary:
        """The committed change ``summary`` applied to the mirror too."""
        return self.mirror.after_change(self.config, summary)

    # -- renaming and dropping -------------------------------------------------------------------
    def rename(self, new: str) -> RenameSummary:
        """Rename the collection to ``new`` (its files, and its mirror's copy).

        The new name's files are written first (the vectors and the index hard-linked, or copied), then
        its manifest; only then is the old manifest removed, then the old files: a crash leaves the old
        collection loadable (and perhaps the new one too)."""
        commits.check_name(new)
        target = open_collection(self.config, new)
        if target.exists():
            raise CollectionExistsError(f"A collection named {new!r} exists already.",
                                        hint=f"Drop it first (python -m app.cli drop --collection {new}), or pick "
                                             "another name.")
        with self.lock(), target.lock():
            state = self.read_state()
            m, to = state.manifest, target.files
            table = replace(state.table, name=new)
            files = [to.vectors(), to.table(), to.index()]
            _link(self.files.features_dir / m.features, files[0])
            create_table_db(files[1], table, 0)
            _link(self.files.indexes_dir / m.index_file, files[2])
            for part, moved in zip(self.files.part_files(), to.part_files(), strict=True):
                if part.is_file():
                    _link(part, moved)
            new_manifest = m.with_(name=new, generation=0, features=files[0].name, table=files[1].name,
                                   index_file=files[2].name, table_sha256=None)  # the table names it
            write_json(to.manifest, new_manifest.to_json())  # the new name exists
            try:
                milvus = self.mirror.rename(self.config, self.name, new)
            except Exception:  # the mirror refused or is unreachable: undo, the old name stays as it was
                for path in (to.manifest, *files, *to.part_files()):
                    path.unlink(missing_ok=True)
                raise
            rename_objects(self.config, self.name, new)  # the object vectors, rewritten under the new name
            self.files.manifest.unlink()  # the old name is gone
            for path in self.files.data_files() + self.files.part_files():
                path.unlink(missing_ok=True)
            self.remove_parts()
        self.files.lock.unlink(missing_ok=True)
        return RenameSummary(self.name, new, table.live_count, tuple(str(f) for f in files), milvus)

    def drop(self) -> DropSummary:
        """Remove the collection: its manifest first (it then no longer exists), then its data files (every
        generation), resumable parts and lock, and its mirror's copy. Images are never touched."""
        with self.lock():
            files = self.files.data_files()
            if not self.exists() and not files:
                raise IndexMissingError(f"There is no collection named {self.name!r}.",
                                        hint="python -m app.cli list shows the collections.")
            removed = []
            if self.exists():
                self.files.manifest.unlink()
                removed.append(str(self.files.manifest))
            for path in files + [p for p in self.files.part_files() if p.is_file()]:
                path.unlink(missing_ok=True)
                removed.append(str(path))
            removed += [str(p) for p in drop_objects(self.config, self.name)]
            removed += self.remove_parts()
            milvus = self.mirror.drop(self.config, self.name)
        with contextlib.suppress(FileNotFoundError):
            self.files.lock.unlink()
        return DropSummary(self.name, tuple(removed), tuple(milvus))


def _link(src: Path, dst: Path) -> None:
    """``dst`` as a hard link to ``src`` (files are never changed in place), or a copy across file systems."""
    tmp = dst.with_name(f".{dst.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
