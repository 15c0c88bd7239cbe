"""Candidate pairs for duplicate finding: for each query vector, its neighbours above a cosine, found with
faiss (k nearest neighbours), never by comparing all pairs.

:class:`PairSearch` is the one search-backend interface the duplicate finder uses; :class:`FaissPairSearch`
implements it with an exact inner-product index up to :data:`EXACT_UP_TO` vectors; above that, the
neighbours are found in a PCA space of :data:`PCA_DIM` dimensions with an IVF index (``PCA<d>,IVF<nlist>,Flat``,
trained on a seeded sample, ``nprobe`` lists searched), and every pair found is scored again with the exact
cosine of the full vectors before the threshold. Vectors are unit length, so inner product is cosine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

EXACT_UP_TO = 20_000
PCA_DIM = 128


@dataclass(frozen=True)
class Pairs:
    """Edges between rows of the searched matrix: ``i`` < ``j``, with their cosine ``sim``."""

    i: np.ndarray
    j: np.ndarray
    sim: np.ndarray

    def __len__(self) -> int:
        return len(self.i)


class PairSearch(Protocol):
    def pairs(self, vectors: np.ndarray, query_rows: np.ndarray, *, threshold: float, k: int) -> Pairs:
        """Pairs (query row, other row) with cosine >= ``threshold`` among each query's ``k`` nearest."""
        ...


class FaissPairSearch:
    """k nearest neighbours with faiss: exact (``IndexFlatIP``) for small sets, ``IVF,Flat`` for large ones."""

    def __init__(self, *, exact_up_to: int = EXACT_UP_TO, nprobe: int = 12, seed: int = 0, threads: int | None = None):
        self.exact_up_to = exact_up_to
        self.nprobe = nprobe
        self.seed = seed
        self.threads = threads

    def _index(self, vectors: np.ndarray):
        import faiss

        if self.threads:
            faiss.omp_set_num_threads(self.threads)
        n, d = vectors.shape
        if n <= self.exact_up_to:
            index = faiss.IndexFlatIP(d)
        else:
            nlist = int(4 * np.sqrt(n))
            pca = f"PCA{PCA_DIM}," if d > PCA_DIM else ""
            index = faiss.index_factory(d, f"{pca}IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(self.seed)
            sample = vectors[rng.choice(n, size=min(n, 40 * nlist), replace=False)]
            index.train(np.ascontiguousarray(sample))
            faiss.extract_index_ivf(index).nprobe = self.nprobe
        index.add(vectors)
        return index

    def pairs(self, vectors: np.ndarray, query_rows: np.ndarray, *, threshold: float, k: int) -> Pairs:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        query_rows = np.asarray(query_rows, dtype=np.int64)
        if len(vectors) < 2 or len(query_rows) == 0:
            empty = np.zeros(0, np.int64)
            return Pairs(empty, empty, np.zeros(0, np.float32))
        index = self._index(vectors)
        kk = min(k + 1, len(vectors))
        sims, nbrs = index.search(vectors[query_rows], kk)
        qi = np.repeat(query_rows, kk)
        nj = nbrs.ravel()
        keep = (nj >= 0) & (nj != qi)
        a, b = qi[keep], nj[keep]
        s = _exact_cosines(vectors, a, b) if len(vectors) > self.exact_up_to else sims.ravel()[keep]
        keep = s >= threshold
        a, b, s = a[keep], b[keep], s[keep]
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        key = lo * len(vectors) + hi
        _, first = np.unique(key, return_index=True)  # a pair found from both ends counts once
        return Pairs(lo[first], hi[first], s[first].astype(np.float32))


def _exact_cosines(vectors: np.ndarray, a: np.ndarray, b: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    out = np.empty(len(a), np.float32)
    for k in range(0, len(a), chunk):
        out[k:k + chunk] = np.einsum("ij,ij->i", vectors[a[k:k + chunk]], vectors[b[k:k + chunk]])
    return out
