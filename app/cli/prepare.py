"""``prepare [app arguments]``: weights, datasets and indexes, each only where missing (``scripts/run.sh``
runs it before ``python -m app``). Options it does not know (``--host``, ``--port``...) are left for the app."""

from __future__ import annotations

import argparse
import sys

from app.config import KNOWN_COLLECTIONS, Config
from app.errors import AppError

RESUME = "run the same command again to continue where it stopped"


def add_prepare_args(p: argparse.ArgumentParser) -> None:
    from app.core.models import model_names

    p.add_argument("--data", default=None, metavar="DIR")
    p.add_argument("--indexes", default=None, metavar="DIR")
    p.add_argument("--features", default=None, metavar="DIR")
    p.add_argument("--weights", default=None)
    p.add_argument("--model", default=None, choices=model_names())
    p.add_argument("--collections", default=",".join(KNOWN_COLLECTIONS), help="comma-separated (default: %(default)s)")


def cmd_prepare(args: argparse.Namespace) -> int:
    from app.service.prepare import LOCAL_COPY_HELP, prepare

    config = Config().with_(data_dir=args.data, indexes_dir=args.indexes, features_dir=args.features,
                            weights=args.weights, model=args.model)
    try:
        ready = prepare(config, [c for c in args.collections.split(",") if c])
    except AppError:  # e.g. the weights cannot be had: nothing can be served
        print(LOCAL_COPY_HELP + "\n", file=sys.stderr)
        raise
    if not ready:
        raise AppError("no collection could be prepared; see the messages above.")
    return 0
