"""The scale benchmark (``python scripts/bench_scale.py``, ``python -m app.cli bench-scale``): what the app's own
code paths do with a collection of N photos, at several N.

At each N a synthetic collection (:mod:`app.metrics.scale_data`: a built collection's real vectors repeated
with seeded noise, synthetic paths and stamps) is written with the app's store, the way a full build does
after embedding: the index is chosen and trained by :func:`app.service.build.make_index` (the tuner), the
table, vectors and index are committed by :meth:`~app.service.collection_store.CollectionStore.commit`, and
DBA is computed as a build does (``--no-dba``: left out). Then:

* **startup**: a fresh process (:mod:`app.metrics.scale_probe`) opens a ``SearchService`` and answers one query
  by vector; *cold* after evicting the collection's files from the page cache
  (``posix_fadvise(POSIX_FADV_DONTNEED)``), *warm* right after (the median of ``--startup-runs``);
* **queries**: real vectors of the source (the *real subset*), one at a time through ``search_vector``
  (index candidates, exact re-scoring, αQE on as by default, and off); p50 and p99 in ms;
* **memory**: the searching process's RSS after its queries; the index's bytes per vector (its serialized
  size, which is what faiss holds in RAM);
* **recall@5**: against exact search over the whole N, αQE off; each query's own row (it is in the
  collection) is left out of both lists;
* **add 100 / delete 100**: ``add_paths`` with 100 generated JPEGs (the vectors are supplied, noisy copies of
  real ones: no model runs) and ``delete_items(ids=...)`` of 100 synthetic rows; the time, this process's
  bytes written to storage (``write_bytes`` of ``/proc/self/io``), the size of the files the change wrote, and the bytes
  written as a fraction of the table and vectors files.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from app.config import Config
from app.errors import DatasetError
from app.index.tune import recall_at_k
from app.index.tune_large import exact_top
from app.metrics import scale_data as sd
from app.metrics.scale_probe import spawn_probe

NAME = "scale"
DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
MIN_SIZE = 1000
CHANGE = 100  # photos added, then deleted
TARGETS = {  # at the largest N: key, comparison, limit
    "query_p50_ms": ("<=", 5.0),
    "index_bytes_per_vector": ("<=", 128.0),
    "recall_at_5": (">=", 0.95),
    "startup_warm_s": ("<=", 3.0),
    "add100_fraction": ("<=", 0.01),
}


@dataclass(frozen=True)
class ScaleOptions:
    config: Config  # where the source collection is (--indexes/--features), and the run's settings
    source: str = "caltech101"
    sizes: tuple[int, ...] = DEFAULT_SIZES
    work: Path | None = None  # None: a temporary folder
    keep: bool = False
    seed: int = 0
    sigma: float = 0.03  # copies then lie about as near their original as its 5th real neighbour (Lite0: 0.68)
    queries: int = 200
    startup_runs: int = 3
    dba: bool = True
    factory: str | None = None  # a fixed index instead of the tuner
    nprobe: int | None = None


def sizes_from(n: int | None, sizes: str | None) -> tuple[int, ...]:
    """The sizes to measure: ``sizes`` (comma-separated) or the defaults, up to and including ``n``."""
    try:
        listed = [int(s.replace("_", "")) for s in sizes.split(",") if s.strip()] if sizes else list(DEFAULT_SIZES)
    except ValueError:
        raise DatasetError(f"--sizes {sizes!r} is not a comma-separated list of numbers.") from None
    if n is not None:
        listed = [s for s in listed if s < n] + [n]
    out = tuple(sorted(set(listed)))
    if not out or out[0] < MIN_SIZE:
        raise DatasetError(f"Every size must be at least {MIN_SIZE} (got {', '.join(map(str, out)) or 'none'}).")
    return out


def run_scale(opts: ScaleOptions, log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Measure every size of ``opts`` (module docstring); the work folder is removed unless ``opts.keep``."""
    t0 = time.perf_counter()
    source = sd.load_source(opts.config, opts.source)
    work = Path(opts.work) if opts.work else Path(tempfile.mkdtemp(prefix="bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    log(f"source: {source.name}, {len(source.vectors)} real vectors of {source.dim} ({source.model}); work: {work}")
    results, cosines = [], {}
    try:
        for n in opts.sizes:
            vectors = sd.noisy_vectors(source, n, seed=opts.seed, sigma=opts.sigma, cache=work / "cache")
            cosines[n] = sd.copy_cosines(source, vectors, seed=opts.seed)
            results.append(measure_size(opts, source, vectors, work / f"n{n}", log))
            if not opts.keep:
                shutil.rmtree(work / f"n{n}", ignore_errors=True)
    finally:
        if not opts.keep and opts.work is None:
            shutil.rmtree(work, ignore_errors=True)
    mean_cos = [c for c in cosines.values() if c is not None]
    return {
        "source": {"collection": source.name, "real_vectors": len(source.vectors), "dim": source.dim,
                   "model": source.model, "weights_id": source.weights_id},
        "vectors": {"how": "the source's real vectors, then copies of them with seeded Gaussian noise, "
                           "re-normalised to unit length; paths and stamps synthetic",
                    "seed": opts.seed, "noise_sigma": opts.sigma, "noise_scale_per_copy": list(sd.NOISE_SPREAD),
                    "mean_cosine_copy_to_origin": round(float(np.mean(mean_cos)), 4) if mean_cos else None},
        "settings": {"queries": opts.queries, "startup_runs": opts.startup_runs, "dba": opts.dba,
                     "factory": opts.factory or "tuned", "work": str(work), "kept": opts.keep},
        "results": results,
        "targets": check_targets(results[-1]) if results else {},
        "total_s": round(time.perf_counter() - t0, 1),
    }


def measure_size(opts: ScaleOptions, source: sd.SourceVectors, vectors: np.ndarray, root: Path,
                 log: Callable[[str], None]) -> dict[str, Any]:
    """Every figure at one N (module docstring)."""
    from app.metrics.scale_build import write_collection

    n = len(vectors)
    if root.exists():
        shutil.rmtree(root)
    cfg = opts.config.with_(indexes_dir=root / "indexes", features_dir=root / "features", model=source.model,
                            weights=source.weights_arg)
    out: dict[str, Any] = {"n": n}
    log(f"N={n}: writing the collection (index, commit{', DBA' if opts.dba else ''})")
    out.update(write_collection(cfg, NAME, source, vectors, root / "library", dba_on=opts.dba,
                                factory=opts.factory, nprobe=opts.nprobe))
    log(f"N={n}: built in {out['build_s']} s ({out['index_factory']}); startup and queries")
    out.update(measure_serving(opts, cfg, source, vectors, root, log))
    log(f"N={n}: p50 {out['query_p50_ms']} ms, recall@5 {out['recall_at_5']}; add and delete {CHANGE}")
    out.update(measure_changes(opts, cfg, source, n, root))
    log(f"N={n}: add {out['add100_s']} s, delete {out['delete100_s']} s")
    return out


def measure_serving(opts: ScaleOptions, cfg: Config, source: sd.SourceVectors, vectors: np.ndarray, root: Path,
                    log: Callable[[str], None]) -> dict[str, Any]:
    """Startup (cold, warm), query times, recall@5 and the searching process's memory."""
    collection_files = [p for p in (root / "indexes").iterdir()] + [p for p in (root / "features").iterdir()]
    evicted = sd.evict(collection_files)
    cold = spawn_probe(cfg, NAME)["startup_s"]
    warm = [spawn_probe(cfg, NAME)["startup_s"] for _ in range(max(1, opts.startup_runs))]
    real = min(len(source.vectors), len(vectors))
    rng = np.random.default_rng(opts.seed + 1)
    q_ids = np.sort(rng.choice(real, size=min(opts.queries, real), replace=False))
    qpath, opath = root / "queries.npy", root / "probe.json"
    np.save(qpath, np.asarray(vectors[q_ids], np.float32))
    served = spawn_probe(cfg, NAME, queries=qpath, out=opath)
    truth = exact_top(vectors, q_ids, 5)  # blockwise over every row, the query's own left out
    found = np.array([_others(ids, q, 5) for ids, q in zip(served["ids"], q_ids.tolist(), strict=True)])
    mem = served["memory"]
    on, off = np.asarray(served["ms_on"]), np.asarray(served["ms_off"])
    return {
        "startup_cold_s": round(cold, 3), "startup_warm_s": round(float(np.median(warm)), 3),
        "startup_warm_runs_s": [round(w, 3) for w in warm], "evicted_bytes": evicted,
        "query_p50_ms": _pct(on, 50), "query_p99_ms": _pct(on, 99),
        "query_p50_ms_no_qe": _pct(off, 50), "query_p99_ms_no_qe": _pct(off, 99),
        "queries": len(q_ids), "recall_at_5": round(recall(found, truth), 4),
        "rss_mb": mem.get("VmRSS"), "rss_peak_mb": mem.get("VmHWM"), "rss_anon_mb": mem.get("RssAnon"),
        "rss_file_mb": mem.get("RssFile"),
    }


def _others(ids: list[int], own: int, k: int) -> list[int]:
    """The first ``k`` of ``ids`` that are not the query's own row (padded with -1)."""
    rest = [i for i in ids if i != own][:k]
    return rest + [-1] * (k - len(rest))


def _pct(ms: np.ndarray, q: float) -> float:
    return round(float(np.percentile(ms, q)), 3)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """The fraction of each true top-k found in the returned top-k (order ignored), averaged."""
    return recall_at_k(found, truth) if truth.size else 0.0


def measure_changes(opts: ScaleOptions, cfg: Config, source: sd.SourceVectors, n: int, root: Path) -> dict[str, Any]:
    """Add 100 generated photos, then delete 100 synthetic rows, through the library API."""
    from app.service.library import add_paths, delete_items

    photos = sd.write_jpegs(root / "library" / "added", CHANGE, seed=opts.seed)
    embedder = sd.SuppliedEmbedder.for_source(source, sd.new_vectors(source, CHANGE, seed=opts.seed + 2,
                                                                     sigma=opts.sigma))
    out: dict[str, Any] = {}
    added = _measured(cfg, lambda: add_paths(cfg, NAME, [str(p) for p in photos], embedder=embedder))
    if added["summary"].added != CHANGE:
        raise DatasetError(f"Adding {CHANGE} photos added {added['summary'].added} (skipped: "
                           f"{list(added['summary'].skipped)[:3]}).")
    out.update({f"add100_{k}": v for k, v in added.items() if k != "summary"})
    out["add100_index"] = added["summary"].index
    real = min(len(source.vectors), n)
    pool = np.arange(real, n) if n - real >= CHANGE else np.arange(n)
    doomed = np.random.default_rng(opts.seed + 3).choice(pool, size=CHANGE, replace=False)
    deleted = _measured(cfg, lambda: delete_items(cfg, NAME, ids=[int(i) for i in doomed]))
    out.update({f"delete100_{k}": v for k, v in deleted.items() if k != "summary"})
    out["delete100_index"] = deleted["summary"].index
    return out


def _measured(cfg: Config, change: Callable[[], Any]) -> dict[str, Any]:
    """Time ``change``; what this process wrote meanwhile: ``bytes_written`` (to storage: ``write_bytes`` of
    ``/proc/self/io``, else the files' sizes), ``wchar`` (every write call, pipes to the image loader's workers
    too), ``files_bytes`` (the files it created or replaced, whole, and what files grew by in place), and ``fraction``: bytes written
    over the table and vectors files before it."""
    folders = [Path(cfg.indexes_dir), Path(cfg.features_dir)]
    base = table_and_vectors_bytes(cfg)
    before, io0, t0 = sd.files_state(folders), sd.io_counters(), time.perf_counter()
    summary = change()
    seconds, io1 = time.perf_counter() - t0, sd.io_counters()
    files = sd.changed_bytes(before, sd.files_state(folders))
    written = io1["write_bytes"] - io0["write_bytes"] if "write_bytes" in io0 else files
    wchar = io1["wchar"] - io0["wchar"] if "wchar" in io0 else None
    return {"s": round(seconds, 3), "bytes_written": written, "wchar": wchar, "files_bytes": files,
            "base_bytes": base, "fraction": round(written / base, 4) if base else None, "summary": summary}


def table_and_vectors_bytes(cfg: Config) -> int:
    """The sizes of the current table and vectors files of the benchmark's collection."""
    from app.service.collection_store import open_collection

    m = open_collection(cfg, NAME).manifest()
    return sum((Path(cfg.features_dir) / f).stat().st_size for f in (m.features, m.table))


def check_targets(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets at the largest N: each value, its limit and PASS/FAIL."""
    out: dict[str, Any] = {"n": result["n"]}
    for key, (op, limit) in TARGETS.items():
        value = result.get(key)
        ok = value is not None and (value <= limit if op == "<=" else value >= limit)
        out[key] = {"value": value, "target": f"{op} {limit:g}", "result": "PASS" if ok else "FAIL"}
    out["all_pass"] = all(v["result"] == "PASS" for k, v in out.items() if k != "n")
    return out


ROWS = (("build_s", "index build + training, s"), ("train_s", "  training the chosen index, s"),
        ("commit_s", "commit (table, vectors, index), s"), ("dba_s", "DBA, s"), ("index_factory", "index"),
        ("index_bytes_per_vector", "index bytes / vector"), ("rss_mb", "RSS serving, MB"),
        ("rss_anon_mb", "  of which anonymous, MB"), ("startup_cold_s", "startup cold, s"),
        ("startup_warm_s", "startup warm, s"), ("query_p50_ms", "query p50 (aQE on), ms"),
        ("query_p99_ms", "query p99 (aQE on), ms"), ("query_p50_ms_no_qe", "query p50 (aQE off), ms"),
        ("query_p99_ms_no_qe", "query p99 (aQE off), ms"), ("recall_at_5", "recall@5 (aQE off)"),
        ("add100_s", "add 100, s"), ("add100_bytes_written", "add 100, bytes written"),
        ("add100_fraction", "  / (table + vectors)"), ("delete100_s", "delete 100, s"),
        ("delete100_bytes_written", "delete 100, bytes written"), ("delete100_fraction", "  / (table + vectors)"))


def format_scale(result: dict[str, Any]) -> str:
    """The benchmark as text: how the vectors were made, one column per N, the targets, the total time."""
    from app.metrics.scale_build import format_table

    v, s = result["vectors"], result["source"]
    lines = [f"Vectors: {s['real_vectors']} real {s['model']} vectors of {s['collection']} ({s['dim']}-d), repeated "
             f"with seeded Gaussian noise (sigma {v['noise_sigma']} per dimension x U{tuple(v['noise_scale_per_copy'])} "
             f"per copy, seed {v['seed']}), re-normalised; mean cosine copy->origin {v['mean_cosine_copy_to_origin']}. "
             "Paths and stamps synthetic.",
             "Startup: a fresh process opening SearchService and answering one query by vector; cold = the "
             "collection's files evicted with posix_fadvise(POSIX_FADV_DONTNEED). Queries: batch 1, "
             "search_vector (embedding excluded, exact re-scoring included). Recall@5: exact top-5 over all N, "
             "the query's own row left out. Add: supplied vectors (no model); bytes written: write_bytes of /proc/self/io.",
             "", format_table(result["results"], ROWS), ""]
    t = result["targets"]
    if t:
        lines.append(f"Targets at N={t['n']}:")
        lines += [f"  {k:24s} {x['value']!s:>12} {x['target']:>8}  {x['result']}" for k, x in t.items()
                  if isinstance(x, dict)]
    lines.append(f"Total: {result['total_s']} s")
    return "\n".join(lines)


def to_json(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2)
