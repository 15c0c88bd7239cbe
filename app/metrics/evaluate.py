"""Retrieval quality of a built collection, and the size/speed/recall of its approximate index.

``scripts/evaluate.py`` is a thin command line around :func:`evaluate_collection`.

* **Leave-one-out.** Every item (or a seeded sample) is a query against the rest of its own
  collection, excluding itself. An item is relevant when it shares a label with the query: the
  category for Caltech101, at least one object class for VOC2012 (whose labels are tuples).
* **Exact** ranks by brute-force cosine over the stored vectors; **ANN** is the product path,
  :meth:`SearchService.search_item` (the faiss index picks candidates, exact cosines re-rank them).
* At K = 10: ``map_at_10`` (average precision over the top 10, normalised by
  ``min(relevant available, 10)``), ``mhr_at_10`` (relevant found in the top 10 over the relevant
  available, capped at 10) and ``precision_at_5``. Queries with no relevant item are left out.
* **Index quality** on the collection's own vectors: ``ann_recall_at_5`` (index top 5 vs exact top
  5, leave-one-out), ``index_bytes`` vs ``flat_bytes``, ``search_ms_per_query`` (one query at a time).
* ``sweep``: recall@5 / latency / size for a grid of index configurations, measured the way the
  tuner measures them (held-out queries), with the old demo's ``IVF100,PQ8`` at nprobe 1 as a
  reference row.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from app.config import Config
from app.core.feature_table import features_for
from app.core.manifest import Manifest
from app.errors import IndexMismatchError, IndexMissingError
from app.index.faiss_index import PCA_RE, IndexConfig, set_search_params
from app.index.faiss_index import search as index_search
from app.index.faiss_store import index_config, load_index, read_manifest, save_index
from app.index.faiss_update import fill_index
from app.index.store import VectorStore
from app.index.tune import ivf_nlist, tune
from app.index.tune_space import Candidate, Space, recall_at_k, time_queries
from app.metrics.retrieval import K, exact_neighbours, ranking_metrics, relevant_counts
from app.service.build import BuildSpec, build_collection
from app.service.search import SearchService


def _drop_self(ids: Sequence[int], self_id: int, k: int) -> list[int]:
    return [int(i) for i in ids if int(i) != self_id and int(i) >= 0][:k]


def index_recall(store: VectorStore, vectors: np.ndarray, query_ids: np.ndarray, k: int = 5) -> tuple[float, float]:
    """(recall@k of the store vs exact search, median ms per single query), leave-one-out."""
    truth = exact_neighbours(vectors, query_ids, k)
    hits, times = 0, []
    for row, q in enumerate(query_ids):
        t = time.perf_counter()
        _, ids = store.search(np.asarray(vectors[q : q + 1], dtype=np.float32), k + 1)
        times.append(time.perf_counter() - t)
        hits += len(set(_drop_self(ids[0], int(q), k)) & set(truth[row].tolist()))
    return round(hits / float(truth.size), 4), round(float(np.median(times)) * 1000.0, 4)


# -- evaluating a collection ---------------------------------------------------------------------


class _Positions:
    """A store whose search answers positions among the valid items instead of row ids (-1: not valid)."""

    def __init__(self, store: VectorStore, pos_of: dict[int, int]) -> None:
        self.store, self.pos_of = store, pos_of

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        dist, ids = self.store.search(queries, k)
        return dist, np.vectorize(lambda i: self.pos_of.get(int(i), -1), otypes=[np.int64])(ids)


def evaluate_collection(config: Config, name: str, *, queries: int | None = None, seed: int = 0,
                        sweep: bool = False, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Leave-one-out quality (exact and product path) plus index quality; see the module docstring."""

    service = SearchService(config)
    col = service.collection(name)
    # Positions 0..n-1 over the valid items (a collection with deletions keeps tombstoned rows).
    live = np.asarray(col.live_ids, dtype=np.int64)
    pos_of = {int(i): p for p, i in enumerate(live)}
    vectors = np.asarray(col.vectors, dtype=np.float32)[live]
    labels = [col.table.labels[i] for i in live]
    n = len(vectors)
    rng = np.random.default_rng(seed)
    query_ids = np.arange(n) if not queries or queries >= n else np.sort(rng.choice(n, queries, replace=False))
    n_rel = relevant_counts(labels)

    t = time.perf_counter()
    exact = exact_neighbours(vectors, query_ids, K)
    exact_s = time.perf_counter() - t
    t = time.perf_counter()
    ann_ranked = [_drop_self([pos_of[h.id] for h in service.search_item(name, int(live[q]), K + 1).hits], int(q), K)
                  for q in query_ids]
    ann_s = time.perf_counter() - t
    timing_ids = query_ids if len(query_ids) <= 1000 else np.sort(rng.choice(query_ids, 1000, replace=False))
    recall5, ms = index_recall(_Positions(col.store, pos_of), vectors, timing_ids, 5)
    m = col.manifest
    ann = ranking_metrics(ann_ranked, query_ids, labels, n_rel)
    result: dict[str, Any] = {
        "collection": name,
        "count": n,
        "queries": int(len(query_ids)),
        "k": K,
        "model": m.model_name,
        "weights_id": m.weights_id,
        "untrained": "untrained" in m.weights_id,
        "exact": ranking_metrics(exact, query_ids, labels, n_rel),
        "ann": ann,
        "map_at_10": ann["map_at_10"],
        "mhr_at_10": ann["mhr_at_10"],
        "precision_at_5": ann["precision_at_5"],
        "ann_recall_at_5": recall5,
        "index_bytes": m.index_bytes,
        "flat_bytes": int(n * vectors.shape[1] * 4),
        "index_fraction_of_flat": round(m.index_bytes / float(n * vectors.shape[1] * 4), 4),
        "search_ms_per_query": ms,
        "index": {"factory": m.factory, "nprobe": m.nprobe, "k_factor": m.k_factor,
                  "tuning": {k: m.tuning.get(k) for k in ("target_met", "chosen", "seconds")}},
        "seconds": {"exact": round(exact_s, 2), "ann": round(ann_s, 2)},
    }
    if sweep:
        result["sweep"] = sweep_configs(vectors, index_config(m), log=log)
    return result


# -- the sweep ---------------------------------------------------------------------------------


def sweep_grid(n: int, d: int, tuned: IndexConfig | None = None) -> list[tuple[str, tuple[int, ...], int, str]]:
    """(factory, nprobes, k_factor, note) rows of the sweep for ``n`` vectors of dimension ``d``
    (plus the ``tuned`` configuration, when given and not already a row)."""

    nlist = ivf_nlist(n, n)
    rows: list[tuple[str, tuple[int, ...], int, str]] = [
        ("Flat", (1,), 1, "exact reference"),
        ("IVF100,PQ8np", (1, 16), 1, "the old demo's IVF100,PQ8 (np: the same codes without polysemous training)"),
    ]
    dims = [dp for dp in (128, 256, 512) if dp < d]
    chosen = tuned.factory if tuned else ""
    if chosen.startswith("PCAR"):
        dp = int(chosen.split(",")[0][4:])
        dims = sorted(set(dims) | {dp})
    probes = tuple(p for p in (4, 16, nlist) if p <= nlist)
    for dp in dims:
        pre = f"PCAR{dp},IVF{nlist}"
        rows += [(f"{pre},SQ8", probes, 1, ""), (f"{pre},SQ6", (16,), 1, ""), (f"{pre},SQ4", (16,), 1, ""),
                 (f"{pre},PQ{dp // 8}np", (16,), 1, ""), (f"{pre},PQ{dp // 16}np,Refine(SQ8)", (16,), 8, "")]
    if tuned and chosen and not any((f, kf) == (chosen, tuned.k_factor) and tuned.nprobe in probes_
                                    for f, probes_, kf, _ in rows):
        rows.append((chosen, (tuned.nprobe,), tuned.k_factor, "tuned"))
    return rows


def sweep_configs(vectors: np.ndarray, tuned: IndexConfig | None = None, *, seed: int = 0,
                  log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Measure each row of :func:`sweep_grid` on the tuner's held-out split of ``vectors`` (the row of
    the ``tuned`` configuration is noted as the tuned choice)."""
    import faiss


    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    space = Space(vectors, None, seed)
    n, d = vectors.shape
    flat = len(space.db) * d * 4
    chosen = (tuned.factory, tuned.nprobe, tuned.k_factor) if tuned else None
    out: list[dict[str, Any]] = []
    for factory, nprobes, kf, note in sweep_grid(len(space.db), d, tuned):
        m = PCA_RE.match(factory)
        dp, pre, body = (int(m.group(2)), f"{m.group(1)}{m.group(2)}", m.group(3)) if m else (d, "", factory)
        t = time.perf_counter()
        try:
            index = space.build(Candidate(dp, pre, body, 0, 0, 8.0, refine="Refine" in body))
        except RuntimeError as exc:
            if log:
                log(f"sweep: {factory} failed: {exc}")
            continue
        train_s = time.perf_counter() - t
        nbytes = len(faiss.serialize_index(index))
        for nprobe in nprobes:
            set_search_params(index, IndexConfig(factory, nprobe, kf))
            rec = recall_at_k(index_search(index, space.queries, space.k)[1], space.truth)
            _, ms = time_queries(index, space.timing, space.k)
            tuned = (factory, nprobe, kf) == chosen
            out.append({"factory": factory, "nprobe": nprobe, "k_factor": kf, "recall_at_5": round(rec, 4),
                        "ms_per_query": round(ms, 4), "bytes": nbytes, "pct_of_flat": round(100.0 * nbytes / flat, 2),
                        "train_s": round(train_s, 2), "note": "tuned choice" if tuned else note})
        if log:
            log(f"sweep: {factory} done in {time.perf_counter() - t:.1f} s")
    return out


# -- making sure a collection exists -------------------------------------------------------------


def ensure_collection(config: Config, *, name: str, kind: str, data: str | Path | None, limit: int | None = None,
                      include: tuple[str, ...] = (), progress_bar: bool = False) -> Manifest:
    """Return the manifest of ``name``, building the collection from ``data`` when it is not built."""

    try:
        return SearchService(config).collection(name).manifest
    except IndexMissingError:
        if data is None:
            raise

    spec = BuildSpec(kind=kind, data=data, name=name, limit=limit, include=include)
    return build_collection(config, spec, progress_bar=progress_bar).manifest


def retune_collection(config: Config, name: str, **tune_args: Any) -> Manifest:
    """Tune and save the index of ``name`` again from its stored features (no images are read)."""

    old = read_manifest(config.indexes_dir, name)
    vectors, table = features_for(config.features_dir, old.with_(name=name), mmap=False)
    if table.weights_id != old.weights_id or table.live_count != old.count:
        raise IndexMismatchError(f"The features of {name} do not match its manifest; rebuild the collection.")
    live = table.live_ids()
    index, report = tune(vectors[live], **tune_args)
    assert report.chosen is not None
    if len(live) != len(table):  # deleted rows keep their ids: the valid ones go back in under theirs
        index.reset()
        index = fill_index(index, vectors, live)
        set_search_params(index, report.chosen.config)
    chosen = report.chosen
    fields = old.with_(factory=chosen.factory, nprobe=chosen.nprobe, k_factor=chosen.k_factor, tuning=report.to_json(),
                       trained_count=len(live), updates_since_training=0, generation=old.generation + 1,
                       index_rows=len(table), index_count=None)  # the new index holds every valid row
    # the counts, sizes and checksum: of the new index; a new generation's file, then the manifest
    manifest = save_index(index, config.indexes_dir, name, fields, generation=old.generation + 1)
    old_file = config.indexes_dir / old.index_file if old.index_file else None
    if old_file is not None and old_file.name != manifest.index_file:
        old_file.unlink(missing_ok=True)
    load_index(config.indexes_dir, name, weights_id=old.weights_id)  # what was written loads back
    return manifest


# -- printing ----------------------------------------------------------------------------------


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain fixed-width text table."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_result(r: dict[str, Any]) -> str:
    """The human-readable report of :func:`evaluate_collection`."""
    q = r["queries"]
    lines = [f"Retrieval quality: {r['collection']} ({r['count']} images, model {r.get('model')}), leave-one-out, "
             f"{q} queries, K={r['k']}"]
    rows = [(name, r[key]["map_at_10"], r[key]["mhr_at_10"], r[key]["precision_at_5"])
            for name, key in (("exact (brute-force cosine)", "exact"), ("ANN (product path)", "ann"))]
    lines.append(table(("search", "mAP@10", "mHR@10", "P@5"), rows))
    ix = r["index"]
    lines.append(
        f"\nIndex: {ix['factory']} nprobe={ix['nprobe']}"
        + (f" k_factor={ix['k_factor']}" if ix.get("k_factor", 1) != 1 else "")
        + f" | recall@5 vs exact {r['ann_recall_at_5']} | {r['index_bytes'] / 1e6:.2f} MB = "
        f"{100 * r['index_fraction_of_flat']:.1f}% of flat ({r['flat_bytes'] / 1e6:.1f} MB) | "
        f"{r['search_ms_per_query']:.3f} ms/query"
    )
    if r.get("untrained"):
        lines.append("note: UNTRAINED weights: these numbers measure the index and the pipeline, not the model.")
    if r.get("sweep"):
        lines.append("\nIndex sweep (recall@5 vs exact on held-out queries; one query at a time):")
        rows = [(s["factory"] + (f" k_factor={s['k_factor']}" if s["k_factor"] != 1 else ""), s["nprobe"],
                 f"{s['recall_at_5']:.3f}", f"{s['ms_per_query']:.3f}", f"{s['bytes']:,}", f"{s['pct_of_flat']:.1f}%",
                 s["note"]) for s in r["sweep"]]
        lines.append(table(("factory", "nprobe", "recall@5", "ms/query", "bytes", "% of flat", "note"), rows))
    return "\n".join(lines)
