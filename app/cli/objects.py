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

from app.cli.common import EXIT_ERROR, table
from app.config import Config
from app.errors import AppError


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
            message = " ".join(exc.user_message().split())
            if args.json:
                print(json.dumps({"query": query, "error": message}), flush=True)
            else:
                print(f"error: {query}: {message}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps({"query": query, "objects": [o.to_json() for o in found]}), flush=True)
        elif not found:
            print(f"{query}: no objects found (score >= {args.min_score})")
        else:
            rows = [(o.label, f"{o.score:.3f}", ", ".join(f"{v:.0f}" for v in o.box)) for o in found]
            print(f"{query}:\n" + table(("object", "score", "box x1, y1, x2, y2"), rows))
    return EXIT_ERROR if failed else 0
