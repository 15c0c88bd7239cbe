"""Building a collection end to end: list the images, embed them, tune and save the index.

``scripts/build_index.py`` and ``python -m app.cli build`` are thin command-line wrappers around
:func:`build_collection`, which takes what to build as one :class:`BuildSpec`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from app.config import Config
from app.core.datasets import Dataset, Item, load_dataset
from app.core.embed import Embedder, embedder_for
from app.core.features import CHUNK_SIZE, FeatureTable, extract_features, load_features
from app.core.manifest import Manifest
from app.core.quantize import CALIBRATION_IMAGES, calibration_files
from app.files.lock import exclusive_lock
from app.index.faiss_index import IndexConfig, build_index
from app.index.tune import DEFAULT_MAX_MS, DEFAULT_TARGET_RECALL, tune
from app.service.commit import commit_build, roll_forward

log = logging.getLogger(__name__)
LOCK_HINT = "Another build of it is running: wait for it to finish (or stop it), then run the command again."


@dataclass(frozen=True)
class BuildSpec:
    """What to build: the dataset (``kind`` layout in the folder ``data``), the collection name,
    the sample, and the index (a fixed ``factory``/``nprobe``, or tuned to ``target_recall`` at
    ``max_ms`` per query)."""

    kind: str  # a layout of app.core.datasets: "caltech101", "voc2012", "folder"
    data: str | Path
    name: str | None = None  # default: kind
    limit: int | None = None  # a deterministic sample of this many images
    include: tuple[str, ...] = ()  # Caltech101: folders left out by default
    factory: str | None = None  # a fixed faiss factory string instead of tuning
    nprobe: int | None = None  # with factory (default 16)
    target_recall: float = DEFAULT_TARGET_RECALL
    max_ms: float = DEFAULT_MAX_MS
    chunk_size: int = CHUNK_SIZE  # images per saved chunk of features (resumable builds)

    @property
    def collection_name(self) -> str:
        """The collection's name."""
        return self.name or self.kind


@dataclass
class BuildResult:
    name: str
    manifest: Manifest
    stats: dict[str, Any]
    skipped: list[dict[str, str]] = field(default_factory=list)


def build_collection(config: Config, spec: BuildSpec, *, embedder: Embedder | None = None,
                     progress: bool = True, on_chunk: Callable[[int], None] | None = None) -> BuildResult:
    """Build (or resume building) the collection ``spec`` describes.

    With ``spec.factory`` the index configuration is fixed; otherwise it is tuned to
    ``spec.target_recall`` (recall@5 against exact search) at ``spec.max_ms`` per query.
    ``on_chunk(chunk_no)`` is called after each saved chunk of features (tests use it to simulate a kill).
    One build of a collection at a time: another one refuses at once (:class:`~app.errors.BuildLockedError`).
    """
    name = spec.collection_name
    with exclusive_lock(Path(config.indexes_dir) / f"{name}.lock", what=f"The {name} collection", hint=LOCK_HINT):
        roll_forward(config, name)  # a build stopped after its commit: finish it first
        return _build_locked(config, spec, embedder=embedder, progress=progress, on_chunk=on_chunk)


def _build_locked(config: Config, spec: BuildSpec, *, embedder: Embedder | None,
                  progress: bool, on_chunk: Callable[[int], None] | None) -> BuildResult:
    name = spec.collection_name
    dataset = load_dataset(spec.kind, spec.data, limit=spec.limit, include=spec.include)
    embedder = embedder or embedder_for(config)
    if getattr(embedder, "wants_int8", False) and not embedder.loaded:
        # The INT8 model is calibrated on a sample of this collection (made once, then cached).
        embedder.calibrate(calibration_files(dataset.image_root, dataset.items),
                           source=f"{name}: {dataset.image_root}")
    vectors, table, stats = extract_features(
        dataset, embedder, config.features_dir, name, batch_size=config.batch_size, workers=config.workers,
        progress=progress, on_chunk=on_chunk, chunk_size=spec.chunk_size, publish=False,
    )
    t = time.perf_counter()
    index, chosen, tuning = make_index(vectors, spec)
    stats["index_seconds"] = time.perf_counter() - t
    manifest = commit_build(config, name, index, manifest_fields(spec, embedder, dataset, table, chosen, tuning))
    return BuildResult(name=name, manifest=manifest, stats=stats, skipped=table.skipped)


def quantize_for_collection(config: Config, name: str, *, images: int = CALIBRATION_IMAGES,
                            embedder: Embedder | None = None) -> dict[str, Any]:
    """Make (or find in the cache) the INT8 model of ``config``'s model and weights, calibrated on
    ``images`` images of the built collection ``name`` (any model's build: only its images are used).
    Returns what was made: model, weights id, the INT8 file and its calibration record."""
    _, table = load_features(config.features_dir, name)
    items = [Item(p, lab) for p, lab in zip(table.paths, table.labels, strict=True)]
    embedder = embedder or Embedder(config.weights, model=config.model, engine="onnx-int8", threads=config.threads,
                                    cache_dir=config.cache_dir)
    embedder.calibrate(calibration_files(table.image_root, items, images), source=f"{name}: {table.image_root}")
    embedder.load()
    return {"model": embedder.model.name, "weights_id": embedder.weights_id, "int8_model": str(embedder.int8_model),
            "calibration": embedder.int8_info}


def make_index(vectors: np.ndarray, spec: BuildSpec) -> tuple[Any, IndexConfig, dict[str, Any]]:
    """(index holding ``vectors``, its configuration, the manifest's ``tuning`` record)."""
    if spec.factory:
        chosen = IndexConfig(spec.factory, spec.nprobe or 16)
        return build_index(vectors, chosen), chosen, {"fixed": True}
    index, report = tune(vectors, target_recall=spec.target_recall, max_ms=spec.max_ms)
    assert report.chosen is not None
    return index, report.chosen.config, report.to_json()


def manifest_fields(spec: BuildSpec, embedder: Embedder, dataset: Dataset, table: FeatureTable,
                    chosen: IndexConfig, tuning: dict[str, Any]) -> dict[str, Any]:
    """The manifest fields a build records (save_index adds those it reads from the index file)."""
    name = spec.collection_name
    return {
        "collection": spec.kind,
        "model": embedder.model.name,
        "model_description": embedder.model.description,
        "weights_id": embedder.weights_id,
        "weights_arg": embedder.spec.arg(),
        "engine": embedder.engine,
        "factory": chosen.factory,
        "nprobe": chosen.nprobe,
        "k_factor": chosen.k_factor,
        "dataset_root": str(dataset.root),
        "image_root": str(dataset.image_root),
        "features": f"{name}.npy",
        "table": f"{name}.json",
        # which build of the features this index was made from (checked when loading)
        "features_fingerprint": table.fingerprint,
        "features_created": table.created,
        "limit": spec.limit,
        "include": list(spec.include),
        "skipped": len(table.skipped),
        "tuning": tuning,
        # engine onnx-int8: what its INT8 model was calibrated on (kept in Manifest.extra)
        **({"int8_calibration": embedder.int8_info} if getattr(embedder, "int8_info", None) else {}),
    }
