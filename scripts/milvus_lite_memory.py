#!/usr/bin/env python3
"""Milvus Lite's memory for N vectors, pushed as the app pushes a collection (app/index/milvus_store.py: HNSW,
M 16), for the README's Scale section.

    python scripts/milvus_lite_memory.py VECTORS.npy --n 100000 --uri /tmp/mlite/m.db

VECTORS.npy: e.g. a file bench-scale left in its work folder's cache (``--work DIR``: DIR/cache). Milvus Lite
runs inside this process, so its memory is this process's RSS after the push and a few searches, minus
the RSS before the push (pymilvus imported). Compare two N for the memory per vector. Prints one JSON line. Measurement only.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def vm_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("vectors")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--uri", required=True, help="a Milvus Lite file path (made again)")
    p.add_argument("--searches", type=int, default=50)
    args = p.parse_args()
    import pymilvus  # noqa: F401 - the client library is loaded before the memory is read

    from app.index.milvus_store import MilvusIndex, push

    vectors = np.load(args.vectors, mmap_mode="r")[: args.n]
    before = vm_rss_mb()
    t = time.perf_counter()
    push(args.uri, "scale", vectors, np.arange(len(vectors)), weights_id="scale", fingerprint="scale",
         progress_bar=False, timeout=600)
    push_s = time.perf_counter() - t
    store = MilvusIndex(args.uri, "scale", timeout=600)
    times = []
    for i in range(min(args.searches, len(vectors))):
        t = time.perf_counter()
        store.search(np.asarray(vectors[i : i + 1], dtype=np.float32), 21)
        times.append((time.perf_counter() - t) * 1000.0)
    after = vm_rss_mb()
    print(json.dumps({"n": len(vectors), "dim": int(vectors.shape[1]), "push_s": round(push_s, 1),
                      "search_p50_ms": round(float(np.median(times)), 2), "rss_before_mb": round(before),
                      "rss_after_mb": round(after), "milvus_lite_mb": round(after - before),
                      "bytes_per_vector": round((after - before) * 2**20 / len(vectors)),
                      "raw_vectors_mb": round(vectors.nbytes / 2**20)}))


if __name__ == "__main__":
    main()
