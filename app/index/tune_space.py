"""Measuring index configurations on a held-out split of a collection's own vectors.

The machinery behind :mod:`app.index.tune` (and the sweep of :mod:`app.metrics.evaluate`): the split and its
exact ground truth, the PCA projections and their recall ceilings, building a candidate in its
reduced space, and sweeping ``nprobe``/``k_factor`` upwards until a recall target is reached.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from app.index.faiss_index import IndexConfig, pca_eigen, pca_from_eigen, quiet_clustering, search, set_search_params
from app.index.rescore import RESCORE_CHOICES, recall_by_r, rescore

RECALL_K = 5
PCA_DIMS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 320, 384, 448, 512, 640, 768, 1024, 1536)
CEILING_MARGIN = 0.02  # ceilings are measured up to the first dimension reaching target + this
NPROBES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
K_FACTORS = (2, 4, 8, 16, 32)
MAX_QUERIES = 1000  # held-out queries: recall@5 measured to about +-0.005
TIMING_QUERIES = 200
MAX_PCA_SAMPLE = 20_000  # vectors used for the covariance
MAX_TRAIN = 50_000  # vectors used to train IVF, PQ and SQ (more when the IVF needs them: Space's train_size)
_SIMS_FLOATS = 64_000_000


def pca_dims(n_train: int, d: int) -> list[int]:
    return [p for p in PCA_DIMS if p < d and p < n_train]


@dataclass
class Trial:
    """One measured configuration: factory string plus search parameters."""

    factory: str
    nprobe: int
    recall_at_5: float
    ms_per_query: float | None  # None: not timed (its recall was below the target)
    index_bytes: int
    train_s: float
    k_factor: int = 1
    rescore: int = 0  # R: candidates re-scored exactly from the stored vectors (0: the index alone)
    code_bytes: float = 0.0  # bytes of one vector's code (ids and shared parts not counted)
    wall_ms: float | None = None  # p50 wall time per query (ms_per_query: p50 CPU time, what max_ms limits)
    p99_ms: float | None = None  # p99 wall time per query

    @property
    def config(self) -> IndexConfig:
        return IndexConfig(self.factory, self.nprobe, self.k_factor)

    def passes(self, target_recall: float, max_ms: float) -> bool:
        return self.recall_at_5 >= target_recall and self.ms_per_query is not None and self.ms_per_query <= max_ms


@dataclass(frozen=True)
class Candidate:
    """A configuration to try: ``pre`` (a PCA prefix or "") + ``body``, in a ``dp``-dim space."""

    dp: int
    pre: str
    body: str
    nlist: int
    est_bytes: int
    bits_per_dim: float  # code bits per reduced dimension that decide the final ranking
    refine: bool = False
    probe: bool = False  # cheap to train: measured first, its failures prune the others
    base: str = ""  # for a larger-nlist variant: the factory it is a faster version of
    code_bytes: float = 0.0  # bytes of one vector's code

    @property
    def factory(self) -> str:
        return f"{self.pre},{self.body}" if self.pre else self.body


# -- exact search ------------------------------------------------------------------------------


def exact_topk(db: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k ids by L2 distance (= the cosine ranking on unit vectors), blockwise."""
    k = min(k, len(db))
    half_norms = 0.5 * np.einsum("ij,ij->i", db, db)
    out = np.empty((len(queries), k), dtype=np.int64)
    block = int(max(1, min(1024, _SIMS_FLOATS // max(1, len(db)))))  # (block x n) scores: ~256 MB at most
    for s in range(0, len(queries), block):
        sims = queries[s : s + block] @ db.T - half_norms  # its argmax is the L2 argmin
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(sims, part, axis=1).argsort(axis=1)[:, ::-1]
        out[s : s + block] = np.take_along_axis(part, order, axis=1)
    return out


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of the true top-k found in the returned top-k (order ignored)."""
    k = truth.shape[1]
    hits = sum(len(set(f[f >= 0][:k].tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=False))
    return hits / float(truth.size)


def time_queries(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Search one query at a time (as the app does); returns ids and the median ms per query."""
    ids = np.empty((len(queries), k), dtype=np.int64)
    times = []
    for i in range(len(queries)):
        t = time.perf_counter()
        ids[i] = search(index, queries[i : i + 1], k)[1][0]
        times.append(time.perf_counter() - t)
    return ids, float(np.median(times)) * 1000.0


class Space:
    """The held-out split, its ground truth and the PCA projections, computed once."""

    def __init__(self, vectors: np.ndarray, n_queries: int | None, seed: int, train_size: int = MAX_TRAIN,
                 queries: np.ndarray | None = None) -> None:
        """``queries``: vectors from outside the collection to measure with (all of it is the database);
        default: a seeded held-out sample of the collection itself."""
        n, self.d = vectors.shape
        rng = np.random.default_rng(seed)
        if queries is not None:
            self.db = np.ascontiguousarray(vectors, dtype=np.float32)
            self.queries = np.ascontiguousarray(np.atleast_2d(queries)[: n_queries or None], dtype=np.float32)
        else:
            nq = n_queries or int(min(MAX_QUERIES, max(1, n // 8)))
            q_idx = np.sort(rng.choice(n, size=min(nq, max(1, n - 1)), replace=False))
            mask = np.ones(n, dtype=bool)
            mask[q_idx] = False
            self.db = np.ascontiguousarray(vectors[mask], dtype=np.float32)
            self.queries = np.ascontiguousarray(vectors[q_idx], dtype=np.float32)
        self.k = min(RECALL_K, len(self.db))
        self.truth = exact_topk(self.db, self.queries, self.k)
        self.timing = self.queries[: min(len(self.queries), TIMING_QUERIES)]
        self.train_idx = np.sort(rng.choice(len(self.db), size=min(len(self.db), train_size), replace=False))
        pca_n = min(len(self.db), MAX_PCA_SAMPLE)
        self.pca_idx = np.sort(rng.choice(len(self.db), size=pca_n, replace=False))
        self.dims = pca_dims(pca_n, self.d)
        self._eigen: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._pcas: dict[int, Any] = {}
        self._proj: dict[int, np.ndarray] = {}
        self._centroids: dict[tuple[int, int], np.ndarray] = {}

    def eigen(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._eigen is None:
            self._eigen = pca_eigen(self.db[self.pca_idx], max_components=max(self.dims, default=None))
        return self._eigen

    def ceilings(self, target: float, rescore_n: int = 0) -> dict[int, float]:
        """recall@5 of exact search after PCA to each dimension, up to the first clearly reaching the target;
        with ``rescore_n``, of its exact top ``rescore_n`` re-scored in the full space (what any index in that
        space, re-scoring that many candidates, can reach at most)."""
        out: dict[int, float] = {}
        if not self.dims:
            return out
        mean, _, vecs = self.eigen()
        mean32 = mean.astype(np.float32)
        db_p = q_p = np.zeros((0, 0), np.float32)
        width = min(max(self.k, rescore_n), len(self.db))
        for dp in self.dims:
            if dp > db_p.shape[1]:  # project in growing blocks: most collections stop early
                hi = next((p for p in self.dims if p >= 2 * dp), self.dims[-1])
                top = np.ascontiguousarray(vecs[:, :hi], dtype=np.float32)
                db_p, q_p = (self.db - mean32) @ top, (self.queries - mean32) @ top
            found = exact_topk(np.ascontiguousarray(db_p[:, :dp]), np.ascontiguousarray(q_p[:, :dp]), width)
            out[dp] = (recall_by_r(self.db, self.queries, found, self.truth, [width])[width] if rescore_n
                       else round(recall_at_k(found, self.truth), 4))
            if out[dp] >= min(1.0, target + CEILING_MARGIN):
                break  # larger dimensions only do better
        return out

    def pca(self, dp: int):
        if dp not in self._pcas:
            self._pcas[dp] = pca_from_eigen(*self.eigen(), dp, random_rotation=True)
        return self._pcas[dp]

    def projected(self, dp: int) -> np.ndarray:
        """The database in a candidate's space (after PCAR when ``dp < d``)."""
        if dp >= self.d:
            return self.db
        if dp not in self._proj:
            self._proj[dp] = self.pca(dp).apply(self.db)
        return self._proj[dp]

    def build(self, cand: Candidate):
        """Train ``cand`` in its reduced space and add the database; returns the full index."""
        import faiss

        data = self.projected(cand.dp)
        inner = faiss.index_factory(cand.dp, cand.body, faiss.METRIC_L2)
        quiet_clustering(inner)
        train = np.ascontiguousarray(data[self.train_idx])
        try:
            ivf = faiss.extract_index_ivf(inner)
        except RuntimeError:
            ivf = None
        if ivf is not None:  # one k-means per space and list count, shared by its codes (train skips it)
            key = (cand.dp, int(ivf.nlist))
            if key not in self._centroids:
                km = faiss.Kmeans(cand.dp, key[1], niter=20, seed=1234, min_points_per_centroid=1)
                km.train(train)
                self._centroids[key] = km.centroids
            ivf.quantizer.add(self._centroids[key])
        inner.train(train)
        inner.add(data)
        return faiss.IndexPreTransform(self.pca(cand.dp), inner) if cand.pre else inner


def time_rescored(index, db: np.ndarray, queries: np.ndarray, r: int, k: int) -> tuple[float, float, float]:
    """(p50 CPU ms, p50 wall ms, p99 wall ms) per query, one query at a time as the app searches: the
    index's top ``r`` and their exact re-scoring from ``db`` (the rows the index returned, nothing else).
    The search runs on this one thread, so its CPU time is the query's cost on an idle machine; a loaded
    machine only stretches the wall times (the latency limit is judged on the CPU time)."""
    cpu, wall = [], []
    for i in range(len(queries)):
        q = queries[i : i + 1]
        t, c = time.perf_counter(), time.thread_time()
        found = search(index, q, r)[1][0]
        rescore(db, q[0], found[found >= 0], k)
        cpu.append(time.thread_time() - c)
        wall.append(time.perf_counter() - t)
    return (float(np.percentile(cpu, 50)) * 1000.0, float(np.percentile(wall, 50)) * 1000.0,
            float(np.percentile(wall, 99)) * 1000.0)


SATURATED = 0.001  # recall at the largest R gaining less than this from doubling nprobe: the code's limit


FEWER_R_STEPS = 2  # after the first passing nprobe, doublings tried for a smaller R


def sweep(space: Space, index, cand: Candidate, nbytes: int, train_s: float, target: float,
          rs: Sequence[int] = RESCORE_CHOICES, max_ms: float = float("inf")) -> list[Trial]:
    """Sweep nprobe upwards; at each, the recall@5 after exact re-scoring of the top R for every R in
    ``rs`` (one search at the largest R). At the first nprobe where some R reaches ``target`` the smallest
    such R is timed; up to :data:`FEWER_R_STEPS` more doublings are tried for a smaller R within
    ``max_ms`` (R rows are read from the vectors file per query: fewer is cheaper when it is not cached).
    Stops early where more lists stop helping. The trial to keep (timed) comes last."""
    import faiss

    try:
        nlist = faiss.extract_index_ivf(index).nlist
    except RuntimeError:
        nlist = 1  # not an IVF index (a flat reference)
    nprobes = sorted({p for p in NPROBES if p < nlist} | {nlist})
    rs = sorted({max(1, min(r, len(space.db))) for r in rs})
    trials: list[Trial] = []
    best: Trial | None = None
    prev, extra = -1.0, 0

    def timed(trial: Trial) -> Trial:
        cpu, p50, p99 = time_rescored(index, space.db, space.timing, trial.rescore, space.k)
        trial.ms_per_query, trial.wall_ms, trial.p99_ms = round(cpu, 4), round(p50, 4), round(p99, 4)
        return trial

    for nprobe in nprobes:
        set_search_params(index, IndexConfig(cand.factory, nprobe, 1))
        found = search(index, space.queries, rs[-1])[1]
        by_r = recall_by_r(space.db, space.queries, found, space.truth, rs)
        r = next((r for r in rs if by_r[r] >= target), rs[-1])
        trial = Trial(cand.factory, nprobe, by_r[r], None, nbytes, round(train_s, 2), 1, r, cand.code_bytes)
        trials.append(trial)
        passing = by_r[r] >= target
        if best is None:
            saturated = nprobe >= 8 and by_r[rs[-1]] - prev < SATURATED
            if passing or nprobe == nprobes[-1] or saturated:
                if not passing or timed(trial).ms_per_query > max_ms:
                    break
                best = trial
        else:
            extra += 1
            if passing and r < best.rescore:
                if timed(trial).ms_per_query > max_ms:
                    break
                best = trial
            if extra >= FEWER_R_STEPS or best.rescore == rs[0]:
                break
        prev = by_r[rs[-1]]
    if best is not None and trials[-1] is not best:
        trials.remove(best)
        trials.append(best)
    return trials
