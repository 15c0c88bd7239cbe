"""Retrieval quality of a collection (leave-one-out mAP@10, mHR@10, P@5; exact and ANN) and its index.

    python scripts/evaluate.py --data data/caltech101
    python scripts/evaluate.py --data data/caltech101 --sweep          # + the index sweep table
    python scripts/evaluate.py --kind voc2012 --data data/voc2012 --queries 2000 --json

Uses the built features and index of the collection; builds them from --data when missing.
"""
from __future__ import annotations

import argparse
import json
import sys

from app.cli.common import add_common_args, add_kind_args, config_from_args, kind_from_args
from app.core.weights import UNTRAINED_NOTICE


def add_evaluate_args(p: argparse.ArgumentParser) -> None:
    add_kind_args(p, required=False, default="caltech101")
    p.add_argument("--name", default=None, help="collection name (default: the --kind value)")
    p.add_argument("--data", default="data/caltech101", metavar="DIR",
                   help="the dataset folder, used when the collection has to be built (default data/caltech101)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="when building: a sample of N images")
    p.add_argument("--queries", type=int, default=None, metavar="N",
                   help="a seeded sample of N queries (default: every item)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sweep", action="store_true", help="also measure a grid of index configurations")
    p.add_argument("--retune", action="store_true",
                   help="first re-run the index tuner on the stored features and save the new index")
    p.add_argument("--split", default="loo", choices=("loo", "heldout"),
                   help="loo: every item against the rest (the product path, default); heldout: every 5th item "
                        "of each class is a query kept out of the database and its augmentation, and the "
                        "re-ranking variants are compared (exact search)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_common_args(p)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from app.metrics.evaluate import ensure_collection, evaluate_collection, format_result, retune_collection

    config = config_from_args(args)
    kind = kind_from_args(args)
    name = args.name or kind
    log = (lambda msg: print(msg, file=sys.stderr))
    if config.weights == "untrained":
        log(f"note: {UNTRAINED_NOTICE}")
    ensure_collection(config, name=name, kind=kind, data=args.data, limit=args.limit,
                      progress_bar=not args.json)
    if args.retune:
        m = retune_collection(config, name)
        log(f"retuned {name}: {m['factory']} nprobe={m['nprobe']} ({m['tuning']['seconds']} s)")
    if args.split == "heldout":
        from app.metrics.heldout import evaluate_collection_variants, format_variants

        result = evaluate_collection_variants(config, name, split="heldout", rerank=config.rerank)
        print(json.dumps(result, indent=2) if args.json else format_variants(result))
        return 0
    result = evaluate_collection(config, name, queries=args.queries, seed=args.seed, sweep=args.sweep, log=log)
    print(json.dumps(result, indent=2) if args.json else format_result(result))
    return 0
