"""``verify [COLLECTION ...]``: read every file of each collection (all of them by default) and check it:
every chunk of the vectors against its checksum, the table (SQLite's integrity check, every row's CRC,
its count and model against the manifest), the index against its checksum. Loading a collection checks
only a sample of this; run it after a disk or copy problem. Exit 1 when a collection has a problem."""

from __future__ import annotations

import argparse
import json


def add_verify_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("collections", nargs="*", metavar="COLLECTION", help="default: every built collection")
    s.add_argument("--features", default=None, metavar="DIR")
    s.add_argument("--indexes", default=None, metavar="DIR")
    s.add_argument("--json", action="store_true", help="one JSON object per collection")


def cmd_verify(args: argparse.Namespace) -> int:
    from app.config import Config
    from app.files.layout import collection_names
    from app.service.verify import verify_collection

    config = Config().with_(features_dir=args.features, indexes_dir=args.indexes)
    names = args.collections or collection_names(config.indexes_dir)
    if not names:
        print(f"no collection is built in {config.indexes_dir}")
        return 0
    bad = 0
    for name in names:
        report = verify_collection(config, name)
        bad += not report.ok
        if args.json:
            print(json.dumps(report.to_json()))
        elif report.ok:
            print(f"{name}: ok ({report.count} images, {report.rows} rows, {report.seconds:.2f} s)")
        else:
            for problem in report.problems:
                print(f"{name}: {problem}")
    return 1 if bad else 0
