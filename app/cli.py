"""Command line: ``python -m app.cli search IMAGE --collection NAME -k 5 [--json]``.

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
    p.add_argument("--weights", default=None, help="imagenet (default), untrained, or a path to a ResNet-50 state dict")
    p.add_argument("--indexes", default=None, metavar="DIR", help="folder of built indexes (default: indexes/)")
    p.add_argument("--features", default=None, metavar="DIR", help="folder of stored features (default: features/)")
    p.add_argument("--engine", default=None, choices=["auto", "onnx", "torch"], help="inference engine (default: auto)")
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: all cores)")


def config_from_args(args: argparse.Namespace, base: Config | None = None) -> Config:
    base = base or Config()
    return base.with_(
        weights=getattr(args, "weights", None),
        indexes_dir=getattr(args, "indexes", None),
        features_dir=getattr(args, "features", None),
        data_dir=getattr(args, "data_root", None),
        engine=getattr(args, "engine", None),
        threads=getattr(args, "threads", None),
    )


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app.cli", description="Local reverse image search.")
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("search", help="find the images most similar to IMAGE")
    s.add_argument("image", help="an image file, or an http(s) URL")
    s.add_argument("--collection", "-c", required=True, help="collection name, e.g. caltech101")
    s.add_argument("-k", type=int, default=5, help="number of results, 1-20 (default 5)")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_common_args(s)

    ls = sub.add_parser("list", help="list collections and whether they are built")
    ls.add_argument("--json", action="store_true")
    add_common_args(ls)
    return parser


def _notice(lines: Sequence[str]) -> None:
    for line in lines:
        print(f"note: {line}", file=sys.stderr)


def cmd_search(args: argparse.Namespace) -> int:
    from .search import SearchService

    config = config_from_args(args)
    service = SearchService(config)
    _notice(service.notices())
    source: object = args.image
    if args.image.startswith(("http://", "https://")):
        from .fetch import fetch_url

        source = fetch_url(args.image, allow_loopback=config.allow_loopback_urls)
    elif not Path(args.image).exists():
        raise AppError(f"No such file: {args.image}")
    k = service.clamp_k(args.k)
    result = service.search(source, args.collection, k)
    if args.json:
        out = result.to_json()
        out["query"] = args.image
        out["weights_id"] = service.embedder.weights_id
        out["engine"] = service.embedder.engine
        print(json.dumps(out, indent=2))
        return 0
    rows = [(str(h.rank), f"{h.score:.4f}", h.label, h.path) for h in result.hits]
    print(_table(("rank", "score", "label", "file"), rows))
    print(
        f"\n{len(result.hits)} hits in {args.collection} ({len(service.collection(args.collection))} images) | "
        f"decode {result.decode_ms:.1f} ms, embed {result.embed_ms:.1f} ms ({service.embedder.engine}), "
        f"search {result.search_ms:.2f} ms, total {result.total_ms:.1f} ms"
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from .search import SearchService

    service = SearchService(config_from_args(args))
    infos = service.collections()
    if args.json:
        print(json.dumps([i.__dict__ for i in infos], indent=2))
        return 0
    rows = [(i.name, "ready" if i.ready else "not built", str(i.size) if i.ready else "", i.build_command) for i in infos]
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
        print(f"error: {exc.user_message()}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    args = make_parser().parse_args(argv)
    return run({"search": cmd_search, "list": cmd_list}[args.command], args)


if __name__ == "__main__":
    sys.exit(main())
