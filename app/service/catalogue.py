"""The catalogue of collections: which exist, and each one loaded (vector store, manifest, features).

:func:`open_store` asks the collection's store (:mod:`app.service.collection_store`) for its vector
store (the local faiss index, or Milvus); everything else sees only the :class:`~app.index.store.VectorStore`
it returns.

A loaded collection is kept until its manifest changes on disk (a build, ``add`` or ``delete`` in
this process or another): the next :meth:`Catalogue.get` loads the new state. Items deleted from a
collection keep their ids as tombstones; :class:`Collection` counts, lists and serves valid ones only.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from app.config import KNOWN_COLLECTIONS, Config
from app.core.embed import Embedder
from app.core.feature_table import FeatureTable, features_for
from app.core.manifest import Manifest
from app.errors import BackendUnavailableError, IndexMismatchError, IndexMissingError, UnknownItemError
from app.files.layout import collection_names
from app.index.faiss_store import FaissStore, build_command, read_manifest
from app.index.store import VectorStore
from app.service import dba
from app.service.collection_store import open_collection
from app.service.commit import check_agrees, files_of, rebuild_advice


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    ready: bool
    size: int = 0
    kind: str = ""
    reason: str = ""  # why it is not ready
    build_command: str = ""  # builds it for the running model
    model: str = ""  # the model it was built with ("" when not built)


@dataclass
class Collection:
    """A loaded collection: vector store, manifest, the id table and the stored vectors (memory-mapped)."""

    name: str
    store: VectorStore
    manifest: Manifest
    table: FeatureTable
    vectors: np.ndarray
    image_root: Path
    lock: threading.Lock = field(default_factory=threading.Lock)
    stamp: tuple[int, int, int] = (0, 0, 0)  # the manifest file's (inode, size, mtime_ns) when loaded
    augmented: np.ndarray | None = None  # DBA vectors that order the candidates (app.service.dba), or None
    whitening: Any = None  # app.service.dba.SearchSpace the augmented vectors live in, or None (raw space)

    def __post_init__(self) -> None:
        self.live_mask = self.table.live_mask()  # False for deleted rows (tombstones)
        self.live_ids = np.flatnonzero(self.live_mask)

    def __len__(self) -> int:
        """The number of valid images (deleted ones not counted)."""
        return len(self.live_ids)

    def item_path(self, item_id: int) -> Path:
        """The absolute path of a valid item: inside the collection's image root, or the file that
        ``add`` indexed from outside it (stored as an absolute path)."""
        self.check_id(item_id)
        return self.image_root / self.table.paths[item_id]

    def check_id(self, item_id: int) -> None:
        if not (0 <= int(item_id) < len(self.table)):
            raise UnknownItemError(f"{self.name} has no item {item_id}.")
        if not self.live_mask[int(item_id)]:
            raise UnknownItemError(f"Item {item_id} was deleted from {self.name}.")


# -- the stores ----------------------------------------------------------------------------------


def open_store(config: Config, name: str, embedder: Embedder) -> tuple[VectorStore, Manifest]:
    """The vector store of ``name`` as its collection store opens it (the local faiss index, or its
    Milvus copy with ``--backend milvus``), checked against ``embedder``, and its manifest."""
    return open_collection(config, name).vector_store(embedder)


# -- the catalogue -------------------------------------------------------------------------------


class Catalogue:
    """Lists the collections and loads each on first use (then keeps it)."""

    def __init__(self, config: Config, embedder: Callable[[], Embedder]) -> None:
        self.config = config
        self._embedder = embedder  # made on first use: listing needs no model
        self._loaded: dict[str, Collection] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        found = collection_names(self.config.indexes_dir)
        return list(KNOWN_COLLECTIONS) + [n for n in found if n not in KNOWN_COLLECTIONS]

    def infos(self) -> list[CollectionInfo]:
        """Every known or built collection, with whether it can be searched now (loads it if needed)."""
        out = []
        for name in self.names():
            try:
                col = self.get(name)
                out.append(CollectionInfo(name, True, len(col), col.manifest.kind,
                                          model=col.manifest.model_name))
            except (IndexMissingError, IndexMismatchError, BackendUnavailableError) as exc:
                manifest = None
                try:
                    manifest = read_manifest(self.config.indexes_dir, name)
                except (IndexMissingError, IndexMismatchError):
                    pass
                out.append(CollectionInfo(
                    name, False, kind=manifest.kind if manifest else "", reason=str(exc),
                    build_command=build_command(name, manifest, model=self._embedder().model.name),
                    model=manifest.model_name if manifest else ""))
        return out

    def get(self, name: str) -> Collection:
        """The loaded collection ``name``; loaded again when its manifest changed since (another build)."""
        with self._lock:
            col = self._loaded.get(name)
            if col is None or col.stamp != self._manifest_stamp(name):
                col = self._load(name)
                self._loaded[name] = col
            return col

    def forget(self, name: str) -> None:
        """Drop the loaded copy of ``name`` (after a rename or drop; the next :meth:`get` loads it again)."""
        with self._lock:
            self._loaded.pop(name, None)

    def _manifest_stamp(self, name: str) -> tuple[int, int, int]:
        try:
            st = files_of(self.config, name).manifest.stat()
        except OSError:
            return (0, 0, 0)
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _load(self, name: str) -> Collection:
        for attempt in range(3):  # a change committed while we read: its old files are gone, read again
            stamp = self._manifest_stamp(name)
            try:
                col = self._load_once(name)
            except (IndexMissingError, IndexMismatchError):
                if attempt == 2 or self._manifest_stamp(name) == stamp:
                    raise
                continue
            col.stamp = stamp
            return col
        raise AssertionError("unreachable")

    def _load_once(self, name: str) -> Collection:
        cfg = self.config
        store, manifest = open_store(cfg, name, self._embedder())
        vectors, table = features_for(cfg.features_dir, manifest.with_(name=name), lazy=True,
                                      hint=rebuild_advice(name, manifest))
        if manifest.image_root is None:
            manifest = manifest.with_(image_root=table.image_root)
        if manifest.dataset_root is None:
            manifest = manifest.with_(dataset_root=table.dataset_root)
        check_agrees(name, manifest, table)
        col = Collection(name, store, manifest, table, vectors, self._image_root(name, manifest))
        if isinstance(store, FaissStore):  # the rows changed since its file was written (app.service.commit)
            store.catch_up(vectors, col.live_mask)
        col.augmented, col.whitening = dba.searched_space(cfg.features_dir, name, vectors, col.live_mask,
                                                            dba.whitening_labels(table.kind, table.labels))
        return col

    def _image_root(self, name: str, manifest: Manifest) -> Path:
        """Where the images are: the build's root, or the same layout under --data when given."""
        root = Path(manifest.image_root or manifest.dataset_root or ".")
        built_root = Path(manifest.dataset_root or root)
        if not root.is_dir() and self.config.data_dir:
            candidate = Path(self.config.data_dir) / name / root.relative_to(built_root) if root.is_relative_to(built_root) else None
            if candidate is not None and candidate.is_dir():
                return candidate.resolve()
        return root
