"""Choosing IVFPQ parameters by measurement, the way autofaiss does.

A seeded sample of the collection's own vectors is held out as queries; the ground truth is the
exact top-k of each query among the remaining vectors. Candidate configurations (an optional PCA
pre-transform, IVF nlist, PQ m x nbits, nprobe) are tried from the smallest estimated size up;
the first that reaches the recall target at the latency limit is kept. If none does within the
time budget, the one with the best recall is kept and the report says the target was missed.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .index import IndexConfig, search, set_search_params, train_index

DEFAULT_TARGET_RECALL = 0.95
DEFAULT_MAX_MS = 1.0
RECALL_K = 5


@dataclass
class Trial:
    factory: str
    nprobe: int
    recall_at_5: float
    ms_per_query: float
    index_bytes: int
    train_s: float

    @property
    def config(self) -> IndexConfig:
        return IndexConfig(self.factory, self.nprobe)


@dataclass
class TuneReport:
    target_recall: float
    max_ms: float
    queries: int
    chosen: Trial | None
    target_met: bool
    trials: list[Trial] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "target_recall_at_5": self.target_recall,
            "max_ms_per_query": self.max_ms,
            "queries": self.queries,
            "target_met": self.target_met,
            "chosen": asdict(self.chosen) if self.chosen else None,
            "seconds": round(self.seconds, 2),
            "trials": [asdict(t) for t in self.trials],
        }


def exact_topk(db: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k ids by inner product (cosine on unit vectors), blockwise to bound memory."""
    k = min(k, len(db))
    out = np.empty((len(queries), k), dtype=np.int64)
    for s in range(0, len(queries), 1024):
        sims = queries[s : s + 1024] @ db.T
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(sims, part, axis=1).argsort(axis=1)[:, ::-1]
        out[s : s + 1024] = np.take_along_axis(part, order, axis=1)
    return out


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    hits = sum(len(set(f[f >= 0][:k].tolist()) & set(t.tolist())) for f, t in zip(found, truth))
    return hits / float(truth.size)


def candidates(n: int, d: int) -> list[tuple[str, int]]:
    """(factory, estimated bytes) for a collection of ``n`` vectors of dimension ``d``."""
    nbits = 8 if n >= 2048 else max(4, min(8, int(math.log2(max(16, n // 4)))))
    root = math.sqrt(n)
    nlists = sorted({max(1, min(n // 16 or 1, int(f * root))) for f in (0.5, 1.0, 2.0)})
    out: dict[str, int] = {}
    dims = [dp for dp in (64, 128, 256) if dp < d and dp < n] or [d]
    for dp in dims:
        for m in (8, 16, 32, 64, dp // 2):
            if m < 1 or dp % m or m > dp:
                continue
            for nlist in nlists:
                pre = f"PCAR{dp}," if dp < d else ""
                factory = f"{pre}IVF{nlist},PQ{m}x{nbits}" if nbits != 8 else f"{pre}IVF{nlist},PQ{m}"
                size = (d * dp * 4 if dp < d else 0) + nlist * dp * 4 + (2**nbits) * dp * 4
                size += n * (math.ceil(m * nbits / 8) + 8)
                out[factory] = size
    return sorted(out.items(), key=lambda kv: (kv[1], kv[0]))


def _time_queries(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Search one query at a time (as the app does); returns ids and the median ms per query."""
    ids = np.empty((len(queries), k), dtype=np.int64)
    times = []
    for i in range(len(queries)):
        t = time.perf_counter()
        ids[i] = search(index, queries[i : i + 1], k)[1][0]
        times.append(time.perf_counter() - t)
    return ids, float(np.median(times)) * 1000.0


def tune(
    vectors: np.ndarray,
    *,
    target_recall: float = DEFAULT_TARGET_RECALL,
    max_ms: float = DEFAULT_MAX_MS,
    n_queries: int | None = None,
    seed: int = 0,
    time_budget_s: float = 45.0,
    extra: list[str] | None = None,
) -> tuple[Any, TuneReport]:
    """Pick and build the smallest index meeting the target; returns (index with all vectors, report)."""
    import faiss

    t_start = time.perf_counter()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = vectors.shape
    nq = n_queries or int(min(500, max(1, n // 10)))
    rng = np.random.default_rng(seed)
    q_idx = np.sort(rng.choice(n, size=min(nq, max(1, n - 1)), replace=False))
    mask = np.ones(n, dtype=bool)
    mask[q_idx] = False
    db, queries = vectors[mask], vectors[q_idx]
    k = min(RECALL_K, len(db))
    truth = exact_topk(db, queries, k)
    timing_q = queries[: min(len(queries), 200)]

    report = TuneReport(target_recall, max_ms, len(queries), None, False)
    best_index = None
    cands = [f for f, _ in candidates(len(db), d)] + list(extra or [])
    pca_cache: dict = {}
    for factory in cands:
        if report.trials and time.perf_counter() - t_start > time_budget_s:
            break
        t = time.perf_counter()
        index = train_index(db, IndexConfig(factory), pca_cache=pca_cache)
        index.add(db)
        train_s = time.perf_counter() - t
        nbytes = len(faiss.serialize_index(index))
        nlist = faiss.extract_index_ivf(index).nlist
        for nprobe in sorted({p for p in (1, 2, 4, 8, 16, 32, 64, 128) if p <= nlist} | {nlist}):
            cfg = IndexConfig(factory, nprobe)
            set_search_params(index, cfg)
            _, found = search(index, queries, k)
            rec = recall_at_k(found, truth)
            _, ms = _time_queries(index, timing_q, k)
            trial = Trial(factory, nprobe, round(rec, 4), round(ms, 4), nbytes, round(train_s, 2))
            report.trials.append(trial)
            if rec >= target_recall and ms <= max_ms:
                report.chosen, report.target_met, best_index = trial, True, index
                break
            if report.chosen is None or (rec, -nbytes) > (report.chosen.recall_at_5, -report.chosen.index_bytes):
                if not report.target_met:
                    report.chosen, best_index = trial, index
            if rec >= target_recall:
                break  # more nprobe only gets slower
        if report.target_met:
            break

    assert report.chosen is not None and best_index is not None
    set_search_params(best_index, report.chosen.config)
    best_index.reset()  # keeps the training; ids become 0..n-1 in collection order
    best_index.add(vectors)
    report.seconds = time.perf_counter() - t_start
    return best_index, report
