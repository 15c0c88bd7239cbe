"""Speed benchmark: query and build paths next to the model's bare PyTorch forward, with PASS/FAIL targets.

    python scripts/bench.py --data data/caltech101
    python scripts/bench.py --data data/caltech101 --model efficientnet-lite0
    python scripts/bench.py --data data/caltech101 --indexes /tmp/ix --features /tmp/ft --limit 1000 --json
    python scripts/bench.py --data data/caltech101 --model efficientnet-lite0 --phone-only --phone-photos 24

Needs a built caltech101 collection in --indexes/--features; builds what is missing (a --limit
sample when given). If voc2012 is not built, a Caltech101 sample named voc2012-substitute is built
as the second collection for the start-up and memory figures (the output says so).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from app.cli.common import add_common_args, config_from_args
from app.errors import AppError


def add_bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="data/caltech101", metavar="DIR",
                   help="the Caltech101 folder, containing 101_ObjectCategories (default data/caltech101)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="when caltech101 has to be built: a deterministic sample of N images")
    p.add_argument("--queries", type=int, default=40, metavar="N", help="new query images (default 40, at least 30)")
    p.add_argument("--build-images", type=int, default=1024, metavar="N",
                   help="images for the end-to-end build measurement (default 1024)")
    p.add_argument("--second-limit", type=int, default=1000, metavar="N",
                   help="size of voc2012-substitute when voc2012 is not built (default 1000)")
    p.add_argument("--startup-runs", type=int, default=3, metavar="N")
    p.add_argument("--workers", type=int, default=None, help="build: image decoding worker processes")
    p.add_argument("--batch-size", type=int, default=None, help="build: images per model call")
    p.add_argument("--cache-dir", default=None, metavar="DIR", help="model cache (exported ONNX)")
    p.add_argument("--phone-photos", type=int, default=32, metavar="N",
                   help="build rates on N generated 12 MP JPEGs and N HEICs beside N Caltech101 images "
                   "(default 32; 0 leaves them out)")
    p.add_argument("--phone-only", action="store_true", help="measure only the phone-photo build rates")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--objects", action="store_true",
                   help="only the object figures (app/metrics/bench_objects.py) on --images photos of --data")
    p.add_argument("--images", type=int, default=100, metavar="N", help="with --objects: photos (default 100)")
    p.add_argument("--ready-probe", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--probe-collections", default="caltech101", help=argparse.SUPPRESS)
    p.add_argument("--probe-image", default=None, help=argparse.SUPPRESS)
    add_common_args(p)


def cmd_bench(args: argparse.Namespace) -> int:
    config = config_from_args(args).with_(workers=args.workers, batch_size=args.batch_size, cache_dir=args.cache_dir)
    if args.ready_probe:
        from app.metrics.bench import ready_probe

        info = ready_probe(config, args.probe_collections.split(","), Path(args.probe_image))
        print("READY " + json.dumps(info), flush=True)
        return 0
    if args.objects:
        from app.metrics.bench_objects import bench_objects, format_bench_objects

        result = bench_objects(config, args.data, images=args.images, log=lambda m: print(m, file=sys.stderr))
        print(json.dumps(result, indent=2) if args.json else format_bench_objects(result))
        return 0
    from app.metrics.bench import BenchOptions, format_bench, run_bench

    if args.phone_photos < 0 or (args.phone_only and args.phone_photos < 1):
        raise AppError("--phone-photos must be a positive number (0 leaves them out, not with --phone-only).")
    if args.phone_only:
        from app.metrics.bench_photos import format_phone, phone_bench

        phone = phone_bench(config, Path(args.data), args.phone_photos,
                            log=lambda m: print(m, file=sys.stderr, flush=True))
        print(json.dumps(phone, indent=2) if args.json else format_phone(phone))
        return 0
    if args.queries < 30:
        raise AppError("--queries must be at least 30.")
    options = BenchOptions(config, Path(args.data), limit=args.limit, queries=args.queries,
                           build_images=args.build_images, second_limit=args.second_limit,
                           startup_runs=args.startup_runs, phone_photos=args.phone_photos)
    result = run_bench(options, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(result, indent=2) if args.json else format_bench(result))
    return 0
