"""Exact re-scoring of an index's candidates: the index picks R candidates, their stored vectors rank them.

The compact index (:mod:`app.index.tune`) only has to put the true top 5 among its top R; the searcher
(:mod:`app.service.search`) then reads those R rows of the memory-mapped vectors (fancy indexing: R
rows, never the whole matrix) and orders them by their exact cosine. The tuner, the retrain rule
(:mod:`app.service.reindex`) and the searcher measure and search the same way, with the functions here.

``rescore_candidates`` in a manifest's ``tuning`` record is the tuned R; a manifest without it (built
before) falls back to ``fallback(k, n)`` (the searcher's ``candidates``).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

RESCORE_CHOICES = (20, 50, 100, 200, 400)  # R values the tuner tries, smallest first
TUNED_K = 5  # the k the tuner's R is measured at
_GATHER_FLOATS = 16_000_000  # rows gathered at once when measuring (64 MB of float32)


def tuned_rescore(tuning: Mapping[str, Any] | None) -> int | None:
    """The R a manifest's ``tuning`` record holds, or None (an older manifest, a fixed factory)."""
    r = (tuning or {}).get("rescore_candidates")
    return int(r) if isinstance(r, (int, float)) and not isinstance(r, bool) and r >= 1 else None


def candidate_count(tuning: Mapping[str, Any] | None, k: int, n: int,
                    fallback: Callable[[int, int], int]) -> int:
    """How many candidates to fetch and re-score for ``k`` hits among ``n`` items: the tuned R (measured
    at k = 5; for more hits never fewer than ``fallback(k, n)``, which grows with k), else ``fallback(k, n)``."""
    r = tuned_rescore(tuning)
    if r is None:
        return fallback(k, n)
    return max(1, min(n, r if k <= TUNED_K else max(r, fallback(k, n))))


def rescore(vectors: Any, query: np.ndarray, ids: Sequence[int], k: int) -> tuple[list[int], np.ndarray]:
    """(ids, exact cosines) of the top ``k`` of ``ids`` for ``query``; reads only the rows ``ids``."""
    ids = [int(i) for i in ids]
    if not ids:
        return [], np.zeros(0, np.float32)
    scores = np.asarray(vectors[ids], dtype=np.float32) @ np.asarray(query, dtype=np.float32)
    order = np.argsort(-scores, kind="stable")[:k]
    return [ids[j] for j in order], scores[order]


def rescored_search(index: Any, vectors: Any, r: int,
                    raw_search: Callable[[Any, np.ndarray, int], tuple[np.ndarray, np.ndarray]] | None = None,
                    ) -> Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]:
    """A ``search(queries, k) -> (scores, ids)`` that fetches ``max(r, k)`` candidates from ``index`` and
    re-scores them from ``vectors`` (ids padded with -1 where fewer exist). ``raw_search(index, q, n)``
    defaults to ``index.search``."""

    def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        n_cand = max(1, min(max(r, k), int(index.ntotal) or 1))
        _, found = raw_search(index, q, n_cand) if raw_search else index.search(q, n_cand)
        ids_out = np.full((len(q), k), -1, dtype=np.int64)
        scores_out = np.full((len(q), k), -np.inf, dtype=np.float32)
        for row in range(len(q)):
            ids, scores = rescore(vectors, q[row], [i for i in found[row] if i >= 0], k)
            ids_out[row, : len(ids)], scores_out[row, : len(ids)] = ids, scores
        return scores_out, ids_out

    return search


def recall_by_r(db: np.ndarray, queries: np.ndarray, found: np.ndarray, truth: np.ndarray,
                rs: Sequence[int]) -> dict[int, float]:
    """recall@k (k = ``truth``'s width) after exact re-scoring of the first R of ``found``, for each R in
    ``rs`` (``found``: the index's ids for ``queries``, best first, -1 padded; ids are rows of ``db``)."""
    k = truth.shape[1]
    width = found.shape[1]
    hits = dict.fromkeys(rs, 0)
    block = max(1, _GATHER_FLOATS // max(1, width * db.shape[1]))
    for s in range(0, len(queries), block):
        f = found[s : s + block]
        rows = np.asarray(db[np.maximum(f, 0).ravel()], dtype=np.float32).reshape(len(f), width, -1)
        sims = np.einsum("qrd,qd->qr", rows, queries[s : s + block])
        sims[f < 0] = -np.inf
        for r in rs:
            sub = sims[:, : min(r, width)]
            kk = min(k, sub.shape[1])
            top = np.argpartition(-sub, kk - 1, axis=1)[:, :kk]
            top_ids = np.take_along_axis(f, top, axis=1)
            top_ok = np.take_along_axis(sub, top, axis=1) > -np.inf
            for got, ok, want in zip(top_ids, top_ok, truth[s : s + block], strict=True):
                hits[r] += len(set(got[ok].tolist()) & set(want.tolist()))
    return {r: round(h / float(truth.size), 4) for r, h in hits.items()}
