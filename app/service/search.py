"""The search service: image (or collection item) + collection + k -> ranked hits.

The UI and the CLI both call :class:`SearchService`. It owns the embedder and the loaded
collections; both are passed in or made lazily, so tests can use fakes and nothing heavy happens
at import time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.config import KNOWN_COLLECTIONS, Config
from app.core.embed import Embedder, embedder_for
from app.errors import IndexMismatchError, IndexMissingError, UnknownItemError
from app.core.features import FeatureTable, load_features
from app.core.images import ImageSource, load_image
from app.index.faiss_store import build_command, list_indexes, load_index, manifest_model, read_manifest, search as index_search

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hit:
    rank: int  # 1-based
    id: int  # row of the collection's feature table
    path: str  # relative to the collection's image root
    label: str
    score: float  # cosine similarity, 1.0 = identical
    abs_path: Path

    def to_json(self) -> dict[str, Any]:
        return {"rank": self.rank, "id": self.id, "path": self.path, "label": self.label, "score": round(self.score, 6)}


@dataclass(frozen=True)
class SearchResult:
    collection: str
    hits: list[Hit]
    decode_ms: float = 0.0
    embed_ms: float = 0.0
    search_ms: float = 0.0
    total_ms: float = 0.0
    reused: bool = False  # the query was a collection item: its stored vector was used, no model run

    def to_json(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "reused": self.reused,
            "timings_ms": {
                "decode": round(self.decode_ms, 2),
                "embed": round(self.embed_ms, 2),
                "search": round(self.search_ms, 2),
                "total": round(self.total_ms, 2),
            },
            "hits": [h.to_json() for h in self.hits],
        }


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
    """A loaded collection: index, manifest, the id table and the stored vectors (memory-mapped)."""

    name: str
    index: Any
    manifest: dict[str, Any]
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


def candidates(k: int, n: int) -> int:
    """How many index results are re-ranked by their exact cosine to return ``k`` hits."""
    return min(n, max(4 * k, k + 16))


class SearchService:
    """Loads collections on demand and answers queries."""

    def __init__(self, config: Config, *, embedder: Embedder | None = None) -> None:
        self.config = config
        self._embedder = embedder
        self._collections: dict[str, Collection] = {}
        self._lock = threading.Lock()
        # Query vectors remembered by image key (see search_image), least recently used first.
        self._qcache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._qcache_lock = threading.Lock()
        self._embed_lock = threading.Lock()

    # -- model -------------------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = embedder_for(self.config)
        return self._embedder

    def notices(self) -> list[str]:
        return list(self.embedder.notices)

    # -- collections ---------------------------------------------------------------------------
    def collection_names(self) -> list[str]:
        found = list_indexes(self.config.indexes_dir)
        return list(KNOWN_COLLECTIONS) + [n for n in found if n not in KNOWN_COLLECTIONS]

    def collections(self) -> list[CollectionInfo]:
        """Every known or built collection, with whether it can be searched now (loads it if needed)."""
        out = []
        for name in self.collection_names():
            try:
                col = self.collection(name)
                out.append(CollectionInfo(name, True, len(col), col.manifest.get("collection", ""),
                                          model=manifest_model(col.manifest)))
            except (IndexMissingError, IndexMismatchError) as exc:
                manifest = None
                try:
                    manifest = read_manifest(self.config.indexes_dir, name)
                except (IndexMissingError, IndexMismatchError):
                    pass
                out.append(CollectionInfo(
                    name, False, kind=(manifest or {}).get("collection", ""), reason=str(exc),
                    build_command=build_command(name, manifest, model=self.embedder.model.name),
                    model=manifest_model(manifest) if manifest else ""))
        return out

    def collection(self, name: str) -> Collection:
        with self._lock:
            col = self._collections.get(name)
            if col is None:
                col = self._load(name)
                self._collections[name] = col
            return col

    def _load(self, name: str) -> Collection:
        cfg = self.config
        if cfg.backend == "milvus":
            index, manifest = self._load_milvus(name)
        else:
            e = self.embedder
            index, manifest = load_index(cfg.indexes_dir, name, weights_id=e.weights_id, dim=e.dim, model=e.model.name)
        vectors, table = load_features(cfg.features_dir, name)
        manifest.setdefault("image_root", table.image_root)
        manifest.setdefault("dataset_root", table.dataset_root)
        hint = f"Rebuild it with: {build_command(name, manifest)}"
        if (
            len(table) != manifest["count"]
            or table.weights_id != manifest["weights_id"]
            # the features of another build (written after this index, or of another sample)
            or manifest.get("features_created", table.created) != table.created
            or manifest.get("features_fingerprint", table.fingerprint) != table.fingerprint
        ):
            raise IndexMismatchError(
                f"The {name} features ({len(table)} vectors, {table.weights_id}) do not match its index "
                f"({manifest['count']} vectors, {manifest['weights_id']}).",
                hint=hint,
            )
        image_root = self._image_root(name, manifest)
        return Collection(name, index, manifest, table, vectors, image_root)

    def _load_milvus(self, name: str) -> tuple[Any, dict[str, Any]]:
        from app.index.milvus_store import MilvusIndex

        if not self.config.milvus_uri:
            raise IndexMissingError("The Milvus backend needs --milvus-uri.")
        index = MilvusIndex(self.config.milvus_uri, name, token=self.config.milvus_token)
        manifest = dict(index.meta)
        if manifest["weights_id"] != self.embedder.weights_id:
            raise IndexMismatchError(
                f"The {name} vectors in Milvus were made with weights {manifest['weights_id']!r}, "
                f"but the app is running with {self.embedder.weights_id!r}.",
                hint="Run with the same --model and --weights, or rebuild and sync again.",
            )
        if int(manifest.get("dim", self.embedder.dim)) != self.embedder.dim:
            raise IndexMismatchError(
                f"The {name} vectors in Milvus have dimension {manifest['dim']}, the model "
                f"{self.embedder.model.name} makes {self.embedder.dim}.",
                hint="Run with the model they were made with, or rebuild and sync again.",
            )
        try:  # the local build's manifest, when present, knows where the images and which dataset kind
            local = read_manifest(self.config.indexes_dir, name)
            manifest = {**local, **manifest, "collection": local.get("collection", manifest.get("collection"))}
        except (IndexMissingError, IndexMismatchError):
            pass
        return index, manifest

    def _image_root(self, name: str, manifest: dict[str, Any]) -> Path:
        """Where the images are: the build's root, or the same layout under --data when given."""
        root = Path(manifest.get("image_root") or manifest.get("dataset_root") or ".")
        built_root = Path(manifest.get("dataset_root") or root)
        if not root.is_dir() and self.config.data_dir:
            candidate = Path(self.config.data_dir) / name / root.relative_to(built_root) if root.is_relative_to(built_root) else None
            if candidate is not None and candidate.is_dir():
                return candidate.resolve()
        return root

    # -- searching -----------------------------------------------------------------------------
    def clamp_k(self, k: int | float | None) -> int:
        k = self.config.default_k if k is None else int(k)
        return max(1, min(self.config.max_k, k))

    def embed(self, image: ImageSource) -> tuple[np.ndarray, float, float]:
        """(vector, decode+preprocess ms, embed ms) for a new image."""
        t0 = time.perf_counter()
        img = load_image(image, draft_size=self.embedder.preprocessing.resize)
        arr = self.embedder.preprocess(img)[None]
        t1 = time.perf_counter()
        vec = self.embedder.embed_arrays(arr)[0]
        t2 = time.perf_counter()
        return vec, (t1 - t0) * 1000.0, (t2 - t1) * 1000.0

    def search(self, image: ImageSource, collection: str, k: int | None = 5) -> SearchResult:
        """Search ``collection`` for the images most similar to ``image`` (path, bytes or PIL)."""
        t0 = time.perf_counter()
        col = self.collection(collection)
        vec, decode_ms, embed_ms = self.embed(image)
        return self._search_vector(col, vec, self.clamp_k(k), t0, decode_ms=decode_ms, embed_ms=embed_ms)

    def search_item(self, collection: str, item_id: int, k: int | None = 5) -> SearchResult:
        """Use a collection item as the query: its stored vector, no model run."""
        t0 = time.perf_counter()
        col = self.collection(collection)
        col.check_id(item_id)
        vec = np.asarray(col.vectors[int(item_id)], dtype=np.float32)
        return self._search_vector(col, vec, self.clamp_k(k), t0, reused=True)

    def search_vector(self, collection: str, vector: np.ndarray, k: int | None = 5) -> SearchResult:
        t0 = time.perf_counter()
        return self._search_vector(self.collection(collection), vector, self.clamp_k(k), t0)

    def _search_vector(self, col: Collection, vec: np.ndarray, k: int, t0: float, *, decode_ms: float = 0.0,
                       embed_ms: float = 0.0, reused: bool = False) -> SearchResult:
        t1 = time.perf_counter()
        with col.lock:
            _, ids = index_search(col.index, vec[None], candidates(k, len(col)))
        ids = [int(i) for i in ids[0] if i >= 0]
        if len(ids) < min(k, len(col)):
            # The probed IVF lists held fewer vectors than asked for: an exact scan, never fewer hits.
            exact = np.asarray(col.vectors, dtype=np.float32) @ vec
            ids = [int(i) for i in np.argsort(-exact, kind="stable")[: candidates(k, len(col))]]
        # Exact cosines from the stored vectors: the index picks the candidates, the scores are true,
        # and re-ranking more candidates than k keeps a best match the lossy codes placed just below k.
        scores = np.asarray(col.vectors[ids], dtype=np.float32) @ vec if ids else np.zeros(0, np.float32)
        order = np.argsort(-scores, kind="stable")[:k]
        hits = [
            Hit(rank=r + 1, id=ids[j], path=col.table.paths[ids[j]], label=col.table.label(ids[j]),
                score=float(scores[j]), abs_path=col.image_root / col.table.paths[ids[j]])
            for r, j in enumerate(order)
        ]
        t2 = time.perf_counter()
        return SearchResult(col.name, hits, decode_ms, embed_ms, (t2 - t1) * 1000.0, (t2 - t0) * 1000.0, reused)

    # -- browsing ------------------------------------------------------------------------------
    def examples(self, collection: str, n: int = 12, page: int = 0) -> list[Hit]:
        """A browsable sample spread over the labels: page 0, 1, 2... show different images."""
        col = self.collection(collection)
        total = len(col)
        if total == 0:
            return []
        step = max(1, total // n)
        start = (page * 7919) % step if step > 1 else 0  # a different offset per page
        ids = [(start + i * step) % total for i in range(min(n, total))]
        return [
            Hit(rank=0, id=i, path=col.table.paths[i], label=col.table.label(i), score=float("nan"),
                abs_path=col.image_root / col.table.paths[i])
            for i in ids
        ]

    # -- remembered query vectors (the UI searches one image again with another k or collection) -
    QUERY_CACHE_SIZE = 256  # query vectors remembered by key (8 KiB each)

    def search_image(self, image: ImageSource, collection: str, k: int | None = 5, *,
                     key: str | None = None) -> SearchResult:
        """:meth:`search`, remembering the query vector under ``key`` (a hash of the image).

        The same image searched again (another k, another collection, a repeated UI event) uses the
        remembered vector: no decode, no model run (``decode_ms`` and ``embed_ms`` are then 0).
        Concurrent calls for an image not seen yet run the model once.
        """
        if key is None:
            return self.search(image, collection, k)
        t0 = time.perf_counter()
        col = self.collection(collection)
        cache, cache_lock, embed_lock = self._qcache, self._qcache_lock, self._embed_lock
        decode_ms = embed_ms = 0.0
        with cache_lock:
            vec = cache.get(key)
            if vec is not None:
                cache.move_to_end(key)
        if vec is None:
            with embed_lock:  # one model run per new image, even when two events race
                with cache_lock:
                    vec = cache.get(key)
                if vec is None:
                    vec, decode_ms, embed_ms = self.embed(image)
                    with cache_lock:
                        cache[key] = vec
                        while len(cache) > self.QUERY_CACHE_SIZE:
                            cache.popitem(last=False)
        return self._search_vector(col, vec, self.clamp_k(k), t0, decode_ms=decode_ms, embed_ms=embed_ms)

    def forget_query_vectors(self) -> None:
        """Forget the vectors :meth:`search_image` remembers (the next search of any image runs the model)."""
        with self._qcache_lock:
            self._qcache.clear()

    def search_item_in(self, source: str, item_id: int, collection: str, k: int | None = 5) -> SearchResult:
        """Item ``item_id`` of collection ``source`` as the query in ``collection`` (stored vector, no model run)."""
        if source == collection:
            return self.search_item(collection, item_id, k)
        t0 = time.perf_counter()
        src = self.collection(source)
        src.check_id(item_id)
        col = self.collection(collection)
        vec = np.asarray(src.vectors[int(item_id)], dtype=np.float32)
        return self._search_vector(col, vec, self.clamp_k(k), t0, reused=True)
