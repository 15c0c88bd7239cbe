"""The catalogue of collections: which exist, and each one loaded (vector store, manifest, features).

:func:`open_store` picks the vector store from the configuration's backend (the local faiss index,
or Milvus); everything else sees only the :class:`~app.index.store.VectorStore` it returns.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from app.config import KNOWN_COLLECTIONS, Config
from app.core.embed import Embedder
from app.core.features import FeatureTable, load_features, load_verified_features
from app.core.manifest import Manifest
from app.errors import IndexMismatchError, IndexMissingError, UnknownItemError
from app.index.faiss_store import FaissStore, build_command, list_indexes, read_manifest
from app.index.store import VectorStore


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

    def __len__(self) -> int:
        return len(self.table)

    def item_path(self, item_id: int) -> Path:
        """The absolute path of an item; always inside the collection's image root."""
        self.check_id(item_id)
        return self.image_root / self.table.paths[item_id]

    def check_id(self, item_id: int) -> None:
        if not (0 <= int(item_id) < len(self.table)):
            raise UnknownItemError(f"{self.name} has no item {item_id}.")


# -- the stores ----------------------------------------------------------------------------------


def open_store(config: Config, name: str, embedder: Embedder) -> tuple[VectorStore, Manifest]:
    """The vector store of ``name`` for ``config.backend``, checked against ``embedder``, and its manifest."""
    if config.backend == "milvus":
        return _open_milvus(config, name, embedder)
    store = FaissStore.open(config.indexes_dir, name, weights_id=embedder.weights_id, dim=embedder.dim,
                            model=embedder.model.name)
    assert store.manifest is not None
    return store, store.manifest


def _open_milvus(config: Config, name: str, embedder: Embedder) -> tuple[VectorStore, Manifest]:
    from app.index.milvus_store import MilvusIndex

    if not config.milvus_uri:
        raise IndexMissingError("The Milvus backend needs --milvus-uri.")
    store = MilvusIndex(config.milvus_uri, name, token=config.milvus_token)
    meta = store.meta
    assert meta is not None
    if meta.weights_id != embedder.weights_id:
        raise IndexMismatchError(
            f"The {name} vectors in Milvus were made with weights {meta.weights_id!r}, "
            f"but the app is running with {embedder.weights_id!r}.",
            hint="Run with the same --model and --weights, or rebuild and sync again.",
        )
    if meta.dim != embedder.dim:
        raise IndexMismatchError(
            f"The {name} vectors in Milvus have dimension {meta.dim}, the model "
            f"{embedder.model.name} makes {embedder.dim}.",
            hint="Run with the model they were made with, or rebuild and sync again.",
        )
    try:  # the local build's manifest, when present, knows where the images and which dataset kind
        local = read_manifest(config.indexes_dir, name)
        manifest = local.with_(weights_id=meta.weights_id, dim=meta.dim, count=meta.count,
                               collection=local.collection or meta.collection)
    except (IndexMissingError, IndexMismatchError):
        manifest = Manifest(name=name, collection=meta.collection, weights_id=meta.weights_id, dim=meta.dim,
                            count=meta.count, nprobe=store.nprobe)
    return store, manifest


# -- the catalogue -------------------------------------------------------------------------------


class Catalogue:
    """Lists the collections and loads each on first use (then keeps it)."""

    def __init__(self, config: Config, embedder: Callable[[], Embedder]) -> None:
        self.config = config
        self._embedder = embedder  # made on first use: listing needs no model
        self._loaded: dict[str, Collection] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        found = list_indexes(self.config.indexes_dir)
        return list(KNOWN_COLLECTIONS) + [n for n in found if n not in KNOWN_COLLECTIONS]

    def infos(self) -> list[CollectionInfo]:
        """Every known or built collection, with whether it can be searched now (loads it if needed)."""
        out = []
        for name in self.names():
            try:
                col = self.get(name)
                out.append(CollectionInfo(name, True, len(col), col.manifest.collection,
                                          model=col.manifest.model_name))
            except (IndexMissingError, IndexMismatchError) as exc:
                manifest = None
                try:
                    manifest = read_manifest(self.config.indexes_dir, name)
                except (IndexMissingError, IndexMismatchError):
                    pass
                out.append(CollectionInfo(
                    name, False, kind=manifest.collection if manifest else "", reason=str(exc),
                    build_command=build_command(name, manifest, model=self._embedder().model.name),
                    model=manifest.model_name if manifest else ""))
        return out

    def get(self, name: str) -> Collection:
        with self._lock:
            col = self._loaded.get(name)
            if col is None:
                col = self._load(name)
                self._loaded[name] = col
            return col

    def _load(self, name: str) -> Collection:
        cfg = self.config
        store, manifest = open_store(cfg, name, self._embedder())
        hint = f"Rebuild it with: {build_command(name, manifest)}"
        if manifest.features_sha256 and manifest.table_sha256:  # builds that record them: checked byte for byte
            vectors, table = load_verified_features(cfg.features_dir, name, features_sha256=manifest.features_sha256,
                                                    table_sha256=manifest.table_sha256, hint=hint)
        else:
            try:
                vectors, table = load_features(cfg.features_dir, name)
            except IndexMismatchError as exc:
                raise IndexMismatchError(str(exc), hint=hint) from exc
        if manifest.image_root is None:
            manifest = manifest.with_(image_root=table.image_root)
        if manifest.dataset_root is None:
            manifest = manifest.with_(dataset_root=table.dataset_root)
        if (
            len(table) != manifest.count
            or table.weights_id != manifest.weights_id
            # the features of another build (written after this index, or of another sample)
            or manifest.features_created not in (None, table.created)
            or manifest.features_fingerprint not in (None, table.fingerprint)
        ):
            raise IndexMismatchError(
                f"The {name} features ({len(table)} vectors, {table.weights_id}) do not match its index "
                f"({manifest.count} vectors, {manifest.weights_id}).",
                hint=hint,
            )
        return Collection(name, store, manifest, table, vectors, self._image_root(name, manifest))

    def _image_root(self, name: str, manifest: Manifest) -> Path:
        """Where the images are: the build's root, or the same layout under --data when given."""
        root = Path(manifest.image_root or manifest.dataset_root or ".")
        built_root = Path(manifest.dataset_root or root)
        if not root.is_dir() and self.config.data_dir:
            candidate = Path(self.config.data_dir) / name / root.relative_to(built_root) if root.is_relative_to(built_root) else None
            if candidate is not None and candidate.is_dir():
                return candidate.resolve()
        return root
