"""Keeping a collection's object vectors current after each committed change (:mod:`app.service.library`
calls these, so the CLI, the Collections tab and the API alike keep them):

* :func:`refresh_objects`: after a build, an update or an add, detect and embed the new photos' objects
  when the collection has object vectors, or when asked to (``wanted``), or by default when it was just
  built from scratch, its kind holds photos of several objects (:data:`OBJECTS_BY_DEFAULT`) and the
  detector is installed (a collection built without them, e.g. ``--no-objects``, does not get them later
  unasked). Without the
  detector, a default refresh leaves a one-line note; an asked-for one raises DetectorUnavailableError.
* :func:`prune_objects`: after a delete, drop the deleted photos' objects at once (no detector needed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from app.config import Config
from app.core.detect import Detector
from app.core.embed import Embedder, embedder_for
from app.errors import DetectorUnavailableError, IndexMissingError
from app.index.faiss_store import read_manifest
from app.service.collection_store import open_collection
from app.service.commit import collection_lock, read_state
from app.service.objects import ObjectsSummary, ObjectStore, build_objects, load_objects, save_objects
from app.service.progress import ProgressFn, Reporter

OBJECTS_BY_DEFAULT = ("voc2012", "folder")  # collections whose photos hold several objects


@dataclass(frozen=True)
class ObjectsRefresh:
    """What a refresh did: its summary, or (none stored) the one-line reason."""

    summary: ObjectsSummary | None = None
    note: str = ""
    milvus: dict[str, Any] | None = None  # what was pushed to Milvus (backend milvus)

    def to_json(self) -> dict[str, Any]:
        s = self.summary
        return {"objects": s.objects if s else None, "photos_detected": s.detected if s else 0,
                "note": self.note or None, "milvus": self.milvus}


def refresh_objects(config: Config, name: str, *, wanted: bool | None = None, new: bool = False,
                    embedder: Embedder | None = None, detector: Detector | None = None,
                    progress: ProgressFn | None = None) -> ObjectsRefresh | None:
    """Bring ``name``'s object vectors up to date (module docstring); None when it neither has them nor
    wants them. ``wanted``: True asks for them, False never stores them, None: when it has them, or when it
    is ``new`` (just built from scratch) and its kind holds photos of several objects."""
    if wanted is False:
        return None
    try:
        store: ObjectStore | None = load_objects(config, name)
    except IndexMissingError:
        store = None
    manifest = read_manifest(config.indexes_dir, name)  # the manifest alone: the table is not needed here
    if store is None and not wanted and (not new or (manifest.kind or "folder") not in OBJECTS_BY_DEFAULT):
        return None
    detector = detector or Detector(config.cache_dir, store.detector if store else None, threads=config.threads)
    try:
        detector.load()
    except DetectorUnavailableError as exc:
        if wanted:
            raise
        return ObjectsRefresh(note=f"no object vectors stored ({' '.join(exc.user_message().split())})")
    own = config.with_(model=manifest.model_name, weights=manifest.weights_arg or config.weights)
    if embedder is None or embedder.weights_id != manifest.weights_id:
        embedder = embedder_for(own)
    reporter = Reporter(progress)
    reporter.phase("objects")
    settings = {"max_per_photo": store.max_per_photo, "min_score": store.min_score} if store else {}
    summary = build_objects(config, name, embedder, detector, on_photo=lambda done, total: reporter.step(done, total),
                            **settings)
    return ObjectsRefresh(summary, milvus=open_collection(config, name).mirror.mirror_objects(config, name))


def prune_objects(config: Config, name: str) -> int:
    """Drop the objects of ``name``'s deleted photos from its object vectors (if it has them); how many went."""
    with collection_lock(config, name):
        try:
            store = load_objects(config, name)
        except IndexMissingError:
            return 0
        live = read_state(config, name).table.live_ids()
        keep = np.isin(store.item_ids, live)
        if keep.all():
            return 0
        store.vectors = np.asarray(store.vectors)[keep]
        store.item_ids, store.boxes, store.scores = store.item_ids[keep], store.boxes[keep], store.scores[keep]
        store.labels = [lab for lab, k in zip(store.labels, keep, strict=True) if k]
        store.done = store.done & {int(i) for i in live.tolist()}
        save_objects(config, store)
    open_collection(config, name).mirror.mirror_objects(config, name)
    return int((~keep).sum())
