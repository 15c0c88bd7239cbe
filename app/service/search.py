"""The search service: one object that runs a query end to end (as rclip's ``RClip.search`` does).

:class:`SearchService` answers every kind of query with a :class:`QueryResult`:

* :meth:`SearchService.search_new_image`: a new image (file path, bytes, or the pixels of a crop) is read
  and hashed, decoded once by :func:`app.core.images.load_image` (a JPEG at the DCT scale that both the
  app's copy and the model need), copied for the page when asked, preprocessed, embedded (or its
  remembered vector reused), searched and re-scored;
* :meth:`SearchService.search_item`: a collection item searched with its stored vector, no model run;
* :meth:`SearchService.search_vector`: a vector the caller made.

k is clamped here, once, and every stage's time goes into one :class:`~app.service.timings.Timings`
record. The collections come from a :class:`~app.service.catalogue.Catalogue` (each with its
:class:`~app.index.store.VectorStore`); the embedder is made on first use, so nothing heavy
happens at import time and tests can pass fakes.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from app.config import Config
from app.core.embed import Embedder, embedder_for
from app.core.photo_meta import item_meta
from app.index.rerank import RerankOptions
from app.index.rescore import candidate_count
from app.service.catalogue import Catalogue, Collection, CollectionInfo
from app.service.filters import SearchFilter, band, band_floor, matching_ids
from app.service.query_image import QueryImage, prepare_query
from app.service.query_objects import QueryObjects
from app.service.requery import requery
from app.service.timings import Timings

__all__ = ["Hit", "QueryResult", "SearchService", "candidates"]

log = logging.getLogger(__name__)

QUERY_STAGES = ("hash", "decode", "copy", "preprocess", "embed", "search", "total")


@dataclass(frozen=True)
class Hit:
    rank: int  # 1-based
    id: int  # row of the collection's feature table
    path: str  # relative to the collection's image root
    label: str
    score: float  # cosine similarity, 1.0 = identical (a re-ranked list is ordered by app.service.requery's score)
    abs_path: Path
    meta: dict[str, Any] | None = None  # capture time and camera, as recorded at build time

    @property
    def band(self) -> str:
        """The similarity band a person reads (:func:`app.service.filters.band`)."""
        return band(self.score)

    def to_json(self) -> dict[str, Any]:
        return {"rank": self.rank, "id": self.id, "path": self.path, "label": self.label, "score": round(self.score, 6),
                "band": self.band, "meta": self.meta}


@dataclass(frozen=True)
class QueryResult:
    """The answer to one query: the hits and the time of each stage it went through.

    ``timings_ms`` has ``total`` and ``search``, and for a new image ``hash`` (reading and hashing),
    ``decode``, ``copy``, ``preprocess`` and ``embed`` (the last two 0 when its vector was remembered).
    ``image``: the prepared new image (its key, the page's copy), None for a collection item.
    """

    collection: str
    size: int  # the collection's valid images when it was searched
    k: int
    hits: list[Hit]
    timings_ms: dict[str, float]
    reused: bool = False  # the query was a collection item: its stored vector was used, no model run
    image: QueryImage | None = None
    where: SearchFilter | None = None  # what the search was limited to
    matching: int | None = None  # with a filter that selects: the valid items that passed it

    def ms(self, stage: str) -> float:
        return self.timings_ms.get(stage, 0.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "size": self.size,
            "k": self.k,
            "reused": self.reused,
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
            "hits": [h.to_json() for h in self.hits],
            **({"filter": self.where.to_json(), "matching": self.matching} if self.where is not None else {}),
        }


def candidates(k: int, n: int) -> int:
    """How many index results are re-ranked by their exact cosine to return ``k`` hits."""
    return min(n, max(4 * k, k + 16))


class SearchService:
    """Answers queries over the collections of a :class:`Catalogue` (see the module docstring).

    Query vectors are L2-normalised embeddings; the store picks the tuned R of them (the manifest's
    ``tuning.rescore_candidates``; ``candidates(k, n)`` for an older manifest) and their exact cosines (from
    those R rows of the stored vectors) order the hits.
    """

    QUERY_CACHE_SIZE = 256  # query vectors remembered by image key (8 KiB each)

    def __init__(self, config: Config, *, embedder: Embedder | None = None) -> None:
        self.config = config
        self._embedder = embedder
        self.catalogue = Catalogue(config, lambda: self.embedder)
        # Query vectors remembered by image key, least recently used first.
        self._qcache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._qcache_lock = threading.Lock()
        self._embed_lock = threading.Lock()
        self.objects = QueryObjects(self)  # objects in query images, and collections' objects

    # -- model and collections -------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = embedder_for(self.config)
        return self._embedder

    def notices(self) -> list[str]:
        return list(self.embedder.notices)

    def collections(self) -> list[CollectionInfo]:
        """Every known or built collection, with whether it can be searched now (loads it if needed)."""
        return self.catalogue.infos()

    def collection(self, name: str) -> Collection:
        return self.catalogue.get(name)

    def clamp_k(self, k: int | float | None) -> int:
        k = self.config.default_k if k is None else int(k)
        return max(1, min(self.config.max_k, k))

    # -- queries ---------------------------------------------------------------------------------
    def search_new_image(self, source: str | os.PathLike[str] | bytes | Image.Image, collection: str,
                         k: int | float | None = None, *, key: str | None = None,
                         copy_dir: str | os.PathLike[str] | None = None, where: SearchFilter | None = None,
                         rerank: bool | None = None) -> QueryResult:
        """Search ``collection`` with a new image: a file path, its bytes, or pixels (a crop).

        Decoded once (:func:`~app.service.query_image.prepare_query`); ``copy_dir``: where the app's
        copy of it goes (None: no copy); ``key``: the image's identity when the caller knows it (default:
        a hash of its bytes or pixels). An image searched before (same key) reuses its remembered
        vector: no model run. ``where``: only items that pass this filter (a sub-folder, dates, a camera:
        applied before ranking, so k hits come back whenever k items pass) and no hit below its band;
        ``rerank``: query expansion on or off for this search (None: the configuration's, ``--no-rerank``).
        """
        t = Timings()
        with t.stage("total"):
            k = self.clamp_k(k)
            col = self.catalogue.get(collection)
            vec, prepared = self.query_vector(source, key=key, copy_dir=copy_dir, timings=t)
            hits, matching = self._ranked(col, vec, k, t, where, self.rerank_options(rerank))
        return QueryResult(col.name, len(col), k, hits, t.ms, image=prepared, where=where, matching=matching)

    def query_vector(self, source: str | os.PathLike[str] | bytes | Image.Image, *, key: str | None = None,
                     copy_dir: str | os.PathLike[str] | None = None,
                     timings: Timings | None = None) -> tuple[np.ndarray, QueryImage | None]:
        """A new image's vector (remembered, or embedded from its one decode) and the prepared image; the
        stages ``hash``, ``decode``, ``copy``, ``preprocess`` and ``embed`` go into ``timings``. An image
        searched again under its ``key`` with no copy to make (another k, collection or filter) reads
        nothing while its vector is remembered (the prepared image is then None)."""
        t = timings if timings is not None else Timings()
        if key is not None and copy_dir is None:
            with self._qcache_lock:
                vec = self._qcache.get(key)
                if vec is not None:
                    self._qcache.move_to_end(key)
                    return vec, None
        prepared = prepare_query(source, copy_dir, max_bytes=self.config.max_upload_bytes, key=key,
                                 draft_size=self.embedder.preprocessing.resize, timings=t)
        if prepared.copy is not None:  # the page's pixels, for its objects
            self.objects.remember(prepared.key, prepared.shown)
        return self._vector(prepared, t), prepared

    def search_item(self, collection: str, item_id: int, k: int | float | None = None, *,
                    source: str | None = None, where: SearchFilter | None = None,
                    rerank: bool | None = None) -> QueryResult:
        """Item ``item_id`` of ``source`` (default: ``collection``) as the query in ``collection``: its
        stored vector, no model run."""
        t = Timings()
        with t.stage("total"):
            k = self.clamp_k(k)
            src = self.catalogue.get(source or collection)
            src.check_id(item_id)
            col = src if (source or collection) == collection else self.catalogue.get(collection)
            vec = np.asarray(src.vectors[int(item_id)], dtype=np.float32)
            hits, matching = self._ranked(col, vec, k, t, where, self.rerank_options(rerank))
        return QueryResult(col.name, len(col), k, hits, t.ms, reused=True, where=where, matching=matching)

    def search_vector(self, collection: str, vector: np.ndarray, k: int | float | None = None, *,
                      rerank: bool | None = None) -> QueryResult:
        t = Timings()
        with t.stage("total"):
            k = self.clamp_k(k)
            col = self.catalogue.get(collection)
            hits, _ = self._ranked(col, np.asarray(vector, dtype=np.float32), k, t, rerank=self.rerank_options(rerank))
        return QueryResult(col.name, len(col), k, hits, t.ms)

    def embed_image(self, image: Image.Image, timings: Timings | None = None) -> np.ndarray:
        """The L2-normalised vector of a decoded RGB image (``preprocess`` and ``embed`` stages timed)."""
        t = timings if timings is not None else Timings()
        embedder = self.embedder
        with t.stage("preprocess"):
            arr = embedder.preprocess(image)[None]
        with t.stage("embed"):
            return embedder.embed_arrays(arr)[0]

    def rerank_options(self, rerank: bool | None = None) -> RerankOptions:
        """The re-ranking a search uses: the configuration's (``--no-rerank`` turns it off), or ``rerank``."""
        on = self.config.rerank if rerank is None else bool(rerank)
        return RerankOptions() if on else RerankOptions.off()

    def _ranked(self, col: Collection, vec: np.ndarray, k: int, t: Timings, where: SearchFilter | None = None,
                rerank: RerankOptions | None = None) -> tuple[list[Hit], int | None]:
        """The top ``k`` of ``col`` for the query vector ``vec``, by exact cosine among the store's candidates,
        then re-ranked by query expansion (:func:`~app.service.requery.requery`) unless ``rerank`` is off; or,
        with a filter that selects, by exact cosine among every item passing it. Also how many items passed."""
        with t.stage("search"):
            if where is not None and where.selects:
                ids = matching_ids(col, where)
                scores = np.asarray(col.vectors[ids], dtype=np.float32) @ vec if len(ids) else np.zeros(0, np.float32)
                order = np.argsort(-scores, kind="stable")[:k]
                return self._hits(col, [int(i) for i in ids], scores, order, where), len(ids)
            n = len(col)
            n_cand = candidate_count(col.manifest.tuning, k, n, candidates)  # the tuned R, else candidates()
            with col.lock:
                _, found = col.store.search(vec[None], max(1, n_cand))
            live = col.live_mask
            ids = [int(i) for i in found[0] if 0 <= i < len(live) and live[i]]  # a deleted id is never a hit
            if len(ids) < min(k, n):
                # The probed IVF lists held fewer vectors than asked for: an exact scan, never fewer hits.
                exact = np.asarray(col.vectors, dtype=np.float32) @ vec
                exact[~live] = -np.inf
                ids = [int(i) for i in np.argsort(-exact, kind="stable")[:n_cand]]
            # Exact cosines from the stored vectors: the index picks the candidates, the scores are true,
            # and re-ranking more candidates than k keeps a best match the lossy codes placed just below k.
            scores = np.asarray(col.vectors[ids], dtype=np.float32) @ vec if ids else np.zeros(0, np.float32)
            order = np.argsort(-scores, kind="stable")[:k]
            if rerank is not None and rerank.enabled and ids:  # αQE: one more search; scores stay the cosines to vec
                ids, scores = requery(col, vec, ids, scores, k, n_cand, rerank)
                order = np.arange(len(ids))
            return self._hits(col, ids, scores, order, where), None

    @staticmethod
    def _hits(col: Collection, ids: list[int], scores: np.ndarray, order: np.ndarray,
              where: SearchFilter | None) -> list[Hit]:
        """Hits for ``ids[order]``, stopping at the filter's band cut-off."""
        floor = band_floor(where.min_band) if where is not None and where.min_band else -np.inf
        hits: list[Hit] = []
        for j in order:
            if float(scores[j]) < floor:
                break
            i = ids[j]
            hits.append(Hit(rank=len(hits) + 1, id=i, path=col.table.paths[i], label=col.table.label(i),
                            score=float(scores[j]), abs_path=col.image_root / col.table.paths[i],
                            meta=item_meta(col.table, i)))
        return hits

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
    def _vector(self, prepared: QueryImage, t: Timings) -> np.ndarray:
        """The vector of a prepared image: remembered under its key, or embedded (once, even when two
        events race) and remembered."""
        key = prepared.key
        with self._qcache_lock:
            vec = self._qcache.get(key)
            if vec is not None:
                self._qcache.move_to_end(key)
                return vec
        with self._embed_lock:
            with self._qcache_lock:
                vec = self._qcache.get(key)
            if vec is not None:
                return vec
            vec = self.embed_image(prepared.image, t)
            with self._qcache_lock:
                self._qcache[key] = vec
                while len(self._qcache) > self.QUERY_CACHE_SIZE:
                    self._qcache.popitem(last=False)
            return vec

    def forget_query_vectors(self) -> None:
        """Forget the remembered query vectors (the next search of any image runs the model)."""
        with self._qcache_lock:
            self._qcache.clear()
