"""What the re-scoring tuner picks on a synthetic scale-up of real vectors, and how it searches.

    python scripts/scale_rescore.py --vectors /work/runs/lite0/feat/caltech101.npy --n 100000 \\
        --out /work/runs/scale [--factory "PCAR64,IVF1024,PQ16x4fs" --nprobe 16 --rescore 100] [--json]

The indexed set: the real vectors minus ``--queries`` held-out ones (none of their copies is indexed),
repeated with seeded Gaussian noise (``--noise`` per dimension, re-normalised; 0.021 in 1280 dims gives a
copy a cosine of about 0.80 to its origin) up to ``--n`` rows, written to ``OUT/scale_N.npy`` and
memory-mapped. The queries: the held-out real vectors (new photos, not in the library). Recall@5 is
against exact search over the indexed set; query time is one query at a time, index search plus exact
re-scoring of R rows read from the memory-mapped file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from app.index.faiss_index import search
from app.index.rescore import rescore
from app.index.scale_build import build_index_timed
from app.index.tune_space import exact_topk, recall_at_k


def scale_up(real: np.ndarray, n: int, noise: float, path: Path, seed: int = 0) -> np.ndarray:
    """``real`` then noisy copies of it, cycled, up to ``n`` unit rows (written once to ``path``)."""
    if path.exists() and np.load(path, mmap_mode="r").shape == (n, real.shape[1]):
        return np.load(path, mmap_mode="r")
    out = np.lib.format.open_memmap(path.with_suffix(".part.npy"), mode="w+", dtype=np.float32,
                                    shape=(n, real.shape[1]))
    rng = np.random.default_rng(seed)
    block = 32_768
    for s in range(0, n, block):
        rows = np.arange(s, min(n, s + block))
        x = real[rows % len(real)] + noise * rng.standard_normal((len(rows), real.shape[1]), dtype=np.float32)
        x[rows < len(real)] = real[rows[rows < len(real)]]  # the first copy is the real vector itself
        out[s : s + len(rows)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    out.flush()
    del out
    path.with_suffix(".part.npy").replace(path)
    return np.load(path, mmap_mode="r")


def _rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def loaded_index_ram(index) -> int:
    """RSS growth when the serialized index is loaded back (as the app loads its index file)."""
    import faiss

    blob = faiss.serialize_index(index)
    before = _rss()
    loaded = faiss.deserialize_index(blob)
    grown = _rss() - before
    del loaded
    return grown


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vectors", type=Path, required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--noise", type=float, default=0.021)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--factory")
    p.add_argument("--nprobe", type=int, default=16)
    p.add_argument("--rescore", type=int)
    p.add_argument("--max-ms", type=float, default=5.0)
    p.add_argument("--time-budget", type=float, default=600.0)
    p.add_argument("--tune-queries", action="store_true",
                   help="tune on another --queries held-out real vectors (not the ones measured), not on the copies")
    p.add_argument("--sweep-nprobe", default="", help="also measure the built index at these nprobes (comma list)")
    p.add_argument("--sweep-r", default="100,400,1000,2000", help="... re-scoring these R (comma list)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    real = np.asarray(np.load(a.vectors, mmap_mode="r"), dtype=np.float32)
    rng = np.random.default_rng(1)
    q_idx = np.sort(rng.choice(len(real), size=2 * a.queries if a.tune_queries else a.queries, replace=False))
    keep = np.setdiff1d(np.arange(len(real)), q_idx)
    a.out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    vectors = scale_up(real[keep], a.n, a.noise, a.out / f"scale_{a.n}_{a.noise}_q{len(q_idx)}.npy")
    gen_s = time.perf_counter() - t
    queries = real[q_idx[: a.queries]]
    tune_queries = real[q_idx[a.queries:]] if a.tune_queries else None
    origin = np.arange(a.n) % len(keep)
    copy_cos = float(np.median(np.einsum("ij,ij->i", vectors[len(keep): len(keep) + 2000],
                                         real[keep][origin[len(keep): len(keep) + 2000]]))) if a.n > len(keep) else 1.0
    built = build_index_timed(vectors, factory=a.factory, nprobe=a.nprobe, rescore=a.rescore, max_ms=a.max_ms,
                              time_budget_s=a.time_budget, queries=tune_queries)
    r = built.rescore or a.rescore or 100
    loaded_ram = loaded_index_ram(built.index)
    truth = exact_topk(np.asarray(vectors), queries, 5)
    found, times, cpu = np.empty((len(queries), 5), np.int64), [], []
    for i, q in enumerate(queries):
        t, c = time.perf_counter(), time.thread_time()
        ids = search(built.index, q[None], r)[1][0]
        got, _ = rescore(vectors, q, ids[ids >= 0], 5)
        times.append(time.perf_counter() - t)
        cpu.append(time.thread_time() - c)
        found[i, : len(got)] = got
    # How much of the truth is copies of the query's nearest real neighbour (its origin's copies tie).
    nn_origin = np.argmax(queries @ real[keep].T, axis=1)
    same = float(np.mean(origin[truth] == nn_origin[:, None]))
    # Copies of one origin differ only by noise: recall counted by origin (a hit finds a copy of the same
    # real vector as a true neighbour) shows whether the index finds the right photos, the noise aside.
    by_origin = np.mean([len(set(origin[f].tolist()) & set(origin[t].tolist())) / len(set(origin[t].tolist()))
                         for f, t in zip(found, truth, strict=True)])
    out = {"n": a.n, "noise": a.noise, "copy_cosine_median": round(copy_cos, 3), "generate_s": round(gen_s, 1),
           "queries": f"{a.queries} real vectors held out of the indexed set (no copies of them indexed)",
           "tuned_on": f"{a.queries} other held-out real vectors" if a.tune_queries else "held-out copies",
           **built.to_json(), "loaded_index_rss_bytes": loaded_ram, "rescore_used": r, "recall_at_5": round(recall_at_k(found, truth), 4),
           "p50_ms": round(float(np.percentile(times, 50)) * 1000, 3),
           "p99_ms": round(float(np.percentile(times, 99)) * 1000, 3),
           "p50_cpu_ms": round(float(np.percentile(cpu, 50)) * 1000, 3),
           "load_average": [round(x, 2) for x in os.getloadavg()],
           "truth_from_nearest_origin": round(same, 3), "recall_at_5_by_origin": round(float(by_origin), 4)}
    if a.sweep_nprobe:  # the same index searched deeper: recall@5 (and by origin) for each nprobe x R
        import faiss

        out["sweep"] = []
        for nprobe in [int(v) for v in a.sweep_nprobe.split(",")]:
            faiss.extract_index_ivf(built.index).nprobe = nprobe
            rmax = max(int(v) for v in a.sweep_r.split(","))
            cand = search(built.index, queries, rmax)[1]
            for rr in [int(v) for v in a.sweep_r.split(",")]:
                got = np.stack([np.pad(np.asarray(rescore(vectors, q, c[:rr][c[:rr] >= 0], 5)[0]), (0, 5), constant_values=-1)[:5]
                                for q, c in zip(queries, cand, strict=True)])
                covered = np.mean([len(set(origin[t].tolist()) & set(origin[c[:rr][c[:rr] >= 0]].tolist()))
                                   / len(set(origin[t].tolist())) for c, t in zip(cand, truth, strict=True)])
                out["sweep"].append({"nprobe": nprobe, "rescore": rr, "recall_at_5": round(recall_at_k(got, truth), 4),
                                     "truth_origins_among_candidates": round(float(covered), 4)})
    if built.report is not None:
        rep = built.report.to_json()
        out["tuning"] = {k: rep[k] for k in ("target_met", "chosen", "pca_recall_ceiling", "seconds", "skipped")}
        out["tuning"]["trials"] = [(t["factory"], t["nprobe"], t["rescore"], t["recall_at_5"], t["ms_per_query"],
                                    t["wall_ms"])
                                   for t in rep["trials"]]
    print(json.dumps(out, indent=None if a.json else 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
