"""Speed and cost of objects: ``python scripts/bench.py --objects --data DIR`` (``bench --objects``).

On ``images`` photos of a folder (any folder of photos, e.g. the annotated set of
``scripts/make_object_set.py``), in one process:

* ``detect_ms_p50`` / ``_p90``: the detector on a decoded photo (resize, normalise, ONNX Runtime, decode,
  NMS), and ``detect_with_decode_ms_p50`` from the file;
* ``query_ms_p50`` vs ``query_with_objects_ms_p50``: a new query image searched as the page does
  (``search_new_image`` with its copy), and the same plus what the page's second event does (the
  detection of its objects from the copy's pixels, ``service.objects.detect``, and the copy with their boxes
  drawn, ``service.objects.overlay``), alternated per photo; the extra time's p50 is
  ``query_objects_extra_ms_p50`` (target: at most 60 ms);
* ``build_img_per_s`` without objects and ``build_with_objects_img_per_s`` (the same build, then its
  object vectors: detection, crops and their embedding);
* ``objects_bytes_per_photo``: the object store's files divided by the photos.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from app.config import Config
from app.core.datasets import image_files
from app.core.detect import Detector
from app.core.embed import embedder_for
from app.core.images import load_image
from app.errors import DatasetError
from app.service.build import BuildSpec, build_collection
from app.service.objects import build_objects
from app.service.search import SearchService

TARGET_EXTRA_MS = 60.0


def _p(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1) if values else float("nan")


def bench_objects(config: Config, data: str | Path, *, images: int = 100,
                  log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Every figure of the module's docstring, on the first ``images`` photos of ``data``."""
    data = Path(data)
    files = [data / f for f in image_files(data)][:images]
    if not files:

        raise DatasetError(f"No images in {data}.")
    detector = Detector(config.cache_dir, threads=config.threads).load()
    embedder = embedder_for(config).load()
    log(f"detection: {len(files)} photos")
    decoded = [load_image(f) for f in files]
    result: dict[str, Any] = {"photos": len(files), "detector": detector.spec.name, "model": embedder.model.name,
                              "engine": embedder.engine, **_detection(detector, files, decoded)}
    with tempfile.TemporaryDirectory(prefix="bench-objects-") as tmp:
        result.update(_build_and_query(config, Path(tmp), embedder, detector, files, decoded, log))
    result["load_average_1m"] = round(os.getloadavg()[0], 2)  # other work on the machine, for reading the times
    return result


def _detection(detector: Detector, files: list[Path], decoded: list) -> dict[str, Any]:
    detector.detect(decoded[0])  # warm-up
    detect_ms, detect_file_ms, found = [], [], 0
    for f, img in zip(files, decoded, strict=True):
        t = time.perf_counter()
        found += len(detector.detect(img))
        detect_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        detector.detect(f)
        detect_file_ms.append((time.perf_counter() - t) * 1000)
    return {"objects_per_photo": round(found / len(files), 2), "detect_ms_p50": _p(detect_ms, 50),
            "detect_ms_p90": _p(detect_ms, 90), "detect_with_decode_ms_p50": _p(detect_file_ms, 50)}


def _build_and_query(config: Config, root: Path, embedder, detector: Detector, files: list[Path], decoded: list,
                     log: Callable[[str], None]) -> dict[str, Any]:
    """Build a collection of ``files`` in ``root``, then its objects; then queries with and without."""

    photos = root / "photos"
    photos.mkdir()
    for i, f in enumerate(files):
        shutil.copy(f, photos / f"{i:05d}{f.suffix.lower() or '.jpg'}")
    cfg = config.with_(indexes_dir=root / "idx", features_dir=root / "feat")
    log(f"build: {len(files)} photos without objects")
    t = time.perf_counter()
    build_collection(cfg, BuildSpec(kind="folder", data=photos, name="bench-objects", factory="Flat"),
                     embedder=embedder, progress_bar=False)
    build_s = time.perf_counter() - t
    log("build: their objects")
    t = time.perf_counter()
    summary = build_objects(cfg, "bench-objects", embedder, detector)
    objects_s = time.perf_counter() - t
    store_bytes = sum(p.stat().st_size for p in cfg.features_dir.glob("bench-objects.objects.*"))
    log("queries: with and without objects, alternated")
    service = SearchService(cfg, embedder=embedder)
    # the service's own detector (as the app's: one intra-op thread unless --threads), from the same cache
    copies = root / "copies"  # the page's copies: the app's path (the objects come from the copy's pixels)
    plain, with_objects = [], []
    for img in decoded:
        service.forget_query_vectors()
        t = time.perf_counter()
        service.search_new_image(img, "bench-objects", 5, copy_dir=copies)
        plain.append((time.perf_counter() - t) * 1000)
        service.forget_query_vectors()
        t = time.perf_counter()
        key = service.search_new_image(img, "bench-objects", 5, copy_dir=copies).image.key
        found = service.objects.detect(key)  # what the page's second event does: detect, draw the boxes
        service.objects.overlay(key, None, found, copies)
        with_objects.append((time.perf_counter() - t) * 1000)
    extra = _p([b - a for a, b in zip(plain, with_objects, strict=True)], 50)
    return {
        "query_ms_p50": _p(plain, 50), "query_with_objects_ms_p50": _p(with_objects, 50),
        "query_objects_extra_ms_p50": extra, "query_objects_extra_target_ms": TARGET_EXTRA_MS,
        "query_objects_extra_pass": bool(extra <= TARGET_EXTRA_MS),
        "build_img_per_s": round(len(files) / build_s, 2),
        "build_with_objects_img_per_s": round(len(files) / (build_s + objects_s), 2),
        "objects_stored": summary.objects, "objects_bytes_per_photo": round(store_bytes / len(files)),
        "whole_image_bytes_per_photo": embedder.dim * 4,
    }


def format_bench_objects(r: dict[str, Any]) -> str:
    verdict = "PASS" if r["query_objects_extra_pass"] else "FAIL"
    return "\n".join([
        f"objects ({r['detector']}, {r['model']} {r['engine']}, {r['photos']} photos, "
        f"{r['objects_per_photo']} objects/photo kept at the display threshold)",
        f"  detection: {r['detect_ms_p50']} ms p50, {r['detect_ms_p90']} ms p90 per decoded photo; "
        f"{r['detect_with_decode_ms_p50']} ms p50 from the file",
        f"  query: {r['query_ms_p50']} ms p50, with objects {r['query_with_objects_ms_p50']} ms p50: "
        f"+{r['query_objects_extra_ms_p50']} ms (target <= {r['query_objects_extra_target_ms']:.0f} ms: {verdict})",
        f"  build: {r['build_img_per_s']} img/s without objects, {r['build_with_objects_img_per_s']} img/s with",
        f"  index: +{r['objects_bytes_per_photo']} bytes per photo for objects "
        f"({r['objects_stored']} objects; a whole-image vector is {r['whole_image_bytes_per_photo']} bytes)",
        f"  load average at the end: {r['load_average_1m']} (times on a busy machine are longer)",
    ])
