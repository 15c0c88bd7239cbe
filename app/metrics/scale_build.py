"""Writing the scale benchmark's synthetic collection the way a full build does after embedding
(:func:`app.service.build.make_index`, the store's commit, DBA), timed stage by stage; and its text table."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from app.config import Config
from app.core.datasets import Dataset
from app.metrics.scale_data import SourceVectors, SuppliedEmbedder, synthetic_table


def write_collection(cfg: Config, name: str, source: SourceVectors, vectors: np.ndarray, image_root: Path, *,
                     dba_on: bool = True, factory: str | None = None, nprobe: int | None = None) -> dict[str, Any]:
    """Build the collection ``name`` of ``vectors`` in ``cfg``'s folders: the index chosen and trained as a
    build chooses it (``factory``: fixed instead of tuned), committed by the store, DBA computed when
    ``dba_on``. Returns the stage times and the index's figures."""
    from app.service import dba
    from app.service.build import BuildSpec, make_index, manifest_fields
    from app.service.collection_store import open_collection

    n = len(vectors)
    image_root.mkdir(parents=True, exist_ok=True)
    table = synthetic_table(source, n, name, image_root)
    spec = BuildSpec(kind="folder", data=image_root, name=name, factory=factory, nprobe=nprobe, dba=dba_on)
    t = time.perf_counter()
    index, chosen, tuning = make_index(np.asarray(vectors, dtype=np.float32), spec)
    build_s = time.perf_counter() - t
    dataset = Dataset("folder", image_root, image_root, ())
    fields = {**manifest_fields(spec, SuppliedEmbedder.for_source(source), dataset, table, chosen, tuning),
              "trained_count": n, "updates_since_training": 0}
    store = open_collection(cfg, name)
    t = time.perf_counter()
    with store.lock():
        manifest = store.commit(fields, table, vectors=vectors, index=index, generation=0)
        commit_s = time.perf_counter() - t
        t = time.perf_counter()
        if dba_on:
            dba.refresh(cfg.features_dir, name, vectors, table.live_mask(), create=True,
                        labels=dba.whitening_labels(table.kind, table.labels))  # as app.service.build does
        dba_s = time.perf_counter() - t
    picked = tuning.get("chosen") or {}
    features = Path(cfg.features_dir)
    return {
        "build_s": round(build_s, 2),
        "tune_s": tuning.get("seconds"),
        "train_s": picked.get("train_s"),
        "commit_s": round(commit_s, 2),
        "dba_s": round(dba_s, 2) if dba_on else None,
        "index_factory": manifest.factory,
        "index_nprobe": manifest.nprobe,
        "index_k_factor": manifest.k_factor,
        "index_target_met": tuning.get("target_met"),
        "index_tuning_chosen": picked or None,
        "index_bytes": manifest.index_bytes,
        "index_bytes_per_vector": round(manifest.index_bytes / n, 1) if manifest.index_bytes else None,
        "table_bytes": (features / manifest.table).stat().st_size,
        "vectors_bytes": (features / manifest.features).stat().st_size,
    }


def format_table(results: Sequence[dict[str, Any]], rows: Sequence[tuple[str, str]]) -> str:
    """One line per figure (``rows``: key, label), one column per N."""
    header = ["N"] + [f"{r['n']:,}" for r in results]
    body = [[label] + [_cell(r.get(key)) for r in results] for key, label in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(line))
             for line in [header, *body]]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1 else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
