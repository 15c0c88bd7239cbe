"""``search``: the images most similar to each query (files, folders, URLs), one model and index load."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from app.cli.common import EXIT_ERROR, add_common_args, config_from_args, notice, table
from app.config import Config
from app.errors import AppError


def add_search_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files, folders (every image below them) or http(s) URLs; the model and the "
                        "index load once for all of them")
    s.add_argument("--collection", "-c", required=True, help="collection name, e.g. caltech101")
    s.add_argument("-k", type=int, default=5, help="number of results, 1-20 (default 5)")
    s.add_argument("--json", action="store_true",
                   help="print one JSON object per query (JSON Lines) instead of tables")
    s.add_argument("--since", default=None, metavar="YYYY-MM-DD", help="only photos taken on or after this day "
                   "(EXIF DateTimeOriginal, else the file time, as recorded at build time)")
    s.add_argument("--until", default=None, metavar="YYYY-MM-DD", help="only photos taken on or before this day")
    s.add_argument("--folder", default=None, metavar="SUB", help="only photos below this sub-folder of the collection")
    s.add_argument("--camera", default=None, metavar="TEXT", help="only photos whose camera name contains TEXT")
    s.add_argument("--min-band", default=None, choices=["same photo", "very similar", "similar", "loosely related"],
                   help="leave out hits below this similarity band")
    add_common_args(s)


def expand_queries(arguments: Sequence[str]) -> list[str]:
    """Each argument as given, except a folder, which becomes every image file below it (a folder
    with none stays itself, and fails as a query of its own)."""
    from app.core.datasets import image_files

    out: list[str] = []
    for arg in arguments:
        path = Path(arg)
        found = image_files(path) if not arg.startswith(("http://", "https://")) and path.is_dir() else []
        out += [str(path / rel) for rel in found] or [arg]
    return out


def _query_source(query: str, config: Config) -> object:
    if query.startswith(("http://", "https://")):
        from app.net.fetch import fetch_url

        return fetch_url(query, allow_loopback=config.allow_loopback_urls)
    if not Path(query).exists():
        raise AppError(f"No such file: {query}")
    if Path(query).is_dir():
        raise AppError(f"No image files found in {query}.")
    return query


def cmd_search(args: argparse.Namespace) -> int:
    from app.service.search import SearchService

    config = config_from_args(args)
    service = SearchService(config)
    notice(service.notices())
    col = service.collection(args.collection)  # a missing or mismatched index fails once, for every query
    k = service.clamp_k(args.k)
    queries = expand_queries(args.images)
    from app.service.filters import band, parse_filter, search_filtered

    flt = parse_filter(since=args.since, until=args.until, folder=args.folder, camera=args.camera,
                       min_band=args.min_band)
    failed = 0
    for n, query in enumerate(queries):
        try:
            if flt.selects or flt.min_band:
                filtered = search_filtered(service, _query_source(query, config), args.collection, k, flt)
                _print_filtered(query, filtered, service, args.json, n)
                continue
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
            for hit in out["hits"]:
                hit["band"] = band(hit["score"])
            print(json.dumps(out), flush=True)
            continue
        rows = [(str(h.rank), f"{h.score:.4f}", h.label, h.path, band(h.score)) for h in result.hits]
        print(("\n" if n else "") + (f"query: {query}\n" if len(queries) > 1 else "")
              + table(("rank", "score", "label", "file", "similarity"), rows))
        print(
            f"\n{len(result.hits)} hits in {args.collection} ({len(col)} images) | "
            f"decode {result.decode_ms:.1f} ms, embed {result.embed_ms:.1f} ms ({service.embedder.engine}), "
            f"search {result.search_ms:.2f} ms, total {result.total_ms:.1f} ms"
        )
    return EXIT_ERROR if failed else 0


def _print_filtered(query: str, result, service, as_json: bool, n: int) -> None:
    if as_json:
        print(json.dumps({"query": query, "model": service.embedder.model.name,
                          "weights_id": service.embedder.weights_id, "engine": service.embedder.engine,
                          **result.to_json()}), flush=True)
        return
    rows = [(str(h["rank"]), f"{h['score']:.4f}", h["label"], h["path"], h["band"],
             (h["meta"] or {}).get("taken", "")[:10], (h["meta"] or {}).get("camera") or "") for h in result.hits]
    print(("\n" if n else "") + f"query: {query}\n"
          + table(("rank", "score", "label", "file", "similarity", "taken", "camera"), rows))
    print(f"\n{len(result.hits)} hits among {result.matching} matching images | "
          f"search {result.timings_ms['search']:.1f} ms, total {result.timings_ms['total']:.1f} ms")


