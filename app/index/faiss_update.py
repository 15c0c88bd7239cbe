"""Changing a built faiss index in place, and the rule that says when to train it again instead.

**In place.** Ids are the collection's stable row ids (:mod:`app.core.feature_table`): new items get
the next ids, deleted ones leave holes. Every index kind the builds make can follow that:

* IVF indexes (``IVF..,PQ..``, with or without a ``PCAR`` pre-transform) store ids:
  ``add_with_ids`` and ``remove_ids`` work as they are;
* refined indexes (``...,Refine(SQ8)``, ``...,RFlat``: an ``IndexRefine``) re-rank with codes stored
  by position, so their ids must be positions. New rows are appended to both stages (the refine
  codes at position = id), and a removed id leaves the IVF base only: its refine codes stay as an
  unreachable tombstone, so every other position keeps its meaning;
* an ``IndexIDMap2`` (what a rebuild wraps a flat index in once there are holes) stores ids too.

A flat index without an id map numbers its rows itself: it can only append the next ids, and a
removal raises :class:`~app.errors.UnsupportedOperationError` (the caller re-adds instead).

**When to retrain** (:func:`retrain_decision`). IVF centroids, PQ codebooks and the PCA are fitted to
the vectors of the last training; added vectors from elsewhere in the space are coded with them, and
recall drifts. Counting updates = vectors added + vectors removed since the last training:

* up to :data:`CHECK_FRACTION` (2%) of the trained size: update in place, nothing measured;
* above :data:`RETRAIN_FRACTION` (50%): retrain (most of what it was fitted to is gone or new);
* in between: measure recall@5 against exact search on a seeded sample of up to
  :data:`CHECK_QUERIES` live items (leave-one-out, ~0.1 s for 10k items) and retrain when it is below
  the collection's target plus the tuner's margin (0.95 + 0.01 by default: a 200-query estimate is
  about +-0.015).

Why measure rather than count: on real EfficientNet-Lite0 features of 1,000 Caltech101 images, the
tuned ``PCAR448,IVF32,PQ28np,Refine(SQ8)`` holds recall@5 0.975 on the vectors it was trained on, but
10% churn (100 removed, 100 new photos of the same categories) already takes it to 0.871: PQ
codebooks fitted to a small collection code new vectors worse than the ones they were fitted to.
A larger collection drifts more slowly; the measurement tells them apart.

Retraining trains the same configuration on the live vectors and adds them with their ids
(:func:`fill_index`); the measured recall after churn is in README ("Incremental builds").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from app.errors import IndexMismatchError, UnsupportedOperationError

CHECK_FRACTION = 0.02
RETRAIN_FRACTION = 0.50
CHECK_QUERIES = 200


def _down(index: Any) -> Any:
    import faiss

    return faiss.downcast_index(index)


def _refine_inside(index: Any) -> tuple[Any, Any]:
    """(pre-transform or None, IndexRefine or None) of ``index``."""
    import faiss

    idx = _down(index)
    if isinstance(idx, faiss.IndexPreTransform):
        inner = _down(idx.index)
        return idx, inner if isinstance(inner, faiss.IndexRefine) else None
    return None, idx if isinstance(idx, faiss.IndexRefine) else None


def _stores_ids(index: Any) -> bool:
    import faiss

    idx = _down(index)
    if isinstance(idx, faiss.IndexPreTransform):
        idx = _down(idx.index)
    return isinstance(idx, (faiss.IndexIVF, faiss.IndexIDMap, faiss.IndexIDMap2))


def can_update(index: Any) -> bool:
    """Whether ``index`` can add any new ids and remove ids in place (IVF, refined IVF, an id map)."""
    pre, refine = _refine_inside(index)
    if refine is not None:
        return _stores_ids(refine.base_index)
    return _stores_ids(index)


def live_count(index: Any) -> int:
    """How many vectors a search can return (a refined index's tombstoned refine codes not counted)."""
    _, refine = _refine_inside(index)
    return int(refine.base_index.ntotal if refine is not None else index.ntotal)


def next_position(index: Any) -> int:
    """The id the next appended row gets in an index that numbers its rows (refine codes, a flat index)."""
    _, refine = _refine_inside(index)
    return int(refine.refine_index.ntotal if refine is not None else index.ntotal)


def add_rows(index: Any, vectors: np.ndarray, ids: np.ndarray, *, name: str = "the") -> None:
    """Add ``vectors`` under ``ids`` (see the module docstring for what each index kind allows)."""
    x = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if len(ids) == 0:
        return
    pre, refine = _refine_inside(index)
    if refine is not None and _stores_ids(refine.base_index):
        xr = x
        if pre is not None:
            for i in range(pre.chain.size()):
                xr = np.ascontiguousarray(pre.chain.at(i).apply(xr), dtype=np.float32)
        _append_refined(refine, xr, ids, name)
        if pre is not None:
            pre.ntotal = refine.ntotal
        return
    start = next_position(index)
    if np.array_equal(ids, np.arange(start, start + len(ids))) and not _stores_ids(index):
        index.add(x)  # faiss numbers added rows from ntotal
        return
    if not _stores_ids(index):
        raise UnsupportedOperationError(
            f"The {name} index ({_kind(index)}) numbers its rows itself: it can only add ids "
            f"{start}..{start + len(ids) - 1}.")
    index.add_with_ids(x, ids)


def _append_refined(refine: Any, x: np.ndarray, ids: np.ndarray, name: str) -> None:
    """New rows of a refined index: refine codes at position = id (a gap is padded), ids into the base."""
    start = int(refine.refine_index.ntotal)
    if ids[0] < start or not np.array_equal(ids, np.arange(ids[0], ids[0] + len(ids))):
        raise UnsupportedOperationError(
            f"The {name} index (refined) stores re-ranking codes by position: it can only append ids "
            f"{start} and up, in order, not {ids[0]}..{ids[-1]}.")
    if ids[0] > start:  # rows that never reached the index (skipped): unreachable padding codes
        refine.refine_index.add(np.zeros((int(ids[0]) - start, x.shape[1]), dtype=np.float32))
    refine.base_index.add_with_ids(x, ids)
    refine.refine_index.add(x)
    refine.ntotal = refine.refine_index.ntotal


def remove_rows(index: Any, ids: np.ndarray, *, name: str = "the") -> int:
    """Remove the vectors stored under ``ids``; returns how many were there."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if len(ids) == 0:
        return 0
    _, refine = _refine_inside(index)
    target = refine.base_index if refine is not None else index
    if not _stores_ids(target):
        raise UnsupportedOperationError(
            f"The {name} index ({_kind(index)}) cannot remove vectors by id.",
            hint="Rebuild the collection without them, or build it with an IVF factory.")
    return int(target.remove_ids(ids))


def catch_up(index: Any, vectors: np.ndarray, live_mask: np.ndarray, rows_in: int, *, name: str = "the") -> int:
    """Bring an index file that holds the table's first ``rows_in`` rows (as they were when it was written)
    up to the table: the rows added since go in, every deleted id comes out (``live_mask``: the table's
    valid rows now). Returns the rows added. A commit leaves the index file as it is while this stays small
    (:mod:`app.service.commit`)."""
    rows = len(live_mask)
    added = 0
    if rows_in < rows:
        new = np.arange(rows_in, rows, dtype=np.int64)
        add_rows(index, np.asarray(vectors[new], dtype=np.float32), new, name=name)
        added = len(new)
    if live_count(index) != int(live_mask.sum()):
        remove_rows(index, np.flatnonzero(~live_mask).astype(np.int64), name=name)
    if live_count(index) != int(live_mask.sum()):
        raise IndexMismatchError(f"The {name} index holds {live_count(index)} vectors after catching up with its "
                                 f"table, which has {int(live_mask.sum())} valid rows.")
    return added


def fill_index(index: Any, vectors: np.ndarray, live_ids: np.ndarray) -> Any:
    """A trained, empty ``index`` holding ``vectors[live_ids]`` under ``live_ids`` (``vectors``: every
    row, deleted ones included). Returns the index, wrapped in an ``IndexIDMap2`` when it is flat and
    there are holes."""
    import faiss

    live_ids = np.asarray(live_ids, dtype=np.int64)
    n = len(vectors)
    pre, refine = _refine_inside(index)
    if len(live_ids) == n:  # no holes: rows in order, every kind can
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return index
    if refine is not None and _stores_ids(refine.base_index):
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))  # every row gets its position...
        dead = np.setdiff1d(np.arange(n, dtype=np.int64), live_ids)
        refine.base_index.remove_ids(dead)  # ...and the deleted ones leave the base
        return index
    if not _stores_ids(index):
        index = faiss.IndexIDMap2(index)
    index.add_with_ids(np.ascontiguousarray(vectors[live_ids], dtype=np.float32), live_ids)
    return index


def _kind(index: Any) -> str:
    return type(_down(index)).__name__


# -- when to retrain ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    reason: str
    measured_recall: float | None = None


def retrain_decision(trained_count: int, updates: int, measure: Callable[[], float], *,
                     target: float = 0.95, margin: float = 0.01) -> RetrainDecision:
    """Whether an index trained on ``trained_count`` vectors, ``updates`` adds + removes ago, is trained
    again (see the module docstring). ``measure()`` gives the index's recall@5 now (called only when
    the rule needs it)."""
    trained = max(1, int(trained_count))
    share = updates / trained
    if share <= CHECK_FRACTION:
        return RetrainDecision(False, f"{updates} updates since training ({share:.0%} of {trained}): in place")
    if share > RETRAIN_FRACTION:
        return RetrainDecision(True, f"{updates} updates since training ({share:.0%} of {trained} > "
                                     f"{RETRAIN_FRACTION:.0%})")
    recall = float(measure())
    need = min(1.0, target + margin)
    if recall < need:
        return RetrainDecision(True, f"recall@5 {recall:.3f} < {need:.2f} after {updates} updates", recall)
    return RetrainDecision(False, f"recall@5 {recall:.3f} >= {need:.2f} after {updates} updates: in place", recall)


def sample_recall(search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]], vectors: np.ndarray,
                  live_ids: np.ndarray, *, k: int = 5, queries: int = CHECK_QUERIES, seed: int = 0) -> float:
    """Recall@k of ``search`` against exact search over ``vectors[live_ids]``, leave-one-out, on a seeded
    sample of up to ``queries`` live items."""
    live_ids = np.asarray(live_ids, dtype=np.int64)
    if len(live_ids) <= k + 1:
        return 1.0
    rng = np.random.default_rng(seed)
    q_ids = rng.choice(live_ids, size=min(queries, len(live_ids)), replace=False)
    live = np.asarray(vectors[live_ids], dtype=np.float32)
    q = np.asarray(vectors[q_ids], dtype=np.float32)
    sims = q @ live.T
    sims[np.arange(len(q_ids)), np.searchsorted(live_ids, q_ids)] = -np.inf  # not itself
    truth = live_ids[np.argsort(-sims, axis=1, kind="stable")[:, :k]]
    _, found = search(q, k + 1)
    hits = 0
    for row, qid in enumerate(q_ids):
        got = [int(i) for i in found[row] if i >= 0 and int(i) != int(qid)][:k]
        hits += len(set(got) & set(truth[row].tolist()))
    return hits / float(truth.size)
