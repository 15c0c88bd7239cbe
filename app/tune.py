"""Choosing the index configuration by measurement (the way autofaiss does), for a recall target.

A seeded sample of the collection's own vectors is held out as queries; the ground truth is their
exact top-5 among the rest (L2 on unit vectors = the cosine ranking). Nothing is tuned to a
particular kind of vector (real or untrained ResNet-50 features, tiny folders): it is measured.

1. **PCA ceiling.** One eigen-decomposition serves every PCA dimension. For each, the recall@5 of
   *exact* search in the reduced space bounds what any index working there can reach; dimensions
   below the target are not tried. The raw space is used only when no PCA dimension can do it.
2. **Candidates** inside ``PCAR<dp>`` (PCA plus a random rotation that spreads the variance evenly
   over PQ sub-vectors and SQ dimensions, the cheap half of OPQ): IVF (``nlist`` ~ sqrt(n)) with
   PQ ``m x nbits`` codes; PQ codes plus a refinement stage inside the reduced space
   (``Refine(SQ8)``, ``RFlat``) re-ranking ``k * k_factor`` candidates; IVF with scalar-quantized
   codes (``SQ4``/``SQ6``/``SQ8``, which train in milliseconds). ``nprobe`` and ``k_factor`` are
   swept upwards; a 4x larger ``nlist`` is tried only for a configuration that reached the recall
   but not the latency limit. Training happens in the reduced space, on a sample if large.
3. **Order and pruning.** SQ8 at the feasible dimensions first (nearly lossless, so a passing
   configuration is known early), then the other cheap SQ probes, then the rest from the smallest
   estimated size up, skipping what cannot be smaller than the best passing configuration and what
   is *dominated* by a failure: no more bits per dimension, in no larger a PCA space, than a
   configuration that missed the recall even scanning every list.
4. **Choice.** The smallest passing IVFPQ configuration tried (``recall@5 >= target`` at
   ``<= max_ms`` per query, one query at a time as the app searches). IVF+SQ indexes are measured
   as probes (they bound what the space can reach and prune the sweep) but never chosen. If none passes within the time budget,
   the best recall is kept and the report says the target was missed.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .index import IndexConfig, _quiet_clustering, pca_eigen, pca_from_eigen, search, set_search_params

DEFAULT_TARGET_RECALL = 0.95
DEFAULT_MAX_MS = 1.0
DEFAULT_TIME_BUDGET_S = 40.0
RECALL_K = 5
PCA_DIMS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 320, 384, 448, 512, 640, 768, 1024, 1536)
CEILING_MARGIN = 0.02  # ceilings are measured up to the first dimension reaching target + this
NPROBES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
K_FACTORS = (2, 4, 8, 16, 32)
SQ_BITS = (4, 6, 8)
MAX_QUERIES = 1000  # held-out queries: recall@5 measured to about +-0.005
TIMING_QUERIES = 200
MAX_PCA_SAMPLE = 20_000  # vectors used for the covariance
MAX_TRAIN = 50_000  # vectors used to train IVF, PQ and SQ


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

    @property
    def config(self) -> IndexConfig:
        return IndexConfig(self.factory, self.nprobe, self.k_factor)

    def passes(self, target_recall: float, max_ms: float) -> bool:
        return self.recall_at_5 >= target_recall and self.ms_per_query is not None and self.ms_per_query <= max_ms


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

    @property
    def fraction_of_flat(self) -> float | None:
        return round(self.final_bytes / self.flat_bytes, 4) if self.flat_bytes and self.final_bytes else None

    def to_json(self) -> dict[str, Any]:
        return {
            "target_recall_at_5": self.target_recall,
            "max_ms_per_query": self.max_ms,
            "queries": self.queries,
            "target_met": self.target_met,
            "chosen": asdict(self.chosen) if self.chosen else None,
            "final_index_bytes": self.final_bytes,
            "flat_bytes": self.flat_bytes,
            "fraction_of_flat": self.fraction_of_flat,
            "pca_recall_ceiling": {str(k): v for k, v in self.pca_ceiling.items()},
            "seconds": round(self.seconds, 2),
            "trials": [asdict(t) for t in self.trials],
            "skipped": self.skipped,
        }


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

    @property
    def factory(self) -> str:
        return f"{self.pre},{self.body}" if self.pre else self.body


# -- exact search ------------------------------------------------------------------------------


def exact_topk(db: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k ids by L2 distance (= the cosine ranking on unit vectors), blockwise."""
    k = min(k, len(db))
    half_norms = 0.5 * np.einsum("ij,ij->i", db, db)
    out = np.empty((len(queries), k), dtype=np.int64)
    for s in range(0, len(queries), 1024):
        sims = queries[s : s + 1024] @ db.T - half_norms  # its argmax is the L2 argmin
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(sims, part, axis=1).argsort(axis=1)[:, ::-1]
        out[s : s + 1024] = np.take_along_axis(part, order, axis=1)
    return out


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of the true top-k found in the returned top-k (order ignored)."""
    k = truth.shape[1]
    hits = sum(len(set(f[f >= 0][:k].tolist()) & set(t.tolist())) for f, t in zip(found, truth))
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


# -- candidates --------------------------------------------------------------------------------


def pq_nbits(n_train: int) -> int:
    """8-bit PQ codes, fewer bits when there are too few vectors to train 256 centroids."""
    return 8 if n_train >= 1024 else max(1, min(8, int(math.log2(max(2, n_train)))))


def ivf_nlist(n: int, n_train: int) -> int:
    """A power of two near sqrt(n), with at least ~8 training vectors per list."""
    nlist = 2 ** int(round(math.log2(max(1.0, math.sqrt(n)))))
    return max(1, min(nlist, n_train // 8))


def pca_dims(n_train: int, d: int) -> list[int]:
    return [p for p in PCA_DIMS if p < d and p < n_train]


def estimate_bytes(n: int, d: int, dp: int, nlist: int, *, pq_m: int = 0, nbits: int = 8, quant: str = "") -> int:
    """The serialized size of an index, to within a few kilobytes of headers."""
    size = (d * dp + dp + d) * 4 if dp < d else 0  # PCA matrix, bias, mean
    size += nlist * dp * 4 + n * 8  # IVF centroids, ids
    if pq_m:
        size += (2**nbits) * dp * 4 + n * math.ceil(pq_m * nbits / 8)  # PQ codebooks and codes
    if quant.startswith("SQ"):
        size += n * math.ceil(dp * int(quant[2:]) / 8) + 2 * dp * 4
    elif quant == "Flat":
        size += n * dp * 4
    return size


def _pq(m: int, nbits: int) -> str:
    # "np": no polysemous training, which costs minutes and only helps Hamming-filtered search.
    return f"PQ{m}np" if nbits == 8 else f"PQ{m}x{nbits}np"


def candidates(n: int, d: int, *, n_train: int | None = None, dims: list[int] | None = None,
               probe_dims: list[int] | None = None) -> list[Candidate]:
    """Every configuration worth trying for ``n`` vectors of dimension ``d``, smallest first.

    ``dims``: the spaces to work in (``d`` itself = no pre-transform); ``probe_dims``: where the
    scalar-quantized candidates count as probes (measured first).
    """
    n_train = n_train or n
    nbits = pq_nbits(n_train)
    nlist = ivf_nlist(n, n_train)
    dims = list(dims) if dims is not None else pca_dims(n_train, d) + [d]
    probe_dims = set(dims if probe_dims is None else probe_dims)
    out: list[Candidate] = []
    for dp in dims:
        pre = f"PCAR{dp}" if dp < d else ""
        ms = sorted({dp // s for s in (16, 8) if 1 <= dp // s <= 256 and dp % (dp // s) == 0})
        for nl in sorted({nlist, min(4 * nlist, max(1, n_train // 8))}):
            base = f"{pre + ',' if pre else ''}IVF{nlist}" if nl != nlist else ""

            def add(body: str, est: int, bpd: float, refine: bool = False, probe: bool = False) -> None:
                out.append(Candidate(dp, pre, f"IVF{nl},{body}", nl, est, bpd, refine, probe,
                                     f"{base},{body}" if base else ""))

            for m in ms:
                add(_pq(m, nbits), estimate_bytes(n, d, dp, nl, pq_m=m, nbits=nbits), m * nbits / dp)
                # Few PQ bytes pick the candidates, an exact-ish stage inside the PCA space re-ranks them.
                add(f"{_pq(m, nbits)},Refine(SQ8)", estimate_bytes(n, d, dp, nl, pq_m=m, nbits=nbits, quant="SQ8"),
                    8.0, refine=True)
            add(f"{_pq(ms[0], nbits)},RFlat", estimate_bytes(n, d, dp, nl, pq_m=ms[0], nbits=nbits, quant="Flat"),
                32.0, refine=True)
            for bits in SQ_BITS:
                add(f"SQ{bits}", estimate_bytes(n, d, dp, nl, quant=f"SQ{bits}"), float(bits),
                    probe=dp in probe_dims and nl == nlist)
    return sorted(out, key=lambda c: (not c.probe, c.est_bytes, c.factory))


# -- the tuner ---------------------------------------------------------------------------------


class _Space:
    """The held-out split, its ground truth and the PCA projections, computed once."""

    def __init__(self, vectors: np.ndarray, n_queries: int | None, seed: int) -> None:
        n, self.d = vectors.shape
        nq = n_queries or int(min(MAX_QUERIES, max(1, n // 8)))
        rng = np.random.default_rng(seed)
        q_idx = np.sort(rng.choice(n, size=min(nq, max(1, n - 1)), replace=False))
        mask = np.ones(n, dtype=bool)
        mask[q_idx] = False
        self.db, self.queries = vectors[mask], vectors[q_idx]
        self.k = min(RECALL_K, len(self.db))
        self.truth = exact_topk(self.db, self.queries, self.k)
        self.timing = self.queries[: min(len(self.queries), TIMING_QUERIES)]
        self.train_idx = np.sort(rng.choice(len(self.db), size=min(len(self.db), MAX_TRAIN), replace=False))
        pca_n = min(len(self.db), MAX_PCA_SAMPLE)
        self.pca_idx = np.sort(rng.choice(len(self.db), size=pca_n, replace=False))
        self.dims = pca_dims(pca_n, self.d)
        self._eigen: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._pcas: dict[int, Any] = {}
        self._proj: dict[int, np.ndarray] = {}

    def eigen(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._eigen is None:
            self._eigen = pca_eigen(self.db[self.pca_idx], max_components=max(self.dims, default=None))
        return self._eigen

    def ceilings(self, target: float) -> dict[int, float]:
        """recall@5 of exact search after PCA to each dimension, up to the first clearly reaching the target."""
        out: dict[int, float] = {}
        if not self.dims:
            return out
        mean, _, vecs = self.eigen()
        mean32 = mean.astype(np.float32)
        db_p = q_p = np.zeros((0, 0), np.float32)
        for dp in self.dims:
            if dp > db_p.shape[1]:  # project in growing blocks: most collections stop early
                hi = next((p for p in self.dims if p >= 2 * dp), self.dims[-1])
                top = np.ascontiguousarray(vecs[:, :hi], dtype=np.float32)
                db_p, q_p = (self.db - mean32) @ top, (self.queries - mean32) @ top
            out[dp] = round(recall_at_k(exact_topk(db_p[:, :dp], q_p[:, :dp], self.k), self.truth), 4)
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
        _quiet_clustering(inner)
        inner.train(np.ascontiguousarray(data[self.train_idx]))
        inner.add(data)
        return faiss.IndexPreTransform(self.pca(cand.dp), inner) if cand.pre else inner


def _sweep(space: _Space, index, cand: Candidate, nbytes: int, train_s: float, target: float) -> list[Trial]:
    """Sweep nprobe (and k_factor) upwards until the recall target is reached; time the last point."""
    import faiss

    try:
        nlist = faiss.extract_index_ivf(index).nlist
    except RuntimeError:
        nlist = 1  # not an IVF index (the sweep's Flat reference)
    nprobes = sorted({p for p in NPROBES if p < nlist} | {nlist})
    trials: list[Trial] = []
    for nprobe in nprobes:
        trial = None
        for kf in K_FACTORS if cand.refine else (1,):
            set_search_params(index, IndexConfig(cand.factory, nprobe, kf))
            rec = recall_at_k(search(index, space.queries, space.k)[1], space.truth)
            trial = Trial(cand.factory, nprobe, round(rec, 4), None, nbytes, round(train_s, 2), kf)
            if rec >= target:
                break
        assert trial is not None
        trials.append(trial)
        if trial.recall_at_5 >= target or nprobe == nprobes[-1]:
            set_search_params(index, trial.config)
            trial.ms_per_query = round(time_queries(index, space.timing, space.k)[1], 4)
            break
    return trials


def tune(
    vectors: np.ndarray,
    *,
    target_recall: float = DEFAULT_TARGET_RECALL,
    max_ms: float = DEFAULT_MAX_MS,
    n_queries: int | None = None,
    seed: int = 0,
    time_budget_s: float = DEFAULT_TIME_BUDGET_S,
) -> tuple[Any, TuneReport]:
    """Pick and build the smallest index meeting the target; returns (index with all vectors, report)."""
    import faiss

    t_start = time.perf_counter()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = vectors.shape
    space = _Space(vectors, n_queries, seed)
    report = TuneReport(target_recall, max_ms, len(space.queries), None, False, flat_bytes=n * d * 4)
    report.pca_ceiling = space.ceilings(target_recall)
    reachable = [dp for dp, rec in report.pca_ceiling.items() if rec >= target_recall]
    unmeasured = [dp for dp in space.dims if dp > max(report.pca_ceiling, default=0)]
    dims = reachable + unmeasured or [d]  # the raw space only when no PCA dimension can do it
    report.skipped = [f"PCA{dp}: exact recall@5 after PCA is {rec} < target"
                      for dp, rec in report.pca_ceiling.items() if rec < target_recall]
    cands = candidates(len(space.db), d, n_train=len(space.train_idx), dims=dims, probe_dims=reachable or [d])

    too_slow: set[str] = set()  # factories that reached the recall, but not within max_ms
    failed: list[Candidate] = []  # missed the recall even scanning every list
    best_index = None
    # Anchors first: SQ8 loses almost nothing to its codes, so at the smallest PCA dimension whose
    # ceiling passes it very likely passes too. A passing anchor bounds the size of everything
    # tried after it; anchors are tried even when a loaded machine has spent the time budget.
    anchors = [c for c in cands if c.probe and c.bits_per_dim == max(SQ_BITS)]
    cands = anchors + [c for c in cands if c not in anchors]
    for cand in cands:
        why = _skip_reason(cand, report.chosen if report.target_met else None, too_slow, failed)
        in_budget = time.perf_counter() - t_start <= time_budget_s or (cand in anchors and not report.target_met)
        if why is None and report.trials and not in_budget:
            why = f"the time budget of {time_budget_s:.0f} s was spent"
        if why:
            if why != "-":
                report.skipped.append(f"{cand.factory}: {why}")
            continue
        t = time.perf_counter()
        try:
            index = space.build(cand)
        except RuntimeError as exc:  # faiss refuses a configuration (e.g. too few training points)
            report.skipped.append(f"{cand.factory}: {str(exc).splitlines()[0][:200]}")
            continue
        train_s = time.perf_counter() - t
        trials = _sweep(space, index, cand, len(faiss.serialize_index(index)), train_s, target_recall)
        report.trials.extend(trials)
        last = trials[-1]
        eligible = is_ivfpq(cand.factory)  # SQ-only indexes are probes: measured, never chosen
        if last.recall_at_5 < target_recall:
            failed.append(cand)
        elif not last.passes(target_recall, max_ms):
            too_slow.add(cand.factory)
        elif eligible and (not report.target_met or last.index_bytes < report.chosen.index_bytes):
            report.chosen, report.target_met, best_index = last, True, index
        if eligible and not report.target_met and (report.chosen is None or _better(last, report.chosen)):
            report.chosen, best_index = last, index

    if best_index is None:  # nothing could be built (cannot happen with >= 2 vectors)
        report.chosen = Trial("Flat", 1, 1.0, None, n * d * 4, 0.0)
        best_index = faiss.index_factory(d, "Flat", faiss.METRIC_L2)
    assert report.chosen is not None
    set_search_params(best_index, report.chosen.config)
    best_index.reset()  # keeps the training; ids become 0..n-1 in collection order
    best_index.add(vectors)
    report.final_bytes = len(faiss.serialize_index(best_index))
    report.seconds = time.perf_counter() - t_start
    return best_index, report


def _skip_reason(cand: Candidate, best: Trial | None, too_slow: set[str], failed: list[Candidate]) -> str | None:
    """Why ``cand`` need not be tried ("-": not worth a line in the report), or None."""
    if cand.base and cand.base not in too_slow:
        return "-"  # a larger nlist only helps latency
    lowest_probe = cand.probe and cand.bits_per_dim == min(SQ_BITS)  # cheap, and its failure prunes others
    if best is not None and cand.est_bytes >= best.index_bytes and not lowest_probe:
        return "-"  # cannot be smaller than the best passing configuration
    for f in failed:  # only plain (not refined) failures: a refined one may have missed on its shortlist
        if not cand.probe and not f.refine and f.dp >= cand.dp and f.bits_per_dim >= cand.bits_per_dim:
            return f"dominated by {f.factory}, which missed the recall scanning every list"
    return None


def is_ivfpq(factory: str) -> bool:
    """The product serves IVFPQ indexes (PQ codes in IVF lists, optionally re-ranked by a refine stage)."""
    return ",IVF" in f",{factory}" and ",PQ" in factory


def _better(a: Trial, b: Trial) -> bool:
    """When nothing passes: higher recall wins, then the smaller index."""
    return (a.recall_at_5, -a.index_bytes) > (b.recall_at_5, -b.index_bytes)
