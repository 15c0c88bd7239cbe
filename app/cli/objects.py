"""``objects``: the objects a detector finds in each image (files, folders, URLs), one detector load.

With ``--json``, one JSON object per image (JSON Lines): ``{"query", "objects": [{"box": [x1, y1, x2,
y2], "label", "score"}]}``, boxes in the image's own pixels, best first. An image that fails gives
``{"query", "error"}`` and the others go on (exit 2 at the end). Needs the detector: ``python -m app.cli
detector install``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from app.cli.common import EXIT_ERROR, print_query_error, table
from app.config import Config
from app.errors import AppError
from app.service.timings import Timings


def add_objects_args(p: argparse.ArgumentParser) -> None:
    from app.core.detect import MAX_OBJECTS, SCORE_THRESHOLD
    from app.core.detectors import DEFAULT_DETECTOR, detector_names

    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders or http(s) URLs")
    p.add_argument("--json", action="store_true", help="print one JSON object per image (JSON Lines)")
    p.add_argument("--detector", default=DEFAULT_DETECTOR, choices=detector_names(),
                   help=f"which detector (default: {DEFAULT_DETECTOR})")
    p.add_argument("--min-score", type=float, default=SCORE_THRESHOLD,
                   help=f"keep objects scoring at least this, 0-1 (default {SCORE_THRESHOLD})")
    p.add_argument("--max-objects", type=int, default=MAX_OBJECTS,
                   help=f"at most this many objects per image (default {MAX_OBJECTS})")
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: all cores)")


def cmd_objects(args: argparse.Namespace) -> int:
    from app.cli.search import _query_source, expand_queries
    from app.core.detect import Detector

    if not 0.0 <= args.min_score <= 1.0 or args.max_objects < 1:
        raise AppError("--min-score is between 0 and 1, and --max-objects at least 1.")
    config = Config()
    detector = Detector(config.cache_dir, args.detector, threads=args.threads).load()  # refused once, for all
    failed = 0
    for query in expand_queries(args.images):
        try:
            found = detector.detect(_query_source(query, config), score_threshold=args.min_score,
                                    max_objects=args.max_objects)
        except AppError as exc:
            failed += 1
            print_query_error(query, exc, args.json)
            continue
        if args.json:
            print(json.dumps({"query": query, "objects": [o.to_json() for o in found]}), flush=True)
        elif not found:
            print(f"{query}: no objects found (score >= {args.min_score})")
        else:
            rows = [(o.label, f"{o.score:.3f}", ", ".join(f"{v:.0f}" for v in o.box)) for o in found]
            print(f"{query}:\n" + table(("object", "score", "box x1, y1, x2, y2"), rows))
    return EXIT_ERROR if failed else 0


def print_objects(summary, as_json: bool = False) -> None:
    """The object vectors' refresh after a change (:mod:`app.service.object_upkeep`): its line, or the note
    saying why none were stored."""
    done = getattr(summary, "objects", None)
    if not done:
        return
    if done.get("note"):
        print(f"note: {done['note']}", file=sys.stderr)
    elif done.get("objects") is not None:
        print(f"  objects: {done['objects']} stored ({done['photos_detected']} photos detected now)",
              file=sys.stderr if as_json else sys.stdout)
    elif done.get("removed"):
        print(f"  objects: {done['removed']} of deleted photos dropped", file=sys.stderr if as_json else sys.stdout)


def search_objects_cli(args: argparse.Namespace, service, col, k: int, queries: list[str], source) -> int:
    """``search --objects``: each query against the collection's object vectors."""
    from app.service.objects import load_objects, search_objects

    store = load_objects(service.config, col.name)
    if store.weights_id != service.embedder.weights_id:
        raise AppError(f"{col.name}'s object vectors were made with {store.weights_id}, not "
                       f"{service.embedder.weights_id}.", hint=f"Search with --model {store.weights_id.split('/')[0]}.")
    failed = 0
    for query in queries:
        try:
            timings = Timings()
            vector, _ = service.query_vector(source(query), timings=timings)
        except AppError as exc:
            failed += 1
            print_query_error(query, exc, args.json)
            continue
        hits = search_objects(store, vector, k, paths=col.table.paths, photo_labels=col.table.labels,
                              live=col.live_mask)
        if args.json:
            print(json.dumps({"query": query, "collection": col.name, "objects": True,
                              "model": service.embedder.model.name, "weights_id": service.embedder.weights_id,
                              "timings_ms": timings.rounded(),
                              "hits": [h.to_json() for h in hits]}), flush=True)
            continue
        rows = [(str(h.rank), f"{h.score:.4f}", f"{h.label} in {Path(h.path).name}",
                 ", ".join(f"{v:.0f}" for v in h.box)) for h in hits]
        print((f"query: {query}\n" if len(queries) > 1 else "")
              + table(("rank", "score", "object", "box x1, y1, x2, y2"), rows))
    return EXIT_ERROR if failed else 0
