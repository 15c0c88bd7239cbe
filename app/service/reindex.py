"""Keeping a collection's faiss index in step with its table after a change: in place, or trained again.

:func:`update_index` applies the removed and the new ids to the current index in place
(:mod:`app.index.faiss_update`), then asks :func:`~app.index.faiss_update.retrain_decision` whether
the drift since the last training calls for training again. Retraining uses the configuration the
manifest records; a tuned collection whose size has moved past :data:`RETUNE_FACTOR` times the size
it was trained at is tuned again (a new nlist, PCA size...). The rule's recall is measured as the searcher
searches: the index's top R (the manifest's ``tuning.rescore_candidates``) re-scored exactly from the
stored vectors. Retraining trains on a seeded sample (:func:`~app.index.tune.train_size`). Nothing is written here: the caller
commits the returned index (:mod:`app.service.commit`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.core.manifest import Manifest
from app.errors import UnsupportedOperationError
from app.files.layout import index_name
from app.index.faiss_index import IndexConfig, search_one_thread, set_search_params, train_index
from app.index.faiss_store import index_config, read_verified_index
from app.index.faiss_update import (
    RetrainDecision,
    catch_up,
    fill_index,
    live_count,
    retrain_decision,
    sample_recall,
)
from app.index.rescore import rescored_search, tuned_rescore
from app.index.tune import DEFAULT_TARGET_RECALL, train_size
from app.index.tune_large import choose_index

RETUNE_FACTOR = 2.0


@dataclass
class IndexUpdate:
    index: Any
    fields: dict[str, Any]  # manifest fields that change (trained_count, updates, factory, tuning...)
    decision: RetrainDecision


def load_current_index(indexes_dir: Path, name: str, manifest: Manifest) -> Any:
    path = Path(indexes_dir) / (manifest.index_file or index_name(name))
    index = read_verified_index(path, manifest, name)
    set_search_params(index, index_config(manifest))
    return index


def target_recall(manifest: Manifest) -> float:
    return float(manifest.tuning.get("target_recall_at_5", DEFAULT_TARGET_RECALL))


def update_index(indexes_dir: Path, manifest: Manifest, vectors: np.ndarray, live_ids: np.ndarray,
                 retired: np.ndarray, new_ids: np.ndarray, *, force_retrain: bool = False) -> IndexUpdate:
    """The index of ``manifest`` with ``retired`` removed and rows ``new_ids`` of ``vectors`` added.

    ``vectors`` holds every row (deleted ones included), ``live_ids`` the valid ones after the change.
    """
    name = manifest.name
    updates = manifest.updates_since_training + len(retired) + len(new_ids)
    trained = manifest.trained_count if manifest.trained_count is not None else manifest.count
    index = load_current_index(indexes_dir, name, manifest)
    reason = ""
    live_mask = np.zeros(len(vectors), dtype=bool)
    live_mask[live_ids] = True
    # the index file holds the rows up to index_rows (older manifests: every row before this change); the
    # rows added since, these new ones included, go in, and every deleted id, these retired ones included, out
    rows_in = manifest.index_rows if manifest.index_rows is not None else len(vectors) - len(new_ids)
    try:
        catch_up(index, vectors, live_mask, rows_in, name=name)
    except UnsupportedOperationError as exc:
        reason = f"the index cannot change in place ({exc})"
    if len(live_ids) < 2 and not reason:  # nothing to train on: the in-place result stands
        return IndexUpdate(index, {"updates_since_training": updates},
                           RetrainDecision(False, f"{len(live_ids)} valid items: nothing to train on"))
    if reason or force_retrain:
        decision = RetrainDecision(True, reason or "asked for")
    else:
        decision = retrain_decision(
            trained, updates, lambda: sample_recall(_recall_search(index, vectors, manifest), vectors, live_ids),
            target=target_recall(manifest))
    if not decision.retrain:
        return IndexUpdate(index, {"updates_since_training": updates}, decision)
    index, fields = retrained(manifest, vectors, live_ids)
    return IndexUpdate(index, fields, decision)


def retrained(manifest: Manifest, vectors: np.ndarray, live_ids: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """A new index over the valid rows: the same configuration trained again; tuned again instead when the
    collection has grown or shrunk past :data:`RETUNE_FACTOR` times its trained size, or when the
    retrained configuration still misses the target (a tuned collection whose content has moved on)."""
    trained = manifest.trained_count if manifest.trained_count is not None else manifest.count
    tuned = bool(manifest.tuning) and not manifest.tuning.get("fixed") and len(live_ids) >= 2
    ratio = len(live_ids) / max(1, trained)
    if tuned and not (1 / RETUNE_FACTOR <= ratio <= RETUNE_FACTOR):
        return _retuned(manifest, vectors, live_ids)
    fields: dict[str, Any] = {"trained_count": len(live_ids), "updates_since_training": 0}
    chosen = index_config(manifest)
    live = np.ascontiguousarray(vectors[live_ids], dtype=np.float32)
    sample = np.sort(np.random.default_rng(0).choice(len(live), size=train_size(len(live)), replace=False))
    try:
        index = train_index(live, chosen, train_sample=live[sample])
    except RuntimeError:  # too few vectors for its nlist or codebooks: the exact index
        chosen = IndexConfig("Flat", 1, 1)
        index = train_index(live, chosen)
        fields.update(factory="Flat", nprobe=1, k_factor=1)
    index = fill_index(index, vectors, live_ids)
    set_search_params(index, chosen)
    if tuned and sample_recall(_recall_search(index, vectors, manifest), vectors, live_ids) < target_recall(manifest):
        return _retuned(manifest, vectors, live_ids)
    return index, fields


def _retuned(manifest: Manifest, vectors: np.ndarray, live_ids: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """The configuration chosen again by the tuner for the valid rows, holding them under their own ids."""
    live = np.ascontiguousarray(vectors[live_ids], dtype=np.float32)
    index, report = choose_index(live, target_recall=target_recall(manifest),
                                 max_ms=float(manifest.tuning.get("max_ms_per_query", 1.0)))
    assert report.chosen is not None
    chosen = report.chosen.config
    index.reset()  # keeps the training; the rows go back in under their own ids
    index = fill_index(index, vectors, live_ids)
    set_search_params(index, chosen)
    return index, {"trained_count": len(live_ids), "updates_since_training": 0, "factory": chosen.factory,
                   "nprobe": chosen.nprobe, "k_factor": chosen.k_factor, "tuning": report.to_json()}


def _recall_search(index: Any, vectors: np.ndarray, manifest: Manifest):
    """How the retrain rule measures recall: as the searcher searches, the index's top R re-scored exactly
    from the stored vectors when the manifest records R (the index alone for an older manifest)."""
    r = tuned_rescore(manifest.tuning)
    return (lambda q, k: _search(index, q, k)) if r is None else rescored_search(index, vectors, r, _search)


def _search(index: Any, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    kk = max(1, min(k, live_count(index)))
    return index.search(q, kk) if len(q) > 1 else search_one_thread(index, q, kk)
