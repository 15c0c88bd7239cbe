"""Command line: ``python -m app.cli search IMAGE [IMAGE ...] --collection NAME -k 5 [--json]``.

Also ``build`` (the same as ``scripts/build_index.py``) and ``list``. Expected failures (a bad
image, a missing index, offline weights) exit non-zero with a one-line reason, no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from .config import Config
from .errors import AppError

EXIT_ERROR = 2


def add_common_args(p: argparse.ArgumentParser) -> None:
    from .models import DEFAULT_MODEL, model_names

    p.add_argument("--model", default=None, choices=model_names(),
                   help=f"embedding model (default: {DEFAULT_MODEL}); efficientnet-lite0 needs no download")
    p.add_argument("--weights", default=None,
                   help="imagenet (default: the model's pretrained weights), untrained (speed tests only), "
                        "or a path to a state dict for --model")
    p.add_argument("--indexes", default=None, metavar="DIR", help="folder of built indexes (default: indexes/)")
    p.add_argument("--backend", default=None, choices=["faiss", "milvus"],
                   help="where the vectors are searched: the local faiss index (default) or Milvus")
    p.add_argument("--milvus-uri", default=None, metavar="URI",
                   help="with --backend milvus: http://host:19530, or a file path for embedded Milvus Lite")
    p.add_argument("--features", default=None, metavar="DIR", help="folder of stored features (default: features/)")
    p.add_argument("--engine", default=None, choices=["auto", "onnx", "torch"], help="inference engine (default: auto)")
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: all cores)")


def config_from_args(args: argparse.Namespace, base: Config | None = None) -> Config:
    base = base or Config()
    return base.with_(
        model=getattr(args, "model", None),
        weights=getattr(args, "weights", None),
        indexes_dir=getattr(args, "indexes", None),
        features_dir=getattr(args, "features", None),
        data_dir=getattr(args, "data_root", None),
        engine=getattr(args, "engine", None),
        backend=getattr(args, "backend", None),
        milvus_uri=getattr(args, "milvus_uri", None),
        threads=getattr(args, "threads", None),
    )


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app.cli", description="Local reverse image search.")
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("search", help="find the images most similar to each IMAGE")
    s.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files, folders (every image below them) or http(s) URLs; the model and the "
                        "index load once for all of them")
    s.add_argument("--collection", "-c", required=True, help="collection name, e.g. caltech101")
    s.add_argument("-k", type=int, default=5, help="number of results, 1-20 (default 5)")
    s.add_argument("--json", action="store_true",
                   help="print one JSON object per query (JSON Lines) instead of tables")
    add_common_args(s)

    ls = sub.add_parser("list", help="list collections and whether they are built")
    ls.add_argument("--json", action="store_true")
    add_common_args(ls)

    b = sub.add_parser("build", help="build a collection's index (the same as scripts/build_index.py)")
    add_build_args(b)
    return parser


def add_build_args(p: argparse.ArgumentParser) -> None:
    """The options of ``build`` / ``scripts/build_index.py``."""
    from .datasets import COLLECTION_KINDS
    from .features import CHUNK_SIZE

    p.add_argument("--collection", required=True, choices=COLLECTION_KINDS, help="dataset layout")
    p.add_argument("--data", required=True, metavar="DIR",
                   help="the collection's folder (as data_download.sh lays it out)")
    p.add_argument("--name", default=None, help="collection name (default: the --collection value)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="a deterministic sample of N images spread over the labels")
    p.add_argument("--include", default="", help="Caltech101: comma-separated folders left out by default "
                   "(BACKGROUND_Google, Faces_easy)")
    add_common_args(p)
    p.add_argument("--workers", type=int, default=None, help="image decoding worker processes")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--chunk-size", type=int, default=CHUNK_SIZE, metavar="N",
                   help=f"images per saved chunk: the most work an interruption can lose (default {CHUNK_SIZE})")
    p.add_argument("--factory", default=None,
                   help="fixed faiss factory string instead of tuning, e.g. 'PCAR128,IVF64,PQ32'")
    p.add_argument("--nprobe", type=int, default=None, help="nprobe for --factory")
    p.add_argument("--target-recall", type=float, default=0.95, help="tuning: recall@5 to reach (default 0.95)")
    p.add_argument("--max-ms", type=float, default=1.0, help="tuning: max ms per query (default 1.0)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def _notice(lines: Sequence[str]) -> None:
    for line in lines:
        print(f"note: {line}", file=sys.stderr)


def expand_queries(arguments: Sequence[str]) -> list[str]:
    """Each argument as given, except a folder, which becomes every image file below it (a folder
    with none stays itself, and fails as a query of its own)."""
    from .datasets import image_files

    out: list[str] = []
    for arg in arguments:
        path = Path(arg)
        found = image_files(path) if not arg.startswith(("http://", "https://")) and path.is_dir() else []
        out += [str(path / rel) for rel in found] or [arg]
    return out


def _query_source(query: str, config: Config) -> object:
    if query.startswith(("http://", "https://")):
        from .fetch import fetch_url

        return fetch_url(query, allow_loopback=config.allow_loopback_urls)
    if not Path(query).exists():
        raise AppError(f"No such file: {query}")
    if Path(query).is_dir():
        raise AppError(f"No image files found in {query}.")
    return query


def cmd_search(args: argparse.Namespace) -> int:
    from .search import SearchService

    config = config_from_args(args)
    service = SearchService(config)
    _notice(service.notices())
    col = service.collection(args.collection)  # a missing or mismatched index fails once, for every query
    k = service.clamp_k(args.k)
    queries = expand_queries(args.images)
    failed = 0
    for n, query in enumerate(queries):
        try:
            result = service.search(_query_source(query, config), args.collection, k)
        except AppError as exc:
            failed += 1
            message = " ".join(exc.user_message().split())
            if args.json:
                print(json.dumps({"query": query, "model": service.embedder.model.name, "error": message}),
                      flush=True)
            else:
                print(f"error: {query}: {message}", file=sys.stderr)
            continue
        if args.json:
            out = {"query": query, "model": service.embedder.model.name,
                   "weights_id": service.embedder.weights_id, "engine": service.embedder.engine, **result.to_json()}
            print(json.dumps(out), flush=True)
            continue
        rows = [(str(h.rank), f"{h.score:.4f}", h.label, h.path) for h in result.hits]
        print(("\n" if n else "") + (f"query: {query}\n" if len(queries) > 1 else "")
              + _table(("rank", "score", "label", "file"), rows))
        print(
            f"\n{len(result.hits)} hits in {args.collection} ({len(col)} images) | "
            f"decode {result.decode_ms:.1f} ms, embed {result.embed_ms:.1f} ms ({service.embedder.engine}), "
            f"search {result.search_ms:.2f} ms, total {result.total_ms:.1f} ms"
        )
    return EXIT_ERROR if failed else 0


def cmd_build(args: argparse.Namespace) -> int:
    from .build import build_collection
    from .weights import UNTRAINED_NOTICE

    if args.chunk_size < 1:
        raise AppError("--chunk-size must be a positive number.")
    config = config_from_args(args).with_(workers=args.workers, batch_size=args.batch_size)
    if str(config.weights).lower() == "untrained":
        _notice([UNTRAINED_NOTICE])
    result = build_collection(
        config,
        kind=args.collection,
        data=args.data,
        name=args.name,
        limit=args.limit,
        include=tuple(x.strip() for x in args.include.split(",") if x.strip()),
        factory=args.factory,
        nprobe=args.nprobe,
        target_recall=args.target_recall,
        max_ms=args.max_ms,
        progress=not args.no_progress,
        chunk_size=args.chunk_size,
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
    print(f"  index: {m['factory']} nprobe={m['nprobe']}, {m['index_bytes'] / 1e6:.2f} MB, "
          f"built in {s['index_seconds']:.1f} s"
          + (f", recall@5 {chosen.get('recall_at_5')} at {chosen.get('ms_per_query')} ms/query" if chosen else ""))
    if tuning and not tuning.get("fixed") and not tuning.get("target_met"):
        print(f"  warning: no configuration reached recall@5 >= {args.target_recall}; kept the best found",
              file=sys.stderr)
    print(f"  files: {config.indexes_dir / (m['name'] + '.faiss')}, {config.features_dir / (m['name'] + '.npy')}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from .search import SearchService

    service = SearchService(config_from_args(args))
    infos = service.collections()
    if args.json:
        print(json.dumps([i.__dict__ for i in infos], indent=2))
        return 0
    rows = [(i.name, "ready" if i.ready else "not built", str(i.size) if i.ready else "", i.build_command)
            for i in infos]
    print(_table(("collection", "status", "images", "build command"), rows))
    return 0


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)] if rows else [len(h) for h in header]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def run(fn, args: argparse.Namespace) -> int:
    """Run a command; turn the core's typed errors into a one-line message and exit code 2."""
    try:
        return fn(args)
    except AppError as exc:
        print(f"error: {' '.join(exc.user_message().split())}", file=sys.stderr)  # always one line
        return EXIT_ERROR
    except KeyboardInterrupt:
        again = " (run the same command again to continue)" if fn is cmd_build else ""
        print(f"interrupted{again}", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    args = make_parser().parse_args(argv)
    return run({"search": cmd_search, "list": cmd_list, "build": cmd_build}[args.command], args)


if __name__ == "__main__":
    sys.exit(main())
