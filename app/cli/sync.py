"""``sync NAME --uri URI``: push a built collection's vectors to Milvus (a server, or Milvus Lite)."""

from __future__ import annotations

import argparse


def add_sync_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("collection")
    s.add_argument("--uri", required=True, help="http://host:19530, or a file path for Milvus Lite")
    s.add_argument("--token", default="", help="Milvus token (user:password) for a server")
    s.add_argument("--features", default=None, metavar="DIR")
    s.add_argument("--index-type", default="AUTOINDEX", help="AUTOINDEX (default), IVF_FLAT, IVF_PQ (server), ...")


def cmd_sync(args: argparse.Namespace) -> int:
    from app.config import Config
    from app.index.milvus_store import sync

    features = Config().with_(features_dir=args.features).features_dir
    meta = sync(features, args.collection, args.uri, token=args.token, index_type=args.index_type)
    print(f"pushed {meta['count']} vectors of {args.collection} to {args.uri} ({meta['index_type']})")
    return 0
