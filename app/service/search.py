"""The search service: image (or collection item) + collection + k -> ranked hits.

The UI and the CLI both call :class:`SearchService`, a facade over two parts:

* :class:`~app.service.catalogue.Catalogue` lists the collections and loads each one (its vector
  store, manifest, id table and stored vectors);
* :class:`Searcher` embeds query images, asks a collection's vector store for candidates (through
  the :class:`~app.index.store.VectorStore` methods only), re-ranks them by exact cosine, pages
  through examples and remembers query vectors.

The embedder and the loaded collections are passed in or made lazily, so tests can use fakes and
nothing heavy happens at import time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from app.config import Config
from app.core.embed import Embedder, embedder_for
from app.core.images import ImageSource, load_image
from app.index.rerank import RerankOptions
from app.service.catalogue import Catalogue, Collection, CollectionInfo, open_store
from app.service.requery import requery

__all__ = ["Catalogue", "Collection", "CollectionInfo", "Hit", "SearchResult", "SearchService", "Searcher",
           "candidates", "open_store"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hit:
    rank: int  # 1-based
    id: int  # row of the collection's feature table
    path: str  # relative to the collection's image root
    label: str
    score: float  # cosine similarity, 1.0 = identical (a re-ranked list is ordered by app.service.requery's score)
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


def candidates(k: int, n: int) -> int:
    """How many index results are re-ranked by their exact cosine to return ``k`` hits."""
    return min(n, max(4 * k, k + 16))


class Searcher:
    """Answers queries over the collections of a :class:`Catalogue`.

    Query vectors are L2-normalised embeddings; the store picks ``candidates(k, n)`` of them and
    their exact cosines (from the stored vectors) order the hits.
    """

    QUERY_CACHE_SIZE = 256  # query vectors remembered by key (8 KiB each)

    def __init__(self, config: Config, catalogue: Catalogue, embedder: Callable[[], Embedder]) -> None:
        self.config = config
        self.catalogue = catalogue
        self._embedder = embedder
        # Query vectors remembered by image key (see search_image), least recently used first.
        self._qcache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._qcache_lock = threading.Lock()
        self._embed_lock = threading.Lock()

    def clamp_k(self, k: int | float | None) -> int:
        k = self.config.default_k if k is None else int(k)
        return max(1, min(self.config.max_k, k))

    def embed(self, image: ImageSource) -> tuple[np.ndarray, float, float]:
        """(vector, decode+preprocess ms, embed ms) for a new image."""
        embedder = self._embedder()
        t0 = time.perf_counter()
        img = load_image(image, draft_size=embedder.preprocessing.resize)
        arr = embedder.preprocess(img)[None]
        t1 = time.perf_counter()
        vec = embedder.embed_arrays(arr)[0]
        t2 = time.perf_counter()
        return vec, (t1 - t0) * 1000.0, (t2 - t1) * 1000.0

    # -- queries -------------------------------------------------------------------------------
    def search(self, image: ImageSource, collection: str, k: int | None = 5) -> SearchResult:
        """Search ``collection`` for the images most similar to ``image`` (path, bytes or PIL)."""
        t0 = time.perf_counter()
        col = self.catalogue.get(collection)
        vec, decode_ms, embed_ms = self.embed(image)
        return self.ranked(col, vec, self.clamp_k(k), t0, decode_ms=decode_ms, embed_ms=embed_ms)

    def search_item(self, collection: str, item_id: int, k: int | None = 5, *, rerank: bool | None = None
                    ) -> SearchResult:
        """Use a collection item as the query: its stored vector, no model run."""
        return self.search_item_in(collection, item_id, collection, k, rerank=rerank)

    def search_item_in(self, source: str, item_id: int, collection: str, k: int | None = 5, *,
                       rerank: bool | None = None) -> SearchResult:
        """Item ``item_id`` of collection ``source`` as the query in ``collection`` (stored vector, no model run)."""
        t0 = time.perf_counter()
        src = self.catalogue.get(source)
        src.check_id(item_id)
        col = src if source == collection else self.catalogue.get(collection)
        vec = np.asarray(src.vectors[int(item_id)], dtype=np.float32)
        return self.ranked(col, vec, self.clamp_k(k), t0, reused=True, rerank=self.rerank_options(rerank))

    def search_vector(self, collection: str, vector: np.ndarray, k: int | None = 5, *,
                      rerank: bool | None = None) -> SearchResult:
        t0 = time.perf_counter()
        return self.ranked(self.catalogue.get(collection), vector, self.clamp_k(k), t0,
                           rerank=self.rerank_options(rerank))

    def search_image(self, image: ImageSource, collection: str, k: int | None = 5, *,
                     key: str | None = None, rerank: bool | None = None) -> SearchResult:
        """:meth:`search`, remembering the query vector under ``key`` (a hash of the image).
        ``rerank``: query expansion on or off for this search (None: the configuration's).

        The same image searched again (another k, another collection, a repeated UI event) uses the
        remembered vector: no decode, no model run (``decode_ms`` and ``embed_ms`` are then 0).
        Concurrent calls for an image not seen yet run the model once.
        """
        t0 = time.perf_counter()
        col = self.catalogue.get(collection)
        vec, decode_ms, embed_ms = self.embed(image) if key is None else self._remembered_vector(image, key)
        return self.ranked(col, vec, self.clamp_k(k), t0, decode_ms=decode_ms, embed_ms=embed_ms,
                           rerank=self.rerank_options(rerank))

    def rerank_options(self, rerank: bool | None = None) -> RerankOptions:
        """The re-ranking a search uses: the configuration's (``--no-rerank`` turns it off), or ``rerank``."""
        on = getattr(self.config, "rerank", True) if rerank is None else bool(rerank)
        return RerankOptions() if on else RerankOptions.off()

    def ranked(self, col: Collection, vec: np.ndarray, k: int, t0: float, *, decode_ms: float = 0.0,
               embed_ms: float = 0.0, reused: bool = False, rerank: RerankOptions | None = None) -> SearchResult:
        """The top ``k`` of ``col`` for the query vector ``vec``, by exact cosine among the store's candidates
        (then re-ranked by query expansion, :func:`~app.service.requery.requery`, unless ``rerank`` is off)."""
        rerank = self.rerank_options() if rerank is None else rerank
        t1 = time.perf_counter()
        n = len(col)
        with col.lock:
            _, found = col.store.search(vec[None], max(1, candidates(k, n)))
        live = col.live_mask
        ids = [int(i) for i in found[0] if 0 <= i < len(live) and live[i]]  # a deleted id is never a hit
        if len(ids) < min(k, n):
            # The probed IVF lists held fewer vectors than asked for: an exact scan, never fewer hits.
            exact = np.asarray(col.vectors, dtype=np.float32) @ vec
            exact[~live] = -np.inf
            ids = [int(i) for i in np.argsort(-exact, kind="stable")[: candidates(k, n)]]
        # Exact cosines from the stored vectors: the index picks the candidates, the scores are true,
        # and re-ranking more candidates than k keeps a best match the lossy codes placed just below k.
        scores = np.asarray(col.vectors[ids], dtype=np.float32) @ vec if ids else np.zeros(0, np.float32)
        order = np.argsort(-scores, kind="stable")[:k]
        if rerank.enabled and ids:  # αQE: one more search; scores stay the cosines to vec
            ids, scores = requery(col, vec, ids, scores, k, candidates(k, n), rerank)
            order = np.arange(len(ids))
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
        col = self.catalogue.get(collection)
        total = len(col)
        if total == 0:
            return []
        step = max(1, total // n)
        start = (page * 7919) % step if step > 1 else 0  # a different offset per page
        ids = [int(col.live_ids[(start + i * step) % total]) for i in range(min(n, total))]
        return [
            Hit(rank=0, id=i, path=col.table.paths[i], label=col.table.label(i), score=float("nan"),
                abs_path=col.image_root / col.table.paths[i])
            for i in ids
        ]

    # -- remembered query vectors (the UI searches one image again with another k or collection) -
    def _remembered_vector(self, image: ImageSource, key: str) -> tuple[np.ndarray, float, float]:
        """(vector, decode ms, embed ms) of the image remembered under ``key``, embedding it the first time."""
        cache, cache_lock = self._qcache, self._qcache_lock
        with cache_lock:
            vec = cache.get(key)
            if vec is not None:
                cache.move_to_end(key)
                return vec, 0.0, 0.0
        with self._embed_lock:  # one model run per new image, even when two events race
            with cache_lock:
                vec = cache.get(key)
            if vec is not None:
                return vec, 0.0, 0.0
            vec, decode_ms, embed_ms = self.embed(image)
            with cache_lock:
                cache[key] = vec
                while len(cache) > self.QUERY_CACHE_SIZE:
                    cache.popitem(last=False)
            return vec, decode_ms, embed_ms

    def forget_query_vectors(self) -> None:
        """Forget the vectors :meth:`search_image` remembers (the next search of any image runs the model)."""
        with self._qcache_lock:
            self._qcache.clear()


class SearchService:
    """Loads collections on demand and answers queries: a :class:`Catalogue` plus a :class:`Searcher`."""

    def __init__(self, config: Config, *, embedder: Embedder | None = None) -> None:
        self.config = config
        self._embedder = embedder
        self.catalogue = Catalogue(config, lambda: self.embedder)
        self.searcher = Searcher(config, self.catalogue, lambda: self.embedder)

    # -- model -------------------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = embedder_for(self.config)
        return self._embedder

    def notices(self) -> list[str]:
        return list(self.embedder.notices)

    def embed(self, image: ImageSource) -> tuple[np.ndarray, float, float]:
        """(vector, decode+preprocess ms, embed ms) for a new image."""
        return self.searcher.embed(image)

    # -- collections ---------------------------------------------------------------------------
    def collections(self) -> list[CollectionInfo]:
        """Every known or built collection, with whether it can be searched now (loads it if needed)."""
        return self.catalogue.infos()

    def collection(self, name: str) -> Collection:
        return self.catalogue.get(name)

    # -- searching and browsing (see Searcher) ---------------------------------------------------
    def clamp_k(self, k: int | float | None) -> int:
        return self.searcher.clamp_k(k)

    def search(self, image: ImageSource, collection: str, k: int | None = 5) -> SearchResult:
        """Search ``collection`` for the images most similar to ``image`` (path, bytes or PIL)."""
        return self.searcher.search(image, collection, k)

    def search_item(self, collection: str, item_id: int, k: int | None = 5, *, rerank: bool | None = None
                    ) -> SearchResult:
        """Use a collection item as the query: its stored vector, no model run."""
        return self.searcher.search_item(collection, item_id, k, rerank=rerank)

    def search_item_in(self, source: str, item_id: int, collection: str, k: int | None = 5, *,
                       rerank: bool | None = None) -> SearchResult:
        """Item ``item_id`` of collection ``source`` as the query in ``collection`` (stored vector, no model run)."""
        return self.searcher.search_item_in(source, item_id, collection, k, rerank=rerank)

    def search_vector(self, collection: str, vector: np.ndarray, k: int | None = 5, *,
                      rerank: bool | None = None) -> SearchResult:
        return self.searcher.search_vector(collection, vector, k, rerank=rerank)

    def search_image(self, image: ImageSource, collection: str, k: int | None = 5, *,
                     key: str | None = None, rerank: bool | None = None) -> SearchResult:
        """:meth:`Searcher.search_image`: :meth:`search`, remembering the query vector under ``key``."""
        return self.searcher.search_image(image, collection, k, key=key, rerank=rerank)

    def forget_query_vectors(self) -> None:
        """Forget the vectors :meth:`search_image` remembers (the next search of any image runs the model)."""
        self.searcher.forget_query_vectors()

    def examples(self, collection: str, n: int = 12, page: int = 0) -> list[Hit]:
        """A browsable sample spread over the labels: page 0, 1, 2... show different images."""
        return self.searcher.examples(collection, n, page)
