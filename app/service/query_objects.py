"""Objects in query images, and searching collections' objects: :class:`QueryObjects` (``service.objects``).

* :meth:`QueryObjects.detect`: the objects of a query the service has seen, from the pixels it remembered
  when it prepared the image (the page's copy: :meth:`~app.service.search.SearchService.query_vector`
  hands them over), so the user's file is never decoded twice; a query it no longer remembers (or a
  collection item's preview) is decoded from the page's copy. Boxes are in the copy's pixels.
* :meth:`QueryObjects.search_box`: one object of such a query searched alone (its crop with a little
  context, :func:`app.service.objects.object_crop`), against whole photos or against objects.
* :meth:`QueryObjects.search_new_image` / :meth:`~QueryObjects.search_item` / :meth:`~QueryObjects.search_vector`:
  "objects inside photos": the query's vector against a collection's object vectors
  (:mod:`app.service.objects`), answered as an :class:`ObjectResult`.
* :meth:`QueryObjects.detect_image`: the objects of an image file in its own pixels (the API, the CLI).

The detector is loaded on first use; without it, :class:`~app.errors.DetectorUnavailableError` says which
command installs it.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from PIL import Image

from app.core.box_draw import draw_boxes
from app.core.detect import DetectedObject, Detector, clip_box
from app.core.images import load_image
from app.core.thumbnails import jpeg_bytes
from app.errors import AppError, IndexMissingError
from app.files.atomic import write_bytes
from app.service.collection_store import open_collection
from app.service.objects import ObjectHit, ObjectStore, load_objects, object_crop, record_path, search_objects
from app.service.query_image import QueryImage
from app.service.timings import Timings

if TYPE_CHECKING:
    from app.service.search import QueryResult, SearchService


@dataclass(frozen=True)
class ObjectResult:
    """The answer to a search of a collection's objects: object hits (each its photo, box and label)."""

    collection: str
    size: int  # objects searched (of live photos)
    k: int
    hits: list[ObjectHit]
    timings_ms: dict[str, float]
    image_root: Path
    reused: bool = False
    image: QueryImage | None = None
    box: tuple[float, float, float, float] | None = None  # the query object's box, when one was searched

    def ms(self, stage: str) -> float:
        return self.timings_ms.get(stage, 0.0)

    def abs_path(self, hit: ObjectHit) -> Path:
        p = Path(hit.path)
        return p if p.is_absolute() else self.image_root / p

    def to_json(self) -> dict[str, Any]:
        return {"collection": self.collection, "size": self.size, "k": self.k, "objects": True,
                "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
                "hits": [h.to_json() for h in self.hits]}


@dataclass
class _Remembered:
    image: Image.Image
    found: list[DetectedObject] | None = None
    detect_ms: float = 0.0


@dataclass
class _StoreEntry:
    stamp: tuple[int, int]
    store: ObjectStore = field(repr=False)


class QueryObjects:
    """The objects side of a :class:`~app.service.search.SearchService` (its ``objects`` attribute)."""

    # One intra-op thread for a query's detection unless --threads says otherwise: on the 2 shared cores it
    # ran NanoDet-m in 28.7 ms p50 vs 42.3 ms with two (scripts: README "Objects in photos", speed).
    DETECT_THREADS = 1
    PIXELS_KEPT = 16  # query images remembered (the page's copies, at most 1,024 px: 3 MB each)

    def __init__(self, service: SearchService, detector: Detector | None = None) -> None:
        self._service = service
        self._detector = detector
        self._images: OrderedDict[str, _Remembered] = OrderedDict()
        self._stores: dict[str, _StoreEntry] = {}
        self._lock = threading.Lock()

    # -- the detector ------------------------------------------------------------------------------
    @property
    def detector(self) -> Detector:
        if self._detector is None:
            config = self._service.config
            self._detector = Detector(config.cache_dir, threads=config.threads or self.DETECT_THREADS)
        return self._detector

    def use_detector(self, detector: Detector | None) -> None:
        """Detect with ``detector`` from now on (None: the installed one, found on first use)."""
        self._detector = detector
        with self._lock:
            for item in self._images.values():
                item.found = None

    def available(self) -> bool:
        """Whether the detector loads (checked once it is loaded)."""
        try:
            self.detector.load()
        except AppError:
            return False
        return True

    # -- query images --------------------------------------------------------------------------------
    def remember(self, key: str, image: Image.Image) -> None:
        """Keep the pixels of query ``key`` (the page's copy) for its detection and its objects' crops."""
        with self._lock:
            if key in self._images:
                self._images.move_to_end(key)
                return
            self._images[key] = _Remembered(image)
            while len(self._images) > self.PIXELS_KEPT:
                self._images.popitem(last=False)

    def _remembered(self, key: str, path: str | os.PathLike[str] | None) -> _Remembered:
        with self._lock:
            item = self._images.get(key)
            if item is not None:
                self._images.move_to_end(key)
                return item
        if path is None:
            raise AppError("That image is no longer at hand; search it again.")
        self.remember(key, load_image(path))  # the page's copy (or an item's preview), never the user's file
        with self._lock:
            return self._images[key]

    def detect(self, key: str, path: str | os.PathLike[str] | None = None, *,
               timings: Timings | None = None) -> list[DetectedObject]:
        """The objects of query ``key`` (best first, boxes in the pixels of the page's copy); ``path``: the
        copy, decoded when the pixels are no longer remembered. Detected once per image."""
        item = self._remembered(key, path)
        t = timings if timings is not None else Timings()
        if item.found is None:
            with t.stage("detect"):
                item.found = self.detector.detect(item.image)
            item.detect_ms = t.ms.get("detect", 0.0)
        return list(item.found)

    def overlay(self, key: str, path: str | os.PathLike[str] | None, found: Sequence[DetectedObject],
                out_dir: str | os.PathLike[str]) -> Path:
        """A JPEG of query ``key``'s image with ``found``'s boxes drawn and labelled, in ``out_dir``."""
        img = self._remembered(key, path).image
        name = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:40]
        out = Path(out_dir) / f"{name}.objects.jpg"
        drawn = draw_boxes(img, [(o.box, f"{o.label} {o.score:.2f}") for o in found])
        write_bytes(out, jpeg_bytes(drawn), durable=False)
        return out

    def image_size(self, key: str, path: str | os.PathLike[str] | None = None) -> tuple[int, int]:
        return self._remembered(key, path).image.size

    def detect_image(self, source) -> list[DetectedObject]:
        """The objects of an image (a file, bytes, or pixels) in its own pixels, best first."""
        if isinstance(source, (bytes, bytearray)):
            source = io.BytesIO(source)
        img = source if isinstance(source, Image.Image) else load_image(source)
        return self.detector.detect(img)

    def crop_vector(self, key: str, path: str | os.PathLike[str] | None, box: Sequence[float],
                    timings: Timings | None = None) -> tuple[np.ndarray, tuple[float, float, float, float]]:
        """The vector of one object of query ``key``: ``box`` (clipped to the image; InvalidBoxError for a box
        of no size) cropped with a little context and embedded."""
        img = self._remembered(key, path).image
        clipped = clip_box(box, img.width, img.height)
        return self._service.embed_image(object_crop(img, clipped), timings), clipped

    def search_box(self, key: str, path: str | os.PathLike[str] | None, box: Sequence[float], collection: str,
                   k: int | float | None = None, *, objects: bool = False) -> QueryResult | ObjectResult:
        """Search ``collection`` with one object of query ``key`` alone: whole photos (a QueryResult) or,
        with ``objects``, the collection's objects (an ObjectResult)."""
        from app.service.search import QueryResult  # search.py imports this module

        t = Timings()
        with t.stage("total"):
            vec, clipped = self.crop_vector(key, path, box, t)
            if objects:
                found = self.search_vector(collection, vec, k, timings=t)
            else:
                found = self._service.search_vector(collection, vec, k)
        times = {**found.timings_ms, **{s: v for s, v in t.ms.items() if s != "total"}, "total": t.ms["total"]}
        if objects:
            return ObjectResult(found.collection, found.size, found.k, found.hits, times, found.image_root,
                                box=clipped)
        return QueryResult(found.collection, found.size, found.k, found.hits, times)

    # -- searching a collection's objects -------------------------------------------------------------
    def store(self, name: str) -> ObjectStore:
        """``name``'s object vectors (read again when they changed); IndexMissingError when it has none, or
        they were made with another model."""
        config = self._service.config
        try:
            st = record_path(config, name).stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = (0, 0)
        with self._lock:
            entry = self._stores.get(name)
        if entry is None or entry.stamp != stamp:
            entry = _StoreEntry(stamp, load_objects(config, name))
            with self._lock:
                self._stores[name] = entry
        embedder = self._service.embedder
        if entry.store.weights_id != embedder.weights_id:
            raise IndexMissingError(f"{name}'s object vectors were made with {entry.store.weights_id}, not "
                                    f"{embedder.weights_id}.", hint=f"Rebuild {name} with the running model.")
        return entry.store

    def has_objects(self, name: str) -> bool:
        try:
            self.store(name)
        except AppError:
            return False
        return True

    def search_vector(self, collection: str, vector: np.ndarray, k: int | float | None = None, *,
                      timings: Timings | None = None, exclude_items: set[int] = frozenset()) -> ObjectResult:
        t = timings if timings is not None else Timings()
        k = self._service.clamp_k(k)
        col = self._service.collection(collection)
        store = self.store(col.name)
        with t.stage("search"):
            # Milvus's candidates (more than k: deleted photos' objects are skipped), re-scored exactly.
            only = self._milvus_candidates(col.name, vector, min(len(store), max(8 * k, k + 64)))
            hits = search_objects(store, vector, k, paths=col.table.paths, photo_labels=col.table.labels,
                                  live=col.live_mask, exclude_items=exclude_items, only=only)
        live = col.live_mask
        size = int(np.count_nonzero(live[store.item_ids])) if len(store) else 0
        return ObjectResult(col.name, size, k, hits, dict(t.ms), col.image_root)

    def _milvus_candidates(self, name: str, vector: np.ndarray, n: int) -> np.ndarray | None:
        """With ``--backend milvus``, the candidate objects Milvus finds (None: search every object locally;
        objects never pushed to Milvus are searched locally, as a collection never pushed is)."""
        config = self._service.config
        return open_collection(config, name).mirror.object_candidates(config, name, vector, n)

    def search_new_image(self, source, collection: str, k: int | float | None = None, *, key: str | None = None,
                         copy_dir: str | os.PathLike[str] | None = None) -> ObjectResult:
        """A new image (as :meth:`~app.service.search.SearchService.search_new_image` takes it) against
        ``collection``'s objects."""
        t = Timings()
        with t.stage("total"):
            vec, prepared = self._service.query_vector(source, key=key, copy_dir=copy_dir, timings=t)
            found = self.search_vector(collection, vec, k, timings=t)
        return ObjectResult(found.collection, found.size, found.k, found.hits, t.ms, found.image_root,
                            image=prepared)

    def search_item(self, collection: str, item_id: int, k: int | float | None = None, *,
                    source: str | None = None) -> ObjectResult:
        """A collection item's stored vector (no model run) against ``collection``'s objects."""
        t = Timings()
        with t.stage("total"):
            src = self._service.collection(source or collection)
            src.check_id(item_id)
            vec = np.asarray(src.vectors[int(item_id)], dtype=np.float32)
            found = self.search_vector(collection, vec, k, timings=t)
        return ObjectResult(found.collection, found.size, found.k, found.hits, t.ms, found.image_root, reused=True)
