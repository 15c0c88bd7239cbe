"""``sync NAME --uri URI``: push a built collection's vectors to Milvus (a server, or Milvus Lite)."""

from __future__ import annotations

import argparse


def add_sync_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("collection")
    s.add_argument("--uri", required=True, help="http://host:19530, or a file path for Milvus Lite")
    s.add_argument("--token", default="", help="Milvus token (user:password) for a server")
    s.add_argument("--features", default=None, metavar="DIR")
    s.add_argument("--indexes", default=None, metavar="DIR")
    s.add_argument("--index-type", default="HNSW",
                   help="HNSW (default: M 16, efConstruction 200), HNSW_SQ, IVF_FLAT, IVF_SQ8, IVF_PQ (server only)")


def cmd_sync(args: argparse.Namespace) -> int:
    from app.config import Config
    from app.service.milvus_mirror import push_collection

    config = Config().with_(features_dir=args.features, indexes_dir=args.indexes, milvus_uri=args.uri,
                            milvus_token=args.token or None)
    meta = push_collection(config, args.collection, index_type=args.index_type, progress_bar=True)
    print(f"pushed {meta['count']} vectors of {args.collection} to {args.uri} ({meta['index_type']})")
    return 0
