"""Pure retrieval metrics over ranked ids and labels (no index, no model, no files).

An item is relevant to a query when they share at least one label (Caltech101: the category;
VOC2012: any object class). At K = 10: ``map_at_10`` (average precision over the top 10, divided by
``min(relevant available, 10)``), ``mhr_at_10`` (relevant found in the top 10 over the relevant
available, capped at 10) and ``precision_at_5``. Queries with no relevant item are left out.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

K = 10


def relevant_counts(labels: Sequence[tuple[str, ...]]) -> np.ndarray:
    """For each item, how many *other* items share at least one label with it."""
    by_label: dict[str, set[int]] = {}
    for i, labs in enumerate(labels):
        for lab in labs:
            by_label.setdefault(lab, set()).add(i)
    cache: dict[tuple[str, ...], int] = {}
    out = np.zeros(len(labels), dtype=np.int64)
    for i, labs in enumerate(labels):
        key = tuple(sorted(set(labs)))
        if key not in cache:
            cache[key] = len(set().union(*(by_label[lab] for lab in key))) if key else 0
        out[i] = max(0, cache[key] - 1) if key else 0
    return out


def ranking_metrics(ranked: Sequence[Sequence[int]], query_ids: Sequence[int],
                    labels: Sequence[tuple[str, ...]], n_relevant: np.ndarray, k: int = K) -> dict[str, float]:
    """mAP@k, mean hit ratio@k and precision@5 of ranked result ids (self already excluded)."""
    aps, hrs, p5s = [], [], []
    for q, ids in zip(query_ids, ranked, strict=False):
        r = int(n_relevant[q])
        if r == 0:
            continue
        qlabs = set(labels[q])
        rel = [bool(qlabs & set(labels[j])) for j in list(ids)[:k]]
        hits, ap = 0, 0.0
        for rank, is_rel in enumerate(rel, start=1):
            if is_rel:
                hits += 1
                ap += hits / rank
        denom = min(r, k)
        aps.append(ap / denom)
        hrs.append(hits / denom)
        p5s.append(sum(rel[:5]) / 5.0)
    mean = (lambda xs: round(float(np.mean(xs)), 4) if xs else 0.0)
    return {"map_at_10": mean(aps), "mhr_at_10": mean(hrs), "precision_at_5": mean(p5s), "queries": len(aps)}


def exact_neighbours(vectors: np.ndarray, query_ids: np.ndarray, k: int) -> np.ndarray:
    """Top-k ids by exact cosine for each query item, excluding the item itself."""
    out = np.empty((len(query_ids), k), dtype=np.int64)
    for s in range(0, len(query_ids), 512):
        qi = query_ids[s : s + 512]
        sims = np.asarray(vectors[qi], dtype=np.float32) @ np.asarray(vectors, dtype=np.float32).T
        sims[np.arange(len(qi)), qi] = -np.inf
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(sims, part, axis=1).argsort(axis=1)[:, ::-1]
        out[s : s + 512] = np.take_along_axis(part, order, axis=1)
    return out
