"""Choosing the index of a collection of any size: :func:`choose_index`.

Up to :data:`LARGE_N` vectors the tuner measures candidates on the collection itself
(:func:`app.index.tune.tune`). Past it, measuring every candidate at full size would take hours (each one
holds all the vectors) and the exact ground truth tens of GB, so:

1. the tuner runs on a seeded sample of :data:`SAMPLE_N` vectors (its choice of space, code and R);
2. that configuration is built for the whole collection, with the IVF size for the full ``n`` (a power of
   two near 4 sqrt(n)) and nprobe scaled with it (the same share of the lists scanned), trained on a seeded
   sample of :func:`~app.index.tune.train_size` vectors and filled in batches (a memory-mapped matrix is
   never copied whole);
3. it is **verified at full size**: recall@5 after re-scoring R, on :data:`VERIFY_QUERIES` of the
   collection's own vectors (each left out of its own answer) against exact search over every vector,
   computed in blocks. A collection ten times the sample has more near neighbours to tell apart: while it
   misses the target the code doubles first (up to :data:`MAX_CODE_BYTES`), then nprobe and R (at most
   :data:`MAX_STEPS` changes); once it meets it, R is halved while it still does, so a query re-scores as
   few rows as it can. Measured at 1M synthetic Lite0 vectors: the sample's `PQ32x4fs` (16 B) needed
   R = 1,600 for the target, `PQ64x4fs` (32 B) reaches recall@5 0.97 with R = 100.

The report says all of this in ``skipped`` and records the recall measured at full size.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from app.index.faiss_index import IndexConfig, set_search_params, train_index
from app.index.rescore import rescored_search
from app.index.tune import (
    DEFAULT_MAX_MS,
    DEFAULT_TARGET_RECALL,
    DEFAULT_TIME_BUDGET_S,
    TuneReport,
    accept_recall,
    ivf_nlist,
    recall_at_k,
    train_size,
    tune,
)

LARGE_N = 250_000
SAMPLE_N = 100_000
VERIFY_QUERIES = 200
MAX_STEPS = 4
ADD_BATCH = 65_536  # rows converted and added at a time
BLOCK = 65_536  # database rows per block of the exact ground truth
MAX_R = 2_000
MIN_R = 20
MAX_CODE_BYTES = 64  # a code of at most 64 B (+ its 8 B id) keeps the index under 128 B a vector


def choose_index(vectors: np.ndarray, *, target_recall: float = DEFAULT_TARGET_RECALL,
                 max_ms: float = DEFAULT_MAX_MS, time_budget_s: float = DEFAULT_TIME_BUDGET_S,
                 seed: int = 0) -> tuple[Any, TuneReport]:
    """(the index holding every vector, ids 0..n-1; the tuner's report), for a collection of any size."""
    n = len(vectors)
    if n <= LARGE_N:
        return tune(np.asarray(vectors, dtype=np.float32), target_recall=target_recall, max_ms=max_ms,
                    time_budget_s=time_budget_s, seed=seed)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=SAMPLE_N, replace=False))
    _, report = tune(np.asarray(vectors[sample], dtype=np.float32), target_recall=target_recall, max_ms=max_ms,
                     time_budget_s=time_budget_s, seed=seed)
    assert report.chosen is not None
    config, rescore = _scaled(report.chosen.factory, report.chosen.nprobe, n), report.chosen.rescore or 0
    filled = filled_index(vectors, config, seed + 1)
    index, add_s, n_train = filled.index, filled.add_s, filled.trained_on
    index, recall, config, rescore = _verified(index, vectors, config, rescore, accept_recall(target_recall), seed)
    import faiss

    size = len(faiss.serialize_index(index))
    report.chosen = replace(report.chosen, factory=config.factory, nprobe=config.nprobe, rescore=rescore,
                            recall_at_5=recall, index_bytes=size, code_bytes=code_bytes(config.factory,
                                                                                   report.chosen.code_bytes))
    report.target_met = recall >= accept_recall(target_recall)
    report.skipped.append(
        f"{n:,} vectors: tuned on a seeded sample of {SAMPLE_N:,}; built with IVF size and nprobe for the whole "
        f"(trained on {n_train:,}); verified at full size on {VERIFY_QUERIES} of its vectors: recall@5 "
        f"{recall:.4f} after re-scoring {rescore} at nprobe {config.nprobe}")
    report.count, report.final_bytes, report.flat_bytes = n, size, n * vectors.shape[1] * 4
    report.add_s, report.seconds = add_s, time.perf_counter() - t0
    return index, report


def _scaled(factory: str, nprobe: int, n: int) -> IndexConfig:
    """``factory`` with the IVF size for ``n`` vectors, and nprobe scanning the same share of the lists."""
    found = re.search(r"IVF(\d+)", factory)
    if found is None:
        return IndexConfig(factory, nprobe, 1)
    nlist = ivf_nlist(n, train_size(n))
    probe = max(1, min(nlist, math.ceil(nprobe * nlist / int(found.group(1)))))
    return IndexConfig(factory.replace(found.group(0), f"IVF{nlist}", 1), probe, 1)


@dataclass
class FilledIndex:
    index: Any
    train_s: float
    add_s: float
    trained_on: int  # rows in the training sample


def filled_index(vectors: np.ndarray, config: IndexConfig, seed: int) -> FilledIndex:
    """``config`` trained on a sample of :func:`~app.index.tune.train_size` rows drawn with ``seed`` (every
    row of a small collection) and holding every row, added :data:`ADD_BATCH` at a time (ids in order: a
    memory-mapped matrix is never copied whole)."""
    n = len(vectors)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, train_size(n)), replace=False))
    t = time.perf_counter()
    index = train_index(vectors, config, train_sample=np.asarray(vectors[sample], dtype=np.float32))
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    for s in range(0, n, ADD_BATCH):
        index.add(np.ascontiguousarray(vectors[s:s + ADD_BATCH], dtype=np.float32))
    set_search_params(index, config)
    return FilledIndex(index, train_s, time.perf_counter() - t, len(sample))


def exact_top(vectors: np.ndarray, q_ids: np.ndarray, k: int, *, block: int = BLOCK) -> np.ndarray:
    """The exact top ``k`` of each query row among every row but itself, best first: one pass over the
    rows in blocks of ``block`` (memory bounded by it)."""
    q = np.asarray(vectors[q_ids], dtype=np.float32)
    best_s = np.full((len(q), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(q), k), -1, dtype=np.int64)
    for s in range(0, len(vectors), block):
        rows = np.asarray(vectors[s:s + block], dtype=np.float32)
        sims = q @ rows.T
        own = (q_ids >= s) & (q_ids < s + len(rows))
        sims[np.flatnonzero(own), q_ids[own] - s] = -np.inf
        ids = np.broadcast_to(np.arange(s, s + len(rows)), sims.shape)
        all_s, all_i = np.concatenate([best_s, sims], 1), np.concatenate([best_i, ids], 1)
        top = np.argpartition(-all_s, k - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(all_s, top, 1), np.take_along_axis(all_i, top, 1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_i, order, 1)


def _recall(index: Any, vectors: np.ndarray, q_ids: np.ndarray, truth: np.ndarray, rescore: int) -> float:
    search = rescored_search(index, vectors, rescore)
    _, found = search(np.asarray(vectors[q_ids], dtype=np.float32), truth.shape[1] + 1)
    return recall_at_k(np.where(found == q_ids[:, None], -1, found), truth)  # each query's own row left out


def _verified(index: Any, vectors: np.ndarray, config: IndexConfig, rescore: int, accept: float,
              seed: int) -> tuple[Any, float, IndexConfig, int]:
    """(index, recall@5 at full size, configuration, R). While it misses ``accept``: the code doubled first
    (a larger collection has more near neighbours to tell apart; re-scoring more rows costs every query),
    within :data:`MAX_CODE_BYTES`, then nprobe and R in turn (bounded); once it meets it, R halved while it
    still does (fewer rows read per query)."""
    rng = np.random.default_rng(seed + 2)
    q_ids = np.sort(rng.choice(len(vectors), size=min(VERIFY_QUERIES, len(vectors)), replace=False))
    truth = exact_top(vectors, q_ids, 5)
    recall = _recall(index, vectors, q_ids, truth, rescore)
    for step in range(MAX_STEPS):
        if recall >= accept:
            break
        bigger = _bigger_code(config.factory)
        nlist = int(getattr(_ivf_of(index), "nlist", 1))
        if bigger is not None:
            config = IndexConfig(bigger, config.nprobe, 1)
            index = filled_index(vectors, config, seed + 1).index
        elif config.nprobe < nlist and (step % 2 == 0 or rescore >= MAX_R):
            config = IndexConfig(config.factory, min(nlist, config.nprobe * 2), 1)
            set_search_params(index, config)
        elif rescore < MAX_R:
            rescore = min(MAX_R, rescore * 2)
        else:
            break
        recall = _recall(index, vectors, q_ids, truth, rescore)
    while recall >= accept and rescore // 2 >= MIN_R:
        fewer = _recall(index, vectors, q_ids, truth, rescore // 2)
        if fewer < accept:
            break
        recall, rescore = fewer, rescore // 2
    return index, recall, config, rescore


def code_bytes(factory: str, default: float) -> float:
    """Bytes of one vector's PQ code in ``factory`` (``default`` when it has no PQ stage)."""
    pq = re.search(r"PQ(\d+)(x4fs|np|x\d+)?", factory)
    if pq is None:
        return default
    return int(pq.group(1)) * (4 if pq.group(2) == "x4fs" else 8) / 8


def _bigger_code(factory: str) -> str | None:
    """``factory`` with twice the PQ sub-quantisers (the same bits each), or None past :data:`MAX_CODE_BYTES`
    or the space's dimension."""
    pq = re.search(r"PQ(\d+)(x4fs|np|x\d+)?", factory)
    space = re.search(r"PCAR?(\d+)", factory)
    if pq is None:
        return None
    m = int(pq.group(1)) * 2
    if code_bytes(factory, 0) * 2 > MAX_CODE_BYTES or (space is not None and int(space.group(1)) % m):
        return None
    return factory.replace(pq.group(0), f"PQ{m}{pq.group(2) or ''}", 1)


def _ivf_of(index: Any) -> Any:
    import faiss

    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None
