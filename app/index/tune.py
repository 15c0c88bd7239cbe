"""Choosing the index configuration by measurement (the way autofaiss does), for a recall target
*after exact re-scoring*.

The searcher re-scores the index's top R candidates exactly from the memory-mapped vectors
(:mod:`app.index.rescore`), so the index only has to put the true top 5 among its top R: a compact
code does. A seeded sample of the collection's own vectors is held out as queries; the ground truth is
their exact top-5 among the rest (L2 on unit vectors = the cosine ranking).

1. **Spaces.** One eigen-decomposition serves every PCA dimension. For each, the recall@5 of exact
   search in the reduced space, its top R (the largest of :data:`~app.index.rescore.RESCORE_CHOICES`)
   re-scored in the full space, bounds what any index working there can reach; the smallest dimension
   reaching the target and the next two of :data:`WORK_DIMS` are the spaces tried (``PCAR<dp>``: PCA
   plus a random rotation that spreads the variance over the PQ sub-vectors). The raw space is used
   only when no PCA dimension can do it.
2. **Candidates.** ``PCAR<dp>,IVF<nlist>,PQ<m>`` with ``m`` of :data:`PQ_BYTES` (8-bit codes, m bytes) and
   the 4-bit fast-scan ``PQ<m>x4fs`` (m/2 bytes, scanned with SIMD lookups). ``nlist`` depends on the
   collection's size (:func:`ivf_nlist`: ~4 sqrt(n), so 4096 at 1M, 1 list for a tiny one). Training
   uses a seeded sample (:func:`train_size`: 50,000 vectors, or 40 per list when more); one k-means
   per space serves all its codes.
3. **Sweep.** For each candidate, ``nprobe`` upwards; at each, one search of the largest R gives the
   recall@5 after re-scoring for every R; the smallest R reaching the target (plus
   :data:`RECALL_MARGIN`) is timed, one query at a time, index search *and* re-scoring included.
4. **Choice.** Candidates are tried from the smallest estimated bytes per vector up (codes, 8-byte ids,
   the PCA, centroids and codebooks amortised over n); the first passing one (recall, ``<= max_ms``)
   ends the search, except for candidates that may still be smaller once measured. A candidate whose
   space already failed with as many code bytes is skipped (dominated). If none passes, the best recall
   is kept and the report says the target was missed.

The report (the manifest's ``tuning``) holds the chosen R (``rescore_candidates``), the code size
(``code_bytes_per_vector``) and the index bytes per vector (the serialized index over n: what a loaded
index holds in RAM, up to allocator slack).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from app.index.faiss_index import set_search_params
from app.index.rescore import RESCORE_CHOICES
from app.index.tune_space import (  # noqa: F401 - re-exported: the tuner's public vocabulary
    MAX_TRAIN,
    RECALL_K,
    Candidate,
    Space,
    Trial,
    exact_topk,
    pca_dims,
    recall_at_k,
    sweep,
    time_queries,
)

DEFAULT_TARGET_RECALL = 0.95
# The held-out recall is a sample estimate (about +-0.005 at 1000 queries), and on real features it
# reads higher than the collection's own leave-one-out recall. A configuration is accepted only when it
# clears the target by this margin, so the recall people get holds the target.
RECALL_MARGIN = 0.01
DEFAULT_MAX_MS = 1.0  # per query, index search and exact re-scoring together
DEFAULT_TIME_BUDGET_S = 40.0
PQ_BYTES = (8, 16, 32, 48, 64)  # 8-bit PQ codes: m bytes
FASTSCAN_M = (16, 32, 64, 128)  # 4-bit fast-scan PQ codes: m/2 bytes
WORK_DIMS = (32, 64, 128, 256, 512)
SPACES = 3  # spaces tried: the smallest reaching the target and the next ones of WORK_DIMS
ID_BYTES = 8  # an IVF list stores each vector's id as an int64
TRAIN_PER_LIST = 40


@dataclass
class TuneReport:
    """What the tuner measured and chose; stored in the manifest under ``tuning``."""

    target_recall: float
    max_ms: float
    queries: int
    chosen: Trial | None
    target_met: bool
    trials: list[Trial] = field(default_factory=list)
    seconds: float = 0.0
    flat_bytes: int = 0  # an exact flat index of the whole collection
    final_bytes: int = 0  # the chosen index holding the whole collection
    pca_ceiling: dict[int, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # what was not tried, and why
    train_sample: int = 0  # vectors the index was trained on
    count: int = 0  # vectors in the final index
    add_s: float = 0.0  # adding every vector to the chosen, trained index

    @property
    def fraction_of_flat(self) -> float | None:
        return round(self.final_bytes / self.flat_bytes, 4) if self.flat_bytes and self.final_bytes else None

    @property
    def rescore(self) -> int | None:
        return self.chosen.rescore or None if self.chosen else None

    def to_json(self) -> dict[str, Any]:
        return {
            "target_recall_at_5": self.target_recall,
            "accept_recall_at_5": round(accept_recall(self.target_recall), 4),
            "recall_after": "exact re-scoring of rescore_candidates",
            "max_ms_per_query": self.max_ms,
            "queries": self.queries,
            "target_met": self.target_met,
            "chosen": asdict(self.chosen) if self.chosen else None,
            "rescore_candidates": self.rescore,
            "code_bytes_per_vector": self.chosen.code_bytes if self.chosen else None,
            "index_bytes_per_vector": round(self.final_bytes / self.count, 2) if self.count else None,
            "train_sample": self.train_sample,
            "final_index_bytes": self.final_bytes,
            "flat_bytes": self.flat_bytes,
            "fraction_of_flat": self.fraction_of_flat,
            "pca_recall_ceiling": {str(k): v for k, v in self.pca_ceiling.items()},
            "seconds": round(self.seconds, 2),
            "add_s": round(self.add_s, 2),
            "trials": [asdict(t) for t in self.trials],
            "skipped": self.skipped,
        }


# -- candidates --------------------------------------------------------------------------------


def pq_nbits(n_train: int) -> int:
    """8-bit PQ codes, fewer bits when there are too few vectors to train 256 centroids."""
    return 8 if n_train >= 1024 else max(1, min(8, int(math.log2(max(2, n_train)))))


def ivf_nlist(n: int, n_train: int) -> int:
    """A power of two near 4 sqrt(n) (4096 at 1M, 256 at 8k), with at least 32 training vectors per list."""
    nlist = 2 ** int(round(math.log2(max(1.0, 4.0 * math.sqrt(n)))))
    return max(1, min(nlist, n_train // 32))


def train_size(n: int) -> int:
    """How many vectors train the index: 50,000, or 40 per IVF list when that is more (164k at 1M)."""
    return min(n, max(MAX_TRAIN, TRAIN_PER_LIST * ivf_nlist(n, n)))


def fixed_bytes(d: int, dp: int, nlist: int, nbits: int) -> int:
    """The parts of an index that do not grow with n: PCA matrix, bias and mean; centroids; codebooks."""
    return ((d * dp + dp + d) * 4 if dp < d else 0) + nlist * dp * 4 + (2**nbits) * dp * 4


def _pq(m: int, nbits: int) -> str:
    # "np": no polysemous training, which costs minutes and only helps Hamming-filtered search.
    return f"PQ{m}np" if nbits == 8 else f"PQ{m}x{nbits}np"


def candidates(n: int, d: int, *, n_train: int | None = None, dims: list[int] | None = None) -> list[Candidate]:
    """Every compact IVFPQ configuration worth trying for ``n`` vectors of dimension ``d`` in the spaces
    ``dims`` (``d`` itself = no pre-transform), smallest estimated size first."""
    n_train = n_train or n
    nbits = pq_nbits(n_train)
    nlist = ivf_nlist(n, n_train)
    out: list[Candidate] = []
    for dp in dims if dims is not None else [d]:
        pre = f"PCAR{dp}" if dp < d else ""
        codes = [(_pq(m, nbits), m * nbits / 8, nbits) for m in PQ_BYTES if m <= dp and dp % m == 0]
        if nbits == 8:
            codes += [(f"PQ{m}x4fs", m / 2, 4) for m in FASTSCAN_M if m <= dp and dp % m == 0]
        for body, code, bits in codes:
            est = n * (code + ID_BYTES) + fixed_bytes(d, dp, nlist, bits)
            out.append(Candidate(dp, pre, f"IVF{nlist},{body}", nlist, est, 8 * code / dp, code_bytes=code))
    return sorted(out, key=lambda c: (c.est_bytes, "fs" not in c.body, c.factory))


# -- the tuner ---------------------------------------------------------------------------------


def accept_recall(target: float) -> float:
    """The held-out recall@5 a configuration must show to meet ``target`` (an impossible target stays so)."""
    return target if target > 1.0 else min(1.0, target + RECALL_MARGIN)


def tune(
    vectors: np.ndarray,
    *,
    target_recall: float = DEFAULT_TARGET_RECALL,
    max_ms: float = DEFAULT_MAX_MS,
    n_queries: int | None = None,
    seed: int = 0,
    time_budget_s: float = DEFAULT_TIME_BUDGET_S,
    rescore_choices: Sequence[int] = RESCORE_CHOICES,
    queries: np.ndarray | None = None,
) -> tuple[Any, TuneReport]:
    """Pick and build the smallest index meeting the target (plus :data:`RECALL_MARGIN`) after exact
    re-scoring; returns (index with all vectors, report). ``queries``: measure with these vectors from
    outside the collection instead of a held-out sample of it (a synthetic collection whose items have
    near copies of each other would otherwise be measured on queries easier than new photos)."""
    t_start = time.perf_counter()
    n, d = vectors.shape
    space = Space(vectors, n_queries, seed, train_size=train_size(n), queries=queries)
    report = TuneReport(target_recall, max_ms, len(space.queries), None, False, flat_bytes=n * d * 4,
                        train_sample=len(space.train_idx))
    accept = accept_recall(target_recall)
    rs = sorted(set(rescore_choices))
    dims = _spaces(space, report, accept, max(rs), d)
    cands = candidates(len(space.db), d, n_train=len(space.train_idx), dims=dims)
    best_index = _explore(space, report, cands, accept, rs, t_start + time_budget_s)
    best_index = _final_index(best_index, report, vectors)
    report.seconds = time.perf_counter() - t_start
    return best_index, report


def _spaces(space: Space, report: TuneReport, accept: float, rmax: int, d: int) -> list[int]:
    """The spaces to work in, from the PCA recall ceilings after re-scoring (recorded in ``report``)."""
    report.pca_ceiling = space.ceilings(accept, rescore_n=rmax)
    reachable = [dp for dp, rec in report.pca_ceiling.items() if rec >= accept]
    if not reachable:
        report.skipped.append(f"no PCA dimension reaches {accept} after re-scoring {rmax}: the raw space")
        return [d]
    work = [dp for dp in WORK_DIMS if dp >= reachable[0] and dp in space.dims] or [reachable[0]]
    return work[:SPACES]


def _explore(space: Space, report: TuneReport, cands: list[Candidate], accept: float, rs: list[int],
             deadline: float) -> Any:
    """Try the candidates, smallest first (module docstring, step 4); returns the chosen index."""
    import faiss

    failed: list[Candidate] = []
    best_index = None
    for i, cand in enumerate(cands):
        chosen = report.chosen if report.target_met else None
        if chosen is not None and cand.est_bytes >= chosen.index_bytes:
            continue  # cannot be smaller than the passing choice
        dom = next((f for f in failed if f.dp == cand.dp and f.code_bytes >= cand.code_bytes), None)
        if dom is not None:
            report.skipped.append(f"{cand.factory}: dominated by {dom.factory}, which missed the recall")
            continue
        if time.perf_counter() > deadline and best_index is not None and (chosen or i < len(cands) - 1):
            report.skipped.append(f"{cand.factory}: the time budget was spent")
            continue  # nothing passing yet: only the largest candidate is tried past the budget
        t = time.perf_counter()
        try:
            index = space.build(cand)
        except RuntimeError as exc:  # faiss refuses a configuration (e.g. too few training points)
            report.skipped.append(f"{cand.factory}: {str(exc).splitlines()[0][:200]}")
            continue
        trials = sweep(space, index, cand, len(faiss.serialize_index(index)), time.perf_counter() - t, accept, rs,
                       report.max_ms)
        report.trials.extend(trials)
        last = trials[-1]
        if last.recall_at_5 < accept:
            failed.append(cand)
        if last.passes(accept, report.max_ms) and (chosen is None or last.index_bytes < chosen.index_bytes):
            report.chosen, report.target_met, best_index = last, True, index
        elif not report.target_met and (report.chosen is None or _better(last, report.chosen)):
            report.chosen, best_index = last, index
    return best_index


def _final_index(best_index: Any, report: TuneReport, vectors: np.ndarray) -> Any:
    """The chosen (trained) index holding every vector, ids 0..n-1 in collection order."""
    import faiss

    n, d = vectors.shape
    if best_index is None:  # nothing could be built (cannot happen with >= 2 vectors)
        report.chosen = Trial("Flat", 1, 1.0, None, n * d * 4, 0.0)
        best_index = faiss.index_factory(d, "Flat", faiss.METRIC_L2)
    assert report.chosen is not None
    set_search_params(best_index, report.chosen.config)
    best_index.reset()  # keeps the training
    t = time.perf_counter()
    for s in range(0, n, 65_536):  # a memory-mapped matrix is converted a block at a time
        best_index.add(np.ascontiguousarray(vectors[s : s + 65_536], dtype=np.float32))
    report.add_s = time.perf_counter() - t
    report.final_bytes = len(faiss.serialize_index(best_index))
    report.count = n
    return best_index


def is_ivfpq(factory: str) -> bool:
    """The product serves IVFPQ indexes (PQ codes in IVF lists, optionally re-ranked by a refine stage)."""
    return ",IVF" in f",{factory}" and ",PQ" in factory


def _better(a: Trial, b: Trial) -> bool:
    """When nothing passes: higher recall wins, then the smaller index."""
    return (a.recall_at_5, -a.index_bytes) > (b.recall_at_5, -b.index_bytes)
