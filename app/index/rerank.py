"""Re-ranking of cosine search results: alpha query expansion (αQE) and database-side augmentation (DBA).

Pure functions over L2-normalised float32 vectors (numpy only; no index, no files, no model):

* :func:`expand_query` (αQE, Radenović et al.): the query plus its top ``n`` hits, each weighted by
  its similarity to the query raised to ``alpha``, normalised again. Searching with it is one more
  index search.
* :func:`augment` (αDBA): the same applied to every stored vector once, over its own top ``n``
  neighbours (itself included, weight 1). :func:`augment_update` keeps augmented vectors exact under
  added and deleted rows by recomputing only the rows whose neighbour list can have changed: a row is
  affected when an added or a deleted vector is at least as similar to it as its ``n``-th neighbour
  (``thresholds``, kept beside the augmented vectors).
* :func:`k_reciprocal` (a cheap k-reciprocal re-ranking among the candidates, for measurement).

:class:`RerankOptions` is the switch the search path takes (``RerankOptions.off()``: raw neighbours).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHUNK = 1024  # rows of a similarity block (CHUNK x N float32)


@dataclass(frozen=True)
class RerankOptions:
    """How a search re-ranks: ``qe_n`` top hits expand the query (0: no expansion), weighted by sim^``qe_alpha``."""

    qe_n: int = 3
    qe_alpha: float = 3.0

    @property
    def enabled(self) -> bool:
        return self.qe_n > 0

    @classmethod
    def off(cls) -> "RerankOptions":
        return cls(qe_n=0)


@dataclass(frozen=True)
class DbaParams:
    """Database-side augmentation: each vector averaged with its top ``n`` neighbours (itself included), sim^``alpha``."""

    n: int = 5
    alpha: float = 3.0


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def weights(sims: np.ndarray, alpha: float) -> np.ndarray:
    """sim^alpha, with negative similarities weighing nothing."""
    return np.power(np.clip(np.asarray(sims, dtype=np.float32), 0.0, None), alpha)


def expand_query(query: np.ndarray, neighbours: np.ndarray, sims: np.ndarray, alpha: float) -> np.ndarray:
    """αQE: ``query`` (d,) + sum of ``neighbours`` (n, d) weighted by ``sims`` (n,) ** alpha, normalised."""
    q = np.asarray(query, dtype=np.float32)
    if len(neighbours) == 0:
        return normalise(q)
    w = weights(sims, alpha)
    return normalise(q + w @ np.asarray(neighbours, dtype=np.float32))


def expand_queries(queries: np.ndarray, db: np.ndarray, ids: np.ndarray, sims: np.ndarray, n: int,
                   alpha: float) -> np.ndarray:
    """:func:`expand_query` for a batch: ``ids``/``sims`` (m, >= n) are each query's ranked hits in ``db``."""
    q = np.asarray(queries, dtype=np.float32)
    if n <= 0:
        return normalise(q)
    ids, sims = np.asarray(ids)[:, :n], np.asarray(sims, dtype=np.float32)[:, :n]
    w = weights(sims, alpha) * (ids >= 0)
    nb = np.asarray(db, dtype=np.float32)[np.clip(ids, 0, None)]  # (m, n, d)
    return normalise(q + np.einsum("mn,mnd->md", w, nb))


def top_k(queries: np.ndarray, db: np.ndarray, k: int, *, mask: np.ndarray | None = None,
          exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top ``k`` by inner product: (sims, ids), best first. ``mask``: db rows that may be found;
    ``exclude``: for each query, one db row it may not find (-1: none)."""
    q = np.asarray(queries, dtype=np.float32)
    d = np.asarray(db, dtype=np.float32)
    k = min(k, len(d))
    out_s = np.full((len(q), k), -np.inf, dtype=np.float32)
    out_i = np.full((len(q), k), -1, dtype=np.int64)
    if k == 0:
        return out_s, out_i
    for s in range(0, len(q), CHUNK):
        sims = q[s : s + CHUNK] @ d.T
        if mask is not None:
            sims[:, ~mask] = -np.inf
        if exclude is not None:
            ex = np.asarray(exclude[s : s + CHUNK])
            rows = np.flatnonzero(ex >= 0)
            sims[rows, ex[rows]] = -np.inf
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        ps = np.take_along_axis(sims, part, axis=1)
        order = np.lexsort((part, -ps), axis=1)  # by similarity, ties by id: the same on every run
        out_i[s : s + CHUNK] = np.take_along_axis(part, order, axis=1)
        out_s[s : s + CHUNK] = np.take_along_axis(ps, order, axis=1)
    out_i[~np.isfinite(out_s)] = -1
    return out_s, out_i


# -- database-side augmentation -----------------------------------------------------------------


def _augment_rows(raw: np.ndarray, rows: np.ndarray, live: np.ndarray, p: DbaParams) -> tuple[np.ndarray, np.ndarray]:
    """(augmented vectors, thresholds) of ``rows``, their neighbours taken among the ``live`` rows of ``raw``."""
    sims, ids = top_k(raw[rows], raw, p.n, mask=live)
    # A row is its own first neighbour: put it there even when a duplicate ties with it.
    own = np.asarray(rows)[:, None]
    if p.n > 0:
        others = ids != own
        keep = np.argsort(~others, axis=1, kind="stable")[:, : p.n - 1]
        ids = np.concatenate([own, np.take_along_axis(ids, keep, axis=1)], axis=1)
        sims = np.concatenate([np.ones((len(rows), 1), np.float32), np.take_along_axis(sims, keep, axis=1)], axis=1)
    aug = expand_queries(np.zeros((len(rows), raw.shape[1]), np.float32), raw, ids, sims, p.n, p.alpha)
    thresholds = np.where(ids[:, -1] >= 0, sims[:, -1], -np.inf).astype(np.float32) if p.n > 1 else \
        np.full(len(rows), np.inf, np.float32)
    return aug, thresholds


def augment(raw: np.ndarray, live: np.ndarray | None = None, params: DbaParams = DbaParams()
            ) -> tuple[np.ndarray, np.ndarray]:
    """αDBA of every row of ``raw`` (N, d): (augmented (N, d), thresholds (N,)).

    Rows outside ``live`` (deleted) keep their raw vector and threshold +inf; they are nobody's neighbour.
    ``thresholds[i]``: the similarity of row i's ``n``-th neighbour (what :func:`augment_update` compares with).
    """
    raw = np.asarray(raw, dtype=np.float32)
    live = np.ones(len(raw), bool) if live is None else np.asarray(live, bool)
    aug = raw.copy()
    thresholds = np.full(len(raw), np.inf, np.float32)
    rows = np.flatnonzero(live)
    for s in range(0, len(rows), CHUNK):
        r = rows[s : s + CHUNK]
        aug[r], thresholds[r] = _augment_rows(raw, r, live, params)
    return aug, thresholds


def affected_rows(raw: np.ndarray, thresholds: np.ndarray, live_before: np.ndarray, changed: np.ndarray,
                  *, margin: float = 1e-5) -> np.ndarray:
    """Rows valid before a change whose top-n neighbour list can change when rows ``changed`` are added
    or deleted: those to which a changed vector is at least as similar as their ``n``-th neighbour."""
    changed = np.asarray(changed, dtype=np.int64)
    if len(changed) == 0:
        return np.zeros(0, np.int64)
    rows = np.flatnonzero(live_before)
    hit = np.zeros(len(raw), bool)
    for s in range(0, len(rows), CHUNK):
        r = rows[s : s + CHUNK]
        sims = np.asarray(raw[r], dtype=np.float32) @ np.asarray(raw[changed], dtype=np.float32).T
        hit[r] = (sims >= (thresholds[r] - margin)[:, None]).any(axis=1)
    return np.flatnonzero(hit)


def augment_update(raw: np.ndarray, aug: np.ndarray, thresholds: np.ndarray, live_before: np.ndarray,
                   live_after: np.ndarray, params: DbaParams = DbaParams()
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The augmented vectors after rows were added (valid after, not before; appended to ``raw``) and deleted
    (valid before, not after): (augmented, thresholds, recomputed rows). Equal to :func:`augment` on
    ``live_after``: only the added rows and the :func:`affected_rows` are recomputed.

    ``aug`` and ``thresholds`` describe the rows before the change (``len(aug) <= len(raw)``)."""
    raw = np.asarray(raw, dtype=np.float32)
    n = len(raw)
    before = np.zeros(n, bool)
    before[: len(live_before)] = live_before
    after = np.asarray(live_after, bool)
    out = raw.copy()
    out[: len(aug)] = aug
    th = np.full(n, np.inf, np.float32)
    th[: len(thresholds)] = thresholds
    added, deleted = np.flatnonzero(after & ~before), np.flatnonzero(before & ~after)
    out[deleted], th[deleted] = raw[deleted], np.inf
    touched = affected_rows(raw, th, before & after, np.concatenate([added, deleted]))
    rows = np.union1d(added, touched).astype(np.int64)
    for s in range(0, len(rows), CHUNK):
        r = rows[s : s + CHUNK]
        out[r], th[r] = _augment_rows(raw, r, after, params)
    return out, th, rows


# -- k-reciprocal re-ranking (measured; not on the search path) ---------------------------------


def k_reciprocal(query_sims: np.ndarray, cand: np.ndarray, db: np.ndarray, k1: int = 10,
                 weight: float = 0.3) -> np.ndarray:
    """Re-score candidates ``cand`` (c,) of one query: the cosine (``query_sims``, (c,)) blended with the
    Jaccard overlap of the query's top ``k1`` and each candidate's top ``k1`` among the candidates that
    are mutual (k-reciprocal) neighbours. Returns the new scores (higher is better)."""
    c = np.asarray(db, dtype=np.float32)[cand]
    cc = c @ c.T  # candidate x candidate
    k1 = min(k1, len(cand))
    q_top = set(np.argsort(-query_sims)[:k1].tolist())
    tops = np.argsort(-cc, axis=1)[:, : k1 + 1]
    mutual = [{j for j in tops[i] if i in tops[j]} for i in range(len(cand))]
    jac = np.array([len(q_top & m) / max(1, len(q_top | m)) for m in mutual], dtype=np.float32)
    return (1 - weight) * np.asarray(query_sims, np.float32) + weight * jac
