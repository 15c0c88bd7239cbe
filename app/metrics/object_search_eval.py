"""Object-query hit@k on a VOC-layout folder, beside whole-photo search as the baseline.

Every annotated (not difficult) box is a query: its crop (with the same context the object store uses)
is embedded by the model, then searched

* among the **objects of the other photos** (what ``search --objects`` searches: each photo's detected
  objects, scored and capped as a build keeps them, embedded from their crops): a hit when one of the
  top k is an object whose box overlaps a true box of the query's class with IoU >= 0.5;
* among the **whole other photos** (the baseline, today's search), held to the same rule: a returned
  photo's region is the whole photo, a hit when it overlaps a true box of the query's class with
  IoU >= 0.5 (an object that fills its photo).

Both are also reported at the photo level (``*_photo_hit_at_k``): a hit when a returned object's photo,
or a returned photo, merely holds that class somewhere, wherever the result points.

The object store is made in memory by the same functions a build uses (:mod:`app.service.objects`),
from the detections the AP pass already made, so no collection needs building.
"""

from __future__ import annotations

import time

import numpy as np

from app.core.images import load_image
from app.core.nms import box_iou
from app.metrics.object_eval import AnnotatedImage
from app.service.objects import MAX_PER_PHOTO, MIN_SCORE, ObjectStore, embed_crops, object_crop, search_objects


def object_query_hits(embedder, images: list[AnnotatedImage], found_per_image: dict, *, k: int = 5,
                      max_per_photo: int = MAX_PER_PHOTO, min_score: float = MIN_SCORE) -> dict:
    """``{"queries", "object_hit_at_k", "whole_image_hit_at_k", "per_class": {class: {...}}, "objects",
    "embed_objects_s"}`` (see the module docstring)."""
    t0 = time.perf_counter()
    whole, sizes, item_ids, boxes, labels, scores, vectors = [], [], [], [], [], [], []
    queries: list[tuple[int, str, np.ndarray]] = []
    for n, image in enumerate(images):
        img = load_image(image.path)
        sizes.append((0.0, 0.0, float(img.width), float(img.height)))
        whole.append(embedder.embed_arrays(embedder.preprocess(img)[None])[0])
        kept = [o for o in found_per_image.get(image.image_id, []) if o.score >= min_score][:max_per_photo]
        vecs = embed_crops(embedder, [object_crop(img, o.box) for o in kept])
        for o, v in zip(kept, vecs, strict=True):
            item_ids.append(n)
            boxes.append(o.box)
            labels.append(o.label)
            scores.append(o.score)
            vectors.append(v)
        truth = [t for t in image.boxes if not t.difficult]
        qvecs = embed_crops(embedder, [object_crop(img, t.box) for t in truth])
        queries += [(n, t.label, q) for t, q in zip(truth, qvecs, strict=True)]
    dim = embedder.dim
    store = ObjectStore("evaluation", "", "", max_per_photo, min_score, set(range(len(images))),
                        np.asarray(item_ids, np.int64), np.asarray(boxes, np.float32).reshape(-1, 4), labels,
                        np.asarray(scores, np.float32), np.asarray(vectors, np.float32).reshape(-1, dim))
    embed_s = time.perf_counter() - t0
    whole_m = np.asarray(whole, np.float32)
    names = [str(i) for i in range(len(images))]
    keys = [f"object_hit_at_{k}", f"whole_image_hit_at_{k}", f"object_photo_hit_at_{k}",
            f"whole_image_photo_hit_at_{k}"]
    per_class: dict[str, np.ndarray] = {}
    for n, label, q in queries:
        true_boxes = [[t.box for t in images[m].boxes if t.label == label] for m in range(len(images))]
        hits = search_objects(store, q, k, paths=names, photo_labels=names, exclude_items={n})
        sims = whole_m @ q
        sims[n] = -np.inf
        photos = np.argsort(-sims, kind="stable")[:k]
        row = [any(_located(true_boxes[h.id], h.box) for h in hits),
               any(_located(true_boxes[m], sizes[m]) for m in photos),
               any(true_boxes[h.id] for h in hits), any(true_boxes[m] for m in photos)]
        per_class.setdefault(label, np.zeros(5))[:] += [1, *row]
    total = sum(per_class.values()) if per_class else np.ones(5)
    return {
        "k": k,
        "queries": len(queries),
        "objects": len(store),
        **{key: round(float(total[i + 1] / max(total[0], 1)), 4) for i, key in enumerate(keys)},
        "per_class": {c: {"queries": int(v[0]), **{key: round(float(v[i + 1] / v[0]), 4) for i, key in enumerate(keys)}}
                      for c, v in sorted(per_class.items())},
        "embed_seconds": round(embed_s, 1),
    }


def _located(true_boxes: list, box) -> bool:
    """``box`` overlaps one of ``true_boxes`` with IoU >= 0.5."""
    return bool(true_boxes) and box_iou(np.array([box]), np.array(true_boxes)).max() >= 0.5
