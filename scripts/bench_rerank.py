#!/usr/bin/env python3
"""New-image query p50 with re-ranking on (the default) and off, interleaved in one process.

    python scripts/bench_rerank.py --model efficientnet-lite0 --indexes DIR --features DIR [--queries 40] [--rounds 4]

Each round searches the same ``--queries`` collection JPEGs as new images the way ``scripts/bench.py``
does (:func:`app.metrics.bench.query_new`: hash, decode, copy, preprocess, embed, search; remembered
vectors forgotten first), once with re-ranking off (today's path) and once on; the order alternates.
Prints the p50/p95 of the total and of the search stage for both, and their ratio.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from app.cli.common import add_common_args, config_from_args
    from app.metrics.bench import p, query_new
    from app.service.search import SearchService

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collection", default="caltech101")
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    add_common_args(ap)
    args = ap.parse_args(argv)
    config = config_from_args(args)
    services = {"off": SearchService(config.with_(rerank=False)), "on": SearchService(config.with_(rerank=True))}
    col = services["on"].collection(args.collection)
    services["off"]._embedder = services["on"].embedder  # one model for both: same weights, same threads
    rng = np.random.default_rng(args.seed)
    jpegs = [i for i, path in enumerate(col.table.paths) if col.live_mask[i] and path.lower().endswith((".jpg", ".jpeg"))]
    paths = [col.item_path(int(i)) for i in sorted(rng.choice(jpegs, size=min(args.queries, len(jpegs)), replace=False))]
    out: dict[str, dict[str, list[float]]] = {"off": {"total": [], "search": []}, "on": {"total": [], "search": []}}
    for side in ("off", "on"):  # warm-up
        query_new(services[side], args.collection, paths[:3])
    for r in range(args.rounds):
        for side in (("off", "on") if r % 2 == 0 else ("on", "off")):
            stages = query_new(services[side], args.collection, paths)
            out[side]["total"] += stages["total"]
            out[side]["search"] += stages["search"]
    res = {side: {f"{stage}_ms_{q}": round(p(v, q), 3) for stage, v in m.items() for q in (50, 95)}
           for side, m in out.items()}
    res["ratio_total_p50"] = round(res["on"]["total_ms_50"] / res["off"]["total_ms_50"], 3)
    res["dba"] = col.augmented is not None
    res["queries"] = len(paths) * args.rounds
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
