"""Scale benchmark: build time, index RAM, startup, query latency, recall@5 and the cost of adding and deleting
100 photos, at N = 10k, 100k and 1M, with the issue's targets checked at the largest N.

    python scripts/bench_scale.py --indexes /work/runs/lite0/idx --features /work/runs/lite0/feat \\
        --sizes 10000,100000 --json
    python scripts/bench_scale.py --n 1000000 --json --work /big/disk/scale

The vectors are the real ones of a built collection (--collection, default caltech101, found in
--indexes/--features), repeated with seeded noise up to N; paths and stamps are synthetic. Each N is
written with the app's own store into --work (default: a temporary folder, removed at the end unless
--keep; with --work, the generated vectors stay in DIR/cache and are reused by the next run).
See app/metrics/scale.py for what each figure measures.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from app.cli.common import add_common_args, config_from_args
from app.errors import AppError


def add_bench_scale_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, default=None, metavar="N",
                   help="the largest N (default 1000000): the --sizes below it and N itself are measured")
    p.add_argument("--sizes", default=None, metavar="N,N,...",
                   help="the sizes to measure (default 10000,100000,1000000; capped by --n)")
    p.add_argument("--collection", default="caltech101", metavar="NAME",
                   help="the built collection whose vectors are repeated (default caltech101)")
    p.add_argument("--work", default=None, metavar="DIR",
                   help="work folder (default: a temporary folder; 1M Lite0 vectors take about 3 x 5.1 GB)")
    p.add_argument("--keep", action="store_true", help="keep the collections written (and a temporary --work)")
    p.add_argument("--seed", type=int, default=0, help="the noise's seed (default 0)")
    p.add_argument("--sigma", type=float, default=0.03,
                   help="noise standard deviation per dimension before re-normalising (default 0.03: a copy of a "
                        "Lite0 vector is then about as near it as its 5th nearest real photo)")
    p.add_argument("--queries", type=int, default=200, metavar="N", help="timed queries per N (default 200)")
    p.add_argument("--startup-runs", type=int, default=3, metavar="N", help="warm startups per N (default 3)")
    p.add_argument("--no-dba", action="store_true", help="write the collections without DBA (a build has it)")
    p.add_argument("--factory", default=None, help="a fixed faiss factory string instead of the tuner's choice")
    p.add_argument("--nprobe", type=int, default=None, help="with --factory (default 16)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--probe-queries", default=None, help=argparse.SUPPRESS)
    p.add_argument("--probe-out", default=None, help=argparse.SUPPRESS)
    add_common_args(p)


def cmd_bench_scale(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    config = config_from_args(args)
    if args.probe:  # the searching process of app.metrics.scale_probe
        from app.metrics.scale_probe import run_probe

        run_probe(config, args.collection, Path(args.probe_queries) if args.probe_queries else None,
                  Path(args.probe_out) if args.probe_out else None, started=started)
        return 0
    from app.metrics.scale import ScaleOptions, format_scale, run_scale, sizes_from

    if args.n is not None and args.n < 1:
        raise AppError("--n must be a positive number.")
    if args.queries < 1 or args.startup_runs < 1 or not 0 <= args.sigma < 1:
        raise AppError("--queries and --startup-runs must be at least 1, --sigma between 0 and 1.")
    opts = ScaleOptions(config, source=args.collection, sizes=sizes_from(args.n, args.sizes),
                        work=Path(args.work) if args.work else None, keep=args.keep, seed=args.seed,
                        sigma=args.sigma, queries=args.queries, startup_runs=args.startup_runs,
                        dba=not args.no_dba, factory=args.factory, nprobe=args.nprobe)
    log_t0 = time.perf_counter()
    result = run_scale(opts, log=lambda m: print(f"[{time.perf_counter() - log_t0:7.1f} s] {m}", file=sys.stderr,
                                                  flush=True))
    print(json.dumps(result, indent=2) if args.json else format_scale(result))
    return 0
