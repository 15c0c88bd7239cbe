"""``search``: the images most similar to each query (files, folders, URLs), one model and index load."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from app.cli.common import EXIT_ERROR, add_common_args, config_from_args, notice, print_query_error, table
from app.config import Config
from app.errors import AppError
from app.service.filters import BAND_NAMES, parse_filter


def add_search_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files, folders (every image below them) or http(s) URLs; the model and the "
                        "index load once for all of them")
    s.add_argument("--collection", "-c", required=True, help="collection name, e.g. caltech101")
    s.add_argument("-k", type=int, default=5, help="number of results, 1-20 (default 5)")
    s.add_argument("--json", action="store_true",
                   help="print one JSON object per query (JSON Lines) instead of tables")
    s.add_argument("--box", type=float, nargs=4, default=None, metavar=("X1", "Y1", "X2", "Y2"),
                   help="search only this region of each image, in its pixels (clipped to the image; a box of "
                        "no size is refused)")
    s.add_argument("--objects", action="store_true",
                   help="search the objects inside the collection's photos (built with --objects): every hit is "
                        "an object, with its box")
    s.add_argument("--since", default=None, metavar="YYYY-MM-DD", help="only photos taken on or after this day "
                   "(EXIF DateTimeOriginal, else the file time, as recorded at build time)")
    s.add_argument("--until", default=None, metavar="YYYY-MM-DD", help="only photos taken on or before this day")
    s.add_argument("--folder", default=None, metavar="SUB", help="only photos below this sub-folder of the collection")
    s.add_argument("--camera", default=None, metavar="TEXT", help="only photos whose camera name contains TEXT")
    s.add_argument("--min-band", default=None, choices=list(BAND_NAMES),
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


def _source(query: str, config: Config, box) -> object:
    """The query, or with ``--box`` the image's region inside the box (clipped to it)."""
    if box is None:
        return _query_source(query, config)
    from app.core.detect import crop_box

    return crop_box(_query_source(query, config), box)


def cmd_search(args: argparse.Namespace) -> int:
    from app.service.search import SearchService

    config = config_from_args(args)
    service = SearchService(config)
    notice(service.notices())
    col = service.collection(args.collection)  # a missing or mismatched index fails once, for every query
    queries = expand_queries(args.images)
    if args.objects:
        from app.cli.objects import search_objects_cli

        return search_objects_cli(args, service, col, service.clamp_k(args.k), queries,
                                  lambda q: _source(q, config, args.box))
    where = parse_filter(since=args.since, until=args.until, folder=args.folder, camera=args.camera,
                         min_band=args.min_band)
    where = where if (where.selects or where.min_band) else None
    failed = 0
    for n, query in enumerate(queries):
        try:
            result = service.search_new_image(_source(query, config, args.box), args.collection, args.k, where=where)
        except AppError as exc:
            failed += 1
            print_query_error(query, exc, args.json, model=service.embedder.model.name)
            continue
        if args.json:
            out = {"query": query, "model": service.embedder.model.name,
                   "weights_id": service.embedder.weights_id, "engine": service.embedder.engine, **result.to_json()}
            print(json.dumps(out), flush=True)
            continue
        rows = [(str(h.rank), f"{h.score:.4f}", h.label, h.path, h.band, *_taken_and_camera(h, where))
                for h in result.hits]
        header = ("rank", "score", "label", "file", "similarity") + (("taken", "camera") if where else ())
        print(("\n" if n else "") + (f"query: {query}\n" if len(queries) > 1 else "") + table(header, rows))
        among = f" among {result.matching} matching images" if result.matching is not None else ""
        print(
            f"\n{len(result.hits)} hits in {args.collection} ({len(col)} images){among} | "
            f"decode {result.ms('decode'):.1f} ms, preprocess {result.ms('preprocess'):.1f} ms, "
            f"embed {result.ms('embed'):.1f} ms ({service.embedder.engine}), "
            f"search {result.ms('search'):.2f} ms, total {result.ms('total'):.1f} ms"
        )
    return EXIT_ERROR if failed else 0


def _taken_and_camera(hit, where) -> tuple[str, ...]:
    """The table's capture day and camera columns, shown when the search was filtered."""
    if where is None:
        return ()
    meta = hit.meta or {}
    return (str(meta.get("taken") or "")[:10], meta.get("camera") or "")
