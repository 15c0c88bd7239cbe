"""``count``, ``add``, ``delete``, ``rename`` and ``drop``: managing a built collection.

    python -m app.cli count --collection my-photos
    python -m app.cli add --collection my-photos ~/Pictures/new.jpg ~/Pictures/2024-summer/
    python -m app.cli delete --collection my-photos --id 17 42
    python -m app.cli delete --collection my-photos --path ~/Pictures/blurry/ 2024/IMG_0001.jpg
    python -m app.cli rename --collection my-photos --to holiday
    python -m app.cli drop --collection holiday

Every change is atomic (a crash leaves the collection as it was) and, with ``--backend milvus
--milvus-uri URI``, goes to Milvus too. ``add`` embeds with the collection's own model. ``delete``
never touches the files; a rebuild of the folder leaves them out until ``add`` names them again.
``drop`` removes the collection's own files (and its Milvus copy) and prints them; never images.
"""

from __future__ import annotations

import argparse
import json
import sys

from app.cli.common import add_common_args, config_from_args


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--collection", "-c", required=True, help="collection name")
    p.add_argument("--indexes", default=None, metavar="DIR", help="folder of built indexes (default: indexes/)")
    p.add_argument("--features", default=None, metavar="DIR", help="folder of stored features (default: features/)")
    p.add_argument("--backend", default=None, choices=["faiss", "milvus"],
                   help="milvus: the change (or the count) goes to Milvus too")
    p.add_argument("--milvus-uri", default=None, metavar="URI",
                   help="with --backend milvus: http://host:19530, or a file path for embedded Milvus Lite")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def add_count_args(p: argparse.ArgumentParser) -> None:
    _store_args(p)


def add_add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files and folders (every image below them)")
    p.add_argument("--collection", "-c", required=True, help="collection name")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--exclude", action="append", default=None, metavar="GLOB",
                   help="leave out files and folders matching GLOB, read like a .gitignore line (repeatable; "
                   "on top of known litter such as @eaDir/ and .thumbnails/, the folder's .risignore and the "
                   "collection's stored --exclude patterns)")
    add_common_args(p)


def add_delete_args(p: argparse.ArgumentParser) -> None:
    _store_args(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", dest="ids", type=int, nargs="+", metavar="N", help="item ids (as search prints them)")
    which.add_argument("--path", dest="paths", nargs="+", metavar="P",
                       help="files or folders: as stored (relative to the collection's folder) or on disk")


def add_rename_args(p: argparse.ArgumentParser) -> None:
    _store_args(p)
    p.add_argument("--to", required=True, metavar="NEW", help="the new name")


def add_drop_args(p: argparse.ArgumentParser) -> None:
    _store_args(p)


def cmd_count(args: argparse.Namespace) -> int:
    from app.service.library import count_items

    n = count_items(config_from_args(args), args.collection)
    print(json.dumps({"collection": args.collection, "count": n}) if args.json else n)
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    from app.service.library import add_paths

    config = collection_config(config_from_args(args), args, args.collection)
    progress = None if args.no_progress or args.json else _progress_line
    summary = add_paths(config, args.collection, args.paths, progress=progress, exclude=tuple(args.exclude or ()))
    code = print_change(summary, args.json)
    from app.cli.objects import print_objects

    print_objects(summary, args.json)  # its object vectors, kept by the service (app/service/object_upkeep.py)
    return code


def cmd_delete(args: argparse.Namespace) -> int:
    from app.service.library import delete_items

    summary = delete_items(config_from_args(args), args.collection, ids=args.ids or (), paths=args.paths or ())
    code = print_change(summary, args.json)
    from app.cli.objects import print_objects

    print_objects(summary, args.json)
    return code


def cmd_rename(args: argparse.Namespace) -> int:
    from app.service.library import rename_collection

    done = rename_collection(config_from_args(args), args.collection, args.to)  # object vectors included
    if args.json:
        print(json.dumps(done.to_json()))
    else:
        print(f"renamed {done.old} to {done.new} ({done.count} images)" + (" (and in Milvus)" if done.milvus else ""))
    return 0


def cmd_drop(args: argparse.Namespace) -> int:
    from app.service.library import drop_collection

    done = drop_collection(config_from_args(args), args.collection)  # object vectors included
    if args.json:
        print(json.dumps(done.to_json()))
        return 0
    print(f"dropped {done.collection}: removed {len(done.removed)} files" +
          (f" and Milvus collections {', '.join(done.milvus)}" if done.milvus else ""))
    for path in done.removed:
        print(f"  {path}")
    return 0


# -- shared with build -----------------------------------------------------------------------------


def collection_config(config, args: argparse.Namespace, name: str):
    """``config`` with the model and weights ``name`` was built with, unless --model/--weights say otherwise
    (re-running a build or adding to a collection never switches its model by accident)."""
    if getattr(args, "model", None) is not None or getattr(args, "weights", None) is not None:
        return config
    from app.errors import IndexMismatchError, IndexMissingError
    from app.index.faiss_store import read_manifest

    try:
        m = read_manifest(config.indexes_dir, name)
    except (IndexMissingError, IndexMismatchError):
        return config
    return config.with_(model=m.model_name, weights=m.weights_arg or config.weights)


def print_change(summary, as_json: bool) -> int:
    """The change summary: ``added N, changed N, removed N, unchanged N``, then the collection's size."""
    if as_json:
        print(json.dumps(summary.to_json()))
        return 0
    for sk in summary.skipped:
        print(f"skipped {sk['path']}: {sk['reason']}", file=sys.stderr)
    print(summary.line())
    if getattr(summary, "excluded", ()):
        from app.core.exclude import excluded_line

        print(excluded_line(summary.excluded))
    index = f"index {summary.index}" + (f" ({summary.index_reason})" if summary.index_reason else "")
    print(f"{summary.collection}: {summary.count} images ({summary.model}), {index}, {summary.seconds:.1f} s"
          + (f"; {summary.reused} new files reused stored vectors" if summary.reused else ""))
    if summary.milvus:
        print(f"  milvus: {summary.milvus['count']} vectors at {summary.milvus['uri']} ({summary.milvus['mode']})")
    return 0


def _progress_line(p) -> None:
    if p.phase == "embedding" and p.total and p.done:
        eta = f", ETA {p.eta_s:.0f} s" if p.eta_s is not None else ""
        print(f"\rembedding {p.done}/{p.total} ({p.images_per_s:.1f} img/s{eta})", end="", file=sys.stderr,
              flush=True)
        if p.done >= p.total:
            print(file=sys.stderr)
