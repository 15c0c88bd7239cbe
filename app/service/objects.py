"""Objects inside a collection's photos: one vector per detected object, beside the whole-photo vectors.

Each live photo of a built collection is run through the detector (:mod:`app.core.detect`); each object
kept (score >= ``min_score``, at most ``max_per_photo``, best first) is cropped with a little context
(:func:`object_crop`) and embedded by the collection's own model. The result is a part file of its own
beside the collection's features, so it never touches the collection's committed files:

* ``features/NAME.objects.json``: the record (detector, weights id, settings), which photos were looked
  at (``done``), and per object its photo id, box (in the photo's pixels), label and score;
* ``features/NAME.objects.<sha8>.npy``: the objects' vectors, named by their checksum, which the record
  names and checks. The vectors file is written first and the record replaced last, so a crash leaves
  the previous pair.

Building again is incremental: photos already looked at keep their objects, new photos are detected and
embedded, and objects of photos deleted from the collection are dropped (a search also skips them, so a
``delete`` is honoured before the next build). Search is exact cosine over the object vectors.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from app.config import Config
from app.core.detect import Detector
from app.core.embed import Embedder
from app.core.images import load_image
from app.errors import AppError, IndexMissingError
from app.files.atomic import atomic_writer, write_json
from app.files.digest import file_sha256
from app.service.commit import collection_lock, files_of, read_state

FORMAT = 1
MAX_PER_PHOTO = 8
MIN_SCORE = 0.35
CONTEXT = 0.1  # the crop reaches this fraction of the box's longer side beyond it
BATCH = 32


def object_crop(img: Image.Image, box, context: float = CONTEXT) -> Image.Image:
    """A square crop around ``box`` (x1, y1, x2, y2), its side the box's longer side plus ``context``
    each way, moved inside the photo where it can be (so the model's centre crop keeps the object)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1) * (1 + 2 * context)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left = min(max(cx - side / 2, 0.0), max(img.width - side, 0.0))
    top = min(max(cy - side / 2, 0.0), max(img.height - side, 0.0))
    right, bottom = min(left + side, img.width), min(top + side, img.height)
    return img.crop((round(left), round(top), max(round(right), round(left) + 1), max(round(bottom), round(top) + 1)))


def embed_crops(embedder: Embedder, crops: list[Image.Image]) -> np.ndarray:
    if not crops:
        return np.zeros((0, embedder.dim), np.float32)
    out = [embedder.embed_arrays(np.stack([embedder.preprocess(c) for c in crops[i:i + BATCH]]))
           for i in range(0, len(crops), BATCH)]
    return np.concatenate(out).astype(np.float32)


@dataclass
class ObjectStore:
    """A collection's objects: ``item_ids[i]`` is the photo of object ``i``, ``boxes[i]`` its box."""

    collection: str
    detector: str
    weights_id: str
    max_per_photo: int
    min_score: float
    done: set[int]
    item_ids: np.ndarray  # (n,) int64
    boxes: np.ndarray  # (n, 4) float32
    labels: list[str]
    scores: np.ndarray  # (n,) float32
    vectors: np.ndarray  # (n, dim) float32

    def __len__(self) -> int:
        return len(self.item_ids)

    def settings_match(self, detector: str, weights_id: str, max_per_photo: int, min_score: float) -> bool:
        return (self.detector, self.weights_id, self.max_per_photo, self.min_score) == (
            detector, weights_id, max_per_photo, min_score)


def record_path(config: Config, name: str) -> Path:
    return files_of(config, name).objects_record


def load_objects(config: Config, name: str) -> ObjectStore:
    """The collection's object store. Raises IndexMissingError when it has none (or it is unusable)."""
    path = record_path(config, name)
    hint = f"Build it with: python -m app.cli build ... --name {name} --objects"
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
        vectors_path = config.features_dir / rec["vectors_file"]
        if file_sha256(vectors_path) != rec["vectors_sha256"] or rec.get("format") != FORMAT:
            raise ValueError("its vectors do not match their checksum")
        vectors = np.load(vectors_path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise IndexMissingError(f"{name} has no object vectors.", hint=hint) from None
    except (OSError, ValueError, KeyError) as exc:
        raise IndexMissingError(f"{name}'s object vectors are unusable ({exc}).", hint=hint) from None
    return ObjectStore(name, rec["detector"], rec["weights_id"], rec["max_per_photo"], rec["min_score"],
                       set(rec["done"]), np.asarray(rec["item_ids"], np.int64),
                       np.asarray(rec["boxes"], np.float32).reshape(-1, 4), list(rec["labels"]),
                       np.asarray(rec["scores"], np.float32), vectors)


def save_objects(config: Config, store: ObjectStore) -> Path:
    """Vectors first (named by checksum), then the record; the old vectors file is removed last."""
    name = store.collection
    old = None
    try:
        old = json.loads(record_path(config, name).read_text(encoding="utf-8")).get("vectors_file")
    except (OSError, ValueError):
        pass
    files = files_of(config, name)
    tmp = files.objects_temp()
    with atomic_writer(tmp) as fh:
        np.save(fh, np.ascontiguousarray(store.vectors, np.float32), allow_pickle=False)
    digest = file_sha256(tmp)
    vectors_file = files.objects_vectors(digest).name
    tmp.replace(config.features_dir / vectors_file)
    write_json(record_path(config, name), {
        "format": FORMAT, "collection": name, "detector": store.detector, "weights_id": store.weights_id,
        "max_per_photo": store.max_per_photo, "min_score": store.min_score, "count": len(store),
        "vectors_file": vectors_file, "vectors_sha256": digest, "done": sorted(store.done),
        "item_ids": store.item_ids.tolist(), "boxes": np.round(store.boxes, 1).tolist(), "labels": store.labels,
        "scores": np.round(store.scores, 4).tolist(),
    })
    if old and old != vectors_file:
        (config.features_dir / old).unlink(missing_ok=True)
    return record_path(config, name)


@dataclass(frozen=True)
class ObjectsSummary:
    collection: str
    photos: int  # live photos
    detected: int  # photos looked at by this run
    objects: int  # objects stored
    seconds: float

    def line(self) -> str:
        return (f"objects: {self.objects} in {self.photos} photos ({self.detected} photos detected now, "
                f"{self.seconds:.1f} s)")


def build_objects(config: Config, name: str, embedder: Embedder, detector: Detector, *,
                  max_per_photo: int = MAX_PER_PHOTO, min_score: float = MIN_SCORE,
                  on_photo: Callable[[int, int], None] | None = None) -> ObjectsSummary:
    """Detect and embed the objects of ``name``'s photos not looked at yet; drop deleted photos' objects."""
    t0 = time.perf_counter()
    with collection_lock(config, name):
        state = read_state(config, name)
        live = {int(i) for i in state.table.live_ids().tolist()}
        image_root = Path(state.table.image_root)
        try:
            store = load_objects(config, name)
            if not store.settings_match(detector.spec.name, embedder.weights_id, max_per_photo, min_score):
                store = None
        except IndexMissingError:
            store = None
        keep = np.array([int(i) in live for i in store.item_ids], bool) if store else np.zeros(0, bool)
        done = (store.done & live) if store else set()
        todo = sorted(live - done)
        ids, boxes, labels, scores, vectors = [], [], [], [], []
        for n, item in enumerate(todo):
            found = _photo_objects(image_root / state.table.paths[item], detector, embedder, max_per_photo, min_score)
            for obj, vec in found:
                ids.append(item)
                boxes.append(obj.box)
                labels.append(obj.label)
                scores.append(obj.score)
                vectors.append(vec)
            done.add(item)
            if on_photo:
                on_photo(n + 1, len(todo))
        dim = embedder.dim
        new = ObjectStore(
            name, detector.spec.name, embedder.weights_id, max_per_photo, min_score, done,
            np.concatenate([store.item_ids[keep] if store else np.zeros(0, np.int64), np.asarray(ids, np.int64)]),
            np.concatenate([store.boxes[keep] if store else np.zeros((0, 4), np.float32),
                            np.asarray(boxes, np.float32).reshape(-1, 4)]),
            ([lab for lab, k in zip(store.labels, keep, strict=True) if k] if store else []) + labels,
            np.concatenate([store.scores[keep] if store else np.zeros(0, np.float32), np.asarray(scores, np.float32)]),
            np.concatenate([np.asarray(store.vectors)[keep] if store else np.zeros((0, dim), np.float32),
                            np.asarray(vectors, np.float32).reshape(-1, dim)]),
        )
        if todo or store is None or not keep.all():
            save_objects(config, new)
    return ObjectsSummary(name, len(live), len(todo), len(new), time.perf_counter() - t0)


def _photo_objects(path: Path, detector: Detector, embedder: Embedder, max_per_photo: int, min_score: float):
    """[(object, vector)] of one photo; an unreadable photo has none (the collection build reported it)."""
    try:
        img = load_image(path)
    except (AppError, OSError):
        return []
    found = detector.detect(img, score_threshold=min_score, max_objects=max_per_photo)
    vectors = embed_crops(embedder, [object_crop(img, o.box) for o in found])
    return list(zip(found, vectors, strict=True))


@dataclass(frozen=True)
class ObjectHit:
    rank: int
    id: int  # the photo's id in the collection
    path: str
    label: str  # the object's (detector's) label
    photo_label: str  # the photo's label in the collection
    score: float  # cosine similarity of the query and the object
    box: tuple[float, float, float, float]
    object_score: float  # the detector's score

    def to_json(self) -> dict:
        return {"rank": self.rank, "id": self.id, "path": self.path, "label": self.label, "score": round(self.score, 6),
                "box": [round(float(v), 1) for v in self.box], "photo_label": self.photo_label,
                "object_score": round(self.object_score, 4)}


def search_objects(store: ObjectStore, vector: np.ndarray, k: int, *, paths: list[str], photo_labels: list[str],
                   live: np.ndarray | None = None, exclude_items: set[int] = frozenset(),
                   only: np.ndarray | None = None) -> list[ObjectHit]:
    """The ``k`` objects most similar to ``vector`` (exact cosine), skipping objects of photos that are
    not ``live`` (a boolean mask over the collection's ids) or in ``exclude_items``; ``only``: the
    candidate objects (their positions, e.g. from Milvus), re-scored exactly."""
    if not len(store):
        return []
    scores = np.asarray(store.vectors, np.float32) @ np.asarray(vector, np.float32).reshape(-1)
    ok = np.ones(len(store), bool)
    if live is not None:
        ok &= live[store.item_ids]
    if exclude_items:
        ok &= ~np.isin(store.item_ids, list(exclude_items))
    if only is not None:
        ok &= np.isin(np.arange(len(store)), only)
    scores = np.where(ok, scores, -np.inf)
    top = np.argsort(-scores, kind="stable")[:k]
    return [ObjectHit(r + 1, int(store.item_ids[i]), paths[store.item_ids[i]], store.labels[i],
                      _label_text(photo_labels[store.item_ids[i]]), float(scores[i]), tuple(store.boxes[i].tolist()),
                      float(store.scores[i]))
            for r, i in enumerate(top) if np.isfinite(scores[i])]


def _label_text(label) -> str:
    return ", ".join(map(str, label)) if isinstance(label, (list, tuple)) else str(label)


def object_files(config: Config, name: str) -> list[Path]:
    """The object store's files of ``name`` (the record and its vectors), those that exist."""
    return files_of(config, name).object_files()


def rename_objects(config: Config, old: str, new: str) -> bool:
    """Carry ``old``'s object store over to ``new`` (after the collection's rename); False if it had none."""
    try:
        store = load_objects(config, old)
    except IndexMissingError:
        return False
    store.collection = new
    store.vectors = np.asarray(store.vectors)
    save_objects(config, store)  # the new name's files first, then the old ones go
    drop_objects(config, old)
    return True


def drop_objects(config: Config, name: str) -> list[Path]:
    """Remove ``name``'s object store (after the collection's drop); the files removed."""
    files = object_files(config, name)
    for path in files:
        path.unlink(missing_ok=True)
    return files
