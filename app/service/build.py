"""Building a collection end to end: list the images, embed them, tune and save the index.

``scripts/build_index.py`` is a thin command-line wrapper around :func:`build_collection`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from app.config import Config
from app.core.datasets import load_dataset
from app.core.embed import Embedder, embedder_for
from app.core.features import CHUNK_SIZE, extract_features
from app.index.faiss_store import IndexConfig, build_index, save_index
from app.index.tune import DEFAULT_MAX_MS, DEFAULT_TARGET_RECALL, tune

log = logging.getLogger(__name__)


@dataclass
class BuildResult:
    name: str
    manifest: dict[str, Any]
    stats: dict[str, Any]
    skipped: list[dict[str, str]]


def build_collection(
    config: Config,
    *,
    kind: str,
    data: str | Path,
    name: str | None = None,
    limit: int | None = None,
    include: tuple[str, ...] = (),
    embedder: Embedder | None = None,
    factory: str | None = None,
    nprobe: int | None = None,
    target_recall: float = DEFAULT_TARGET_RECALL,
    max_ms: float = DEFAULT_MAX_MS,
    progress: bool = True,
    on_chunk: Callable[[int], None] | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> BuildResult:
    """Build (or resume building) the collection ``name`` from the folder ``data``.

    With ``factory`` the index configuration is fixed; otherwise it is tuned to
    ``target_recall`` (recall@5 against exact search) at ``max_ms`` per query.
    """
    name = name or kind
    dataset = load_dataset(kind, data, limit=limit, include=include)
    embedder = embedder or embedder_for(config)
    vectors, table, stats = extract_features(
        dataset,
        embedder,
        config.features_dir,
        name,
        batch_size=config.batch_size,
        workers=config.workers,
        progress=progress,
        on_chunk=on_chunk,
        chunk_size=chunk_size,
    )
    t = time.perf_counter()
    if factory:
        chosen = IndexConfig(factory, nprobe or 16)
        index = build_index(vectors, chosen)
        tuning: dict[str, Any] = {"fixed": True}
    else:
        index, report = tune(vectors, target_recall=target_recall, max_ms=max_ms)
        assert report.chosen is not None
        chosen = report.chosen.config
        tuning = report.to_json()
    stats["index_seconds"] = time.perf_counter() - t
    manifest = save_index(
        index,
        config.indexes_dir,
        name,
        {
            "collection": kind,
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
            "limit": limit,
            "include": list(include),
            "skipped": len(table.skipped),
            "tuning": tuning,
        },
    )
    return BuildResult(name=name, manifest=manifest, stats=stats, skipped=table.skipped)
