#!/usr/bin/env python3
"""Build a collection: embed its images into features/ and save a tuned faiss index in indexes/.

    python scripts/build_index.py --collection caltech101 --data data/caltech101
    python scripts/build_index.py --collection folder --data ~/Pictures --name my-photos

Resumable: if it is interrupted, run the same command again and it continues.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.build import build_collection  # noqa: E402
from app.cli import config_from_args, run  # noqa: E402
from app.datasets import COLLECTION_KINDS  # noqa: E402
from app.embed import UNTRAINED_NOTICE  # noqa: E402


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--collection", required=True, choices=COLLECTION_KINDS, help="dataset layout")
    p.add_argument("--data", required=True, metavar="DIR", help="the collection's folder (as data_download.sh lays it out)")
    p.add_argument("--name", default=None, help="collection name (default: the --collection value)")
    p.add_argument("--weights", default=None, help="imagenet (default), untrained, or a path to a state dict")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="a deterministic sample of N images spread over the labels")
    p.add_argument("--indexes", default=None, metavar="DIR", help="output folder for the index (default: indexes/)")
    p.add_argument("--features", default=None, metavar="DIR", help="output folder for features (default: features/)")
    p.add_argument("--include", default="", help="Caltech101: comma-separated folders left out by default "
                   "(BACKGROUND_Google, Faces_easy)")
    p.add_argument("--engine", default=None, choices=["auto", "onnx", "torch"])
    p.add_argument("--threads", type=int, default=None, help="inference threads")
    p.add_argument("--workers", type=int, default=None, help="image decoding worker processes")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--factory", default=None, help="fixed faiss factory string instead of tuning, e.g. 'PCAR128,IVF64,PQ32'")
    p.add_argument("--nprobe", type=int, default=None, help="nprobe for --factory")
    p.add_argument("--target-recall", type=float, default=0.95, help="tuning: recall@5 to reach (default 0.95)")
    p.add_argument("--max-ms", type=float, default=1.0, help="tuning: max ms per query (default 1.0)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def cmd_build(args: argparse.Namespace) -> int:
    config = config_from_args(args).with_(workers=args.workers, batch_size=args.batch_size)
    if config.weights == "untrained":
        print(f"note: {UNTRAINED_NOTICE}", file=sys.stderr)
    result = build_collection(
        config,
        kind=args.collection,
        data=args.data,
        name=args.name,
        limit=args.limit,
        include=tuple(x for x in args.include.split(",") if x),
        factory=args.factory,
        nprobe=args.nprobe,
        target_recall=args.target_recall,
        max_ms=args.max_ms,
        progress=not args.no_progress,
    )
    m, s = result.manifest, result.stats
    if args.json:
        print(json.dumps({"manifest": m, "stats": s, "skipped": result.skipped}, indent=2))
        return 0
    for sk in result.skipped:
        print(f"skipped {sk['path']}: {sk['reason']}", file=sys.stderr)
    tuning = m.get("tuning", {})
    chosen = tuning.get("chosen") or {}
    print(f"built {m['name']}: {m['count']} images indexed, {s['skipped']} skipped"
          + (f", {s['resumed_rows']} resumed from an earlier run" if s["resumed_rows"] else ""))
    print(f"  embedding: {s['img_per_s']:.1f} img/s over {s['seconds']:.1f} s (engine {m.get('engine')})")
    print(f"  index: {m['factory']} nprobe={m['nprobe']}, {m['index_bytes'] / 1e6:.2f} MB, built in {s['index_seconds']:.1f} s"
          + (f", recall@5 {chosen.get('recall_at_5')} at {chosen.get('ms_per_query')} ms/query" if chosen else ""))
    if tuning and not tuning.get("fixed") and not tuning.get("target_met"):
        print(f"  warning: no configuration reached recall@5 >= {args.target_recall}; kept the best found", file=sys.stderr)
    print(f"  files: {config.indexes_dir / (m['name'] + '.faiss')}, {config.features_dir / (m['name'] + '.npy')}")
    return 0


if __name__ == "__main__":
    sys.exit(run(cmd_build, make_parser().parse_args()))
