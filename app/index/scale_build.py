"""Building the index of a large vector matrix, timed: what the scale benchmark calls.

:func:`build_index_timed` trains and fills either the configuration the tuner chooses for the matrix
(:func:`app.index.tune.tune`) or a given factory string, and returns a :class:`TimedIndex`: the index,
its configuration (with the R the searcher re-scores), the train and add times and its size.

Size: ``serialized_bytes`` is ``faiss.serialize_index``'s length, and ``bytes_per_vector`` that over the
vectors held. A loaded index (``faiss.read_index``, as the app loads it) holds in RAM its codes and ids
in lists sized exactly, plus the same fixed parts (PCA, centroids, codebooks): RAM matches the
serialized size up to allocator slack and a few KB of objects. An index filled by ``add`` in this
process may hold more (list vectors grown by doubling) until it is saved and loaded again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.index.faiss_index import IndexConfig
from app.index.tune import DEFAULT_MAX_MS, DEFAULT_TARGET_RECALL, DEFAULT_TIME_BUDGET_S, TuneReport, tune
from app.index.tune_large import choose_index, filled_index


@dataclass
class TimedIndex:
    """An index holding every row of the matrix (ids 0..n-1), with how it was made."""

    index: Any
    config: IndexConfig  # factory, nprobe (k_factor 1)
    rescore: int | None  # R: candidates the searcher re-scores exactly (None: the searcher's default)
    train_s: float  # training (for a tuned index: the whole tuning, its measurements included)
    add_s: float  # adding the n vectors
    train_sample: int  # vectors trained on
    count: int
    serialized_bytes: int
    report: TuneReport | None = None  # the tuner's report, when tuned

    @property
    def bytes_per_vector(self) -> float:
        return self.serialized_bytes / max(1, self.count)

    def to_json(self) -> dict[str, Any]:
        return {"factory": self.config.factory, "nprobe": self.config.nprobe, "rescore_candidates": self.rescore,
                "train_s": round(self.train_s, 2), "add_s": round(self.add_s, 2), "train_sample": self.train_sample,
                "count": self.count, "index_bytes": self.serialized_bytes,
                "bytes_per_vector": round(self.bytes_per_vector, 2),
                "code_bytes_per_vector": self.report.chosen.code_bytes if self.report and self.report.chosen else None}


def build_index_timed(vectors: np.ndarray, *, factory: str | None = None, nprobe: int = 16, rescore: int | None = None,
                      target_recall: float = DEFAULT_TARGET_RECALL, max_ms: float = DEFAULT_MAX_MS,
                      time_budget_s: float = DEFAULT_TIME_BUDGET_S, seed: int = 0,
                      queries: np.ndarray | None = None) -> TimedIndex:
    """The index of ``vectors`` (n x d float32 unit rows, memory-mapped is fine): with ``factory``, that
    configuration (searched at ``nprobe``, re-scoring ``rescore``) trained on a seeded sample of
    :func:`~app.index.tune.train_size` rows; else the tuner's choice (``target_recall`` after re-scoring,
    ``max_ms`` per query, ``time_budget_s``; measured with ``queries`` from outside the matrix when given,
    else with a held-out sample of it: see :func:`~app.index.tune.tune`)."""
    import faiss

    n = len(vectors)
    if factory is None:
        t = time.perf_counter()
        if queries is None:  # a large matrix is tuned on a sample and verified at full size
            index, report = choose_index(vectors, target_recall=target_recall, max_ms=max_ms,
                                         time_budget_s=time_budget_s, seed=seed)
        else:
            index, report = tune(vectors, target_recall=target_recall, max_ms=max_ms, time_budget_s=time_budget_s,
                                 seed=seed, queries=queries)
        total = time.perf_counter() - t
        assert report.chosen is not None
        return TimedIndex(index, report.chosen.config, report.rescore, total - report.add_s, report.add_s,
                          report.train_sample, n, len(faiss.serialize_index(index)), report)
    config = IndexConfig(factory, nprobe, 1)
    filled = filled_index(vectors, config, seed)
    return TimedIndex(filled.index, config, rescore, filled.train_s, filled.add_s, filled.trained_on, n,
                      len(faiss.serialize_index(filled.index)))
