"""Retrieval quality of re-ranking variants, on the held-out split or leave-one-out (exact search).

* **held-out** (``--split heldout``): every 5th item of each class (in the collection's order) is a
  query and is kept out of the database, out of its index and out of any augmentation: DBA is computed
  on the database rows only, so it never sees a query.
* **leave-one-out** (``--split loo``): every item is a query against all the others. DBA computed on
  the whole collection has seen the query then, so DBA figures on this split are optimistic.

Search is exact (brute-force cosine over the vectors). Each variant is a :class:`RerankVariant`: the
database vectors (raw, or augmented by :func:`app.index.rerank.augment`), the query vectors (raw, or
averaged with their mirror's), the whitening (none, unsupervised, or learned from the database rows' labels:
never from a query's vector or label), and the re-ranking (none, αQE, k-reciprocal). Keys per variant are
those of :func:`app.metrics.retrieval.ranking_metrics`: ``precision_at_5``, ``map_at_10``, ``mhr_at_10``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from app.core.feature_table import features_for
from app.index.faiss_store import read_manifest
from app.index.learned_whiten import LearnedWhitenParams, fit_space
from app.index.rerank import DbaParams, augment, expand_queries, k_reciprocal, normalise, top_k
from app.index.whiten import WhitenParams
from app.metrics.evaluate import table
from app.metrics.retrieval import K, ranking_metrics
from app.service.dba import CATEGORY_KINDS

SPLITS = ("heldout", "loo")
DEFAULT_NAME = "learned whitening + dba n=5 + aqe n=3, raw index (product)"  # what the search path does by default
PCA_NAME = "whitened + dba n=5 + aqe n=3, raw index (product)"  # the default of folder collections
UNWHITENED_NAME = "dba n=5 + aqe n=3, raw index (product)"  # the default before whitening
EVERY = 5


@dataclass(frozen=True)
class RerankVariant:
    name: str
    qe_n: int = 0  # αQE over the top qe_n hits (0: none)
    qe_alpha: float = 3.0
    dba_n: int = 0  # DBA over each database vector's top dba_n (0: raw database)
    dba_alpha: float = 3.0
    mirror_db: bool = False  # database vectors: mean of the image's and its mirror's (build-time cost)
    mirror_query: bool = False  # query vectors too (twice the model cost per query)
    krecip: bool = False  # k-reciprocal re-scoring of the top candidates
    product: bool = False  # as the search path does it: the index holds the raw vectors, the augmented ones
    #                        re-score its candidates (max(4k, k+16) per search, both searches' candidates pooled)
    copies_first: bool = False  # product: order by max(raw cosine, re-ranked score), so a copy stays first
    whiten: WhitenParams | LearnedWhitenParams | None = None  # ordering, DBA and αQE in the whitened space learned
    #                                                           on the database (a learned one: from its labels too)

    def needs_mirror(self) -> bool:
        return self.mirror_db or self.mirror_query


DEFAULT_VARIANTS: tuple[RerankVariant, ...] = (
    RerankVariant("plain"),
    RerankVariant("aqe n=3 a=3", qe_n=3),
    RerankVariant("dba n=3 + aqe n=2", qe_n=2, dba_n=3),
    RerankVariant("dba n=5 + aqe n=3", qe_n=3, dba_n=5),
    RerankVariant("k-reciprocal", krecip=True),
    RerankVariant(UNWHITENED_NAME, qe_n=3, dba_n=5, product=True, copies_first=True),
    RerankVariant("whitened", whiten=WhitenParams()),
    RerankVariant("whitened + aqe n=3", qe_n=3, whiten=WhitenParams()),
    RerankVariant("whitened + dba n=5 + aqe n=3", qe_n=3, dba_n=5, whiten=WhitenParams()),
    RerankVariant(PCA_NAME, qe_n=3, dba_n=5, product=True, copies_first=True, whiten=WhitenParams()),
    RerankVariant("learned whitening", whiten=LearnedWhitenParams()),
    RerankVariant("learned whitening + aqe n=3", qe_n=3, whiten=LearnedWhitenParams()),
    RerankVariant("learned whitening + dba n=5 + aqe n=3", qe_n=3, dba_n=5, whiten=LearnedWhitenParams()),
    RerankVariant(DEFAULT_NAME, qe_n=3, dba_n=5, product=True, copies_first=True, whiten=LearnedWhitenParams()),
)
MIRROR_VARIANTS: tuple[RerankVariant, ...] = (
    RerankVariant("mirror db (asymmetric)", mirror_db=True),
    RerankVariant("mirror db+query", mirror_db=True, mirror_query=True),
    RerankVariant("mirror db + dba n=3 + aqe n=2", mirror_db=True, qe_n=2, dba_n=3),
    RerankVariant("mirror db + dba n=5 + aqe n=3", mirror_db=True, qe_n=3, dba_n=5),
)


def heldout_split(labels: Sequence[Sequence[str]], every: int = EVERY) -> tuple[np.ndarray, np.ndarray]:
    """(query positions, database positions): the ``every``-th item of each class (by its first label,
    in order) is a query; the rest is the database."""
    seen: dict[str, int] = {}
    is_query = np.zeros(len(labels), bool)
    for i, labs in enumerate(labels):
        key = labs[0] if labs else ""
        seen[key] = seen.get(key, 0) + 1
        is_query[i] = seen[key] % every == 0
    return np.flatnonzero(is_query), np.flatnonzero(~is_query)


def _relevant(labels: Sequence[Sequence[str]], q: np.ndarray, db: np.ndarray) -> np.ndarray:
    """How many database items share a label with each query (the query itself excluded)."""
    by_label: dict[str, set[int]] = {}
    for j in db:
        for lab in labels[j]:
            by_label.setdefault(lab, set()).add(int(j))
    out = np.zeros(len(labels), np.int64)
    for i in q:
        found = set().union(*(by_label.get(lab, set()) for lab in labels[i])) if labels[i] else set()
        out[i] = len(found - {int(i)})
    return out


def rank(queries: np.ndarray, db: np.ndarray, v: RerankVariant, *, db_ids: np.ndarray, self_pos: np.ndarray | None,
         k: int = K) -> np.ndarray:
    """Ranked database ids (positions into the collection) for each query under variant ``v``.

    ``db`` holds the database vectors (already augmented/mirrored), ``db_ids`` their positions;
    ``self_pos``: for each query, its own row in ``db`` to leave out (leave-one-out), or None."""
    first = max(k, v.qe_n, 50 if v.krecip else 0)
    sims, ids = top_k(queries, db, first, exclude=self_pos)
    if v.qe_n:
        expanded = expand_queries(queries, db, ids, sims, v.qe_n, v.qe_alpha)
        sims, ids = top_k(expanded, db, k, exclude=self_pos)
    if v.krecip:
        for r in range(len(queries)):
            new = k_reciprocal(sims[r], ids[r], db)
            order = np.argsort(-new, kind="stable")
            ids[r], sims[r] = ids[r][order], new[order]
    return db_ids[ids[:, :k]]


def rank_product(queries: np.ndarray, raw: np.ndarray, aug: np.ndarray, v: RerankVariant, *, db_ids: np.ndarray,
                 self_pos: np.ndarray | None, k: int = K, spaced: tuple[np.ndarray, np.ndarray] | None = None
                 ) -> np.ndarray:
    """:func:`rank` the way :mod:`app.service.requery` searches: candidates from the raw vectors, the
    augmented ones (``aug``) order them and expand the query. ``spaced``: (queries, raw database) in
    the whitened space ``aug`` lives in (the second search then expands the raw query with raw vectors)."""
    c = min(len(raw), max(4 * k, k + 16))
    _, ids = top_k(queries, raw, c, exclude=self_pos)
    qs, own = spaced if spaced is not None else (queries, raw)
    out = np.empty((len(queries), k), np.int64)
    for r, q in enumerate(qs):
        cand = ids[r][ids[r] >= 0]
        sc = aug[cand] @ q
        if v.qe_n:
            top = np.argsort(-sc, kind="stable")[: v.qe_n]
            e = expand_queries(q[None], aug, cand[top][None], sc[top][None], v.qe_n, v.qe_alpha)
            probe = e if spaced is None else expand_queries(queries[r][None], raw, cand[top][None],
                                                            (raw[cand[top]] @ queries[r])[None], v.qe_n, v.qe_alpha)
            _, more = top_k(probe, raw, c, exclude=None if self_pos is None else self_pos[r : r + 1])
            cand = np.array(list(dict.fromkeys(cand.tolist() + [int(i) for i in more[0] if i >= 0])), np.int64)
            sc = aug[cand] @ e[0]
        if v.copies_first:
            sc = np.maximum(sc, own[cand] @ q)
        out[r] = cand[np.argsort(-sc, kind="stable")[:k]]
    return db_ids[out]


def evaluate_variants(raw: np.ndarray, labels: Sequence[Sequence[str]], *, split: str = "heldout",
                      variants: Sequence[RerankVariant] = DEFAULT_VARIANTS, mirror: np.ndarray | None = None,
                      k: int = K, augmented: np.ndarray | None = None, live: np.ndarray | None = None,
                      whitening: Any = None) -> dict[str, Any]:
    """P@5, mAP@10, mHR@10 of each variant on ``split`` (see the module docstring).

    ``augmented``: the database's DBA vectors, given (rows as ``raw``; e.g. kept up to date incrementally)
    instead of computed here; ``whitening``: the :class:`~app.index.whiten.Whitening` they live in (used by
    the whitened variants instead of one learned here); ``live``: rows left out of the database (deleted) are False."""
    raw = normalise(raw)
    if split == "heldout":
        q_pos, db_pos = heldout_split(labels)
    elif split == "loo":
        q_pos, db_pos = np.arange(len(raw)), np.arange(len(raw))
    else:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if live is not None:
        db_pos = db_pos[np.asarray(live, bool)[db_pos]]
    n_rel = _relevant(labels, q_pos, db_pos)
    self_pos = np.searchsorted(db_pos, q_pos) if split == "loo" else None
    avg = normalise(raw + mirror) if mirror is not None else None
    cache: dict[tuple, np.ndarray] = {}
    spaces: dict[tuple, Any] = {}
    out: dict[str, Any] = {}
    for v in variants:
        if v.needs_mirror() and avg is None:
            continue
        base = (avg if v.mirror_db else raw)[db_pos]
        skey = (v.mirror_db, v.whiten)
        if skey not in spaces:  # learned on the database rows only: never on a query
            spaces[skey] = None if v.whiten is None else whitening if whitening is not None else \
                fit_space(base, v.whiten, [labels[i] for i in db_pos])
        space = spaces[skey]
        key = (v.mirror_db, v.dba_n, v.dba_alpha, v.whiten)
        if key not in cache:
            db = base if space is None else space.apply(base)
            if v.dba_n and augmented is not None:
                cache[key] = np.asarray(augmented, np.float32)[db_pos]
            else:
                cache[key] = augment(db, None, DbaParams(v.dba_n, v.dba_alpha))[0] if v.dba_n else db
        queries = (avg if v.mirror_query else raw)[q_pos]
        if v.product:
            spaced = None if space is None else (space.apply(queries), space.apply(base))
            ranked = rank_product(queries, base, cache[key], v, db_ids=db_pos, self_pos=self_pos, k=k, spaced=spaced)
        else:
            ranked = rank(queries if space is None else space.apply(queries), cache[key], v, db_ids=db_pos,
                          self_pos=self_pos, k=k)
        out[v.name] = ranking_metrics(ranked.tolist(), q_pos, [tuple(lab) for lab in labels], n_rel, k)
    return {"split": split, "queries": int(len(q_pos)), "database": int(len(db_pos)), "k": k,
            "search": "exact", "variants": out}


def format_variants(r: dict[str, Any]) -> str:

    what = ("held-out: every 5th item of each class is a query, kept out of the database and its augmentation"
            if r["split"] == "heldout" else "leave-one-out (DBA has seen the query: optimistic for DBA rows)")
    rows = [(name, m["precision_at_5"], m["map_at_10"], m["mhr_at_10"]) for name, m in r["variants"].items()]
    head = f"Re-ranking variants, {what}; {r['queries']} queries, {r['database']} in the database, exact search"
    return head + "\n" + table(("variant", "P@5", "mAP@10", "mHR@10"), rows)


def evaluate_collection_variants(config: Any, name: str, *, split: str = "heldout", rerank: bool = True,
                                 variants: Sequence[RerankVariant] | None = None) -> dict[str, Any]:
    """:func:`evaluate_variants` on the stored (raw) vectors of a built collection's valid items; no model is run.
    ``rerank=False``: the plain variant only. The result names the search path's default variant."""

    manifest = read_manifest(config.indexes_dir, name)
    vectors, table = features_for(config.features_dir, manifest.with_(name=name))
    live = table.live_ids()
    labels = [tuple(table.labels[i]) for i in live]
    chosen = list(variants if variants is not None else DEFAULT_VARIANTS)
    if not rerank:
        chosen = [v for v in chosen if v.name == "plain"]
    result = evaluate_variants(np.asarray(vectors, dtype=np.float32)[live], labels, split=split, variants=chosen)
    return {"collection": name, "count": int(len(live)), "model": manifest.model_name,
            "weights_id": manifest.weights_id, "untrained": "untrained" in manifest.weights_id,
            "default": (default_variant(table.kind) if rerank else "plain"), **result}


def default_variant(kind: str) -> str:
    """The variant the search path runs for a collection of ``kind``: the learned whitening for a category
    dataset, the unsupervised one for folders (:data:`app.service.dba.CATEGORY_KINDS`)."""
    return DEFAULT_NAME if kind in CATEGORY_KINDS else PCA_NAME
