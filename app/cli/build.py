"""``build`` (also ``scripts/build_index.py``): embed a collection's images into features/ and save a
tuned faiss index in indexes/; and ``list``.

    python scripts/build_index.py --kind caltech101 --data data/caltech101
    python scripts/build_index.py --kind caltech101 --data data/caltech101 --model efficientnet-lite0
    python scripts/build_index.py --kind folder --data ~/Pictures --name my-photos

(``--collection KIND``, the old spelling of ``--kind``, still works.)

Resumable: if it is interrupted, run the same command again and it continues.
Incremental: run it again later and only new and changed files are embedded, deleted ones removed;
it prints ``added N, changed N, removed N, unchanged N``. Without --model/--weights a re-run uses the
collection's own model. ``--rebuild`` builds from scratch (and renumbers the ids).
"""

from __future__ import annotations

import argparse
import json
import sys

from app.cli.common import add_common_args, add_kind_args, config_from_args, kind_from_args, notice, table
from app.errors import AppError

RESUME = "run the same command again to continue"


def add_list_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")
    add_common_args(p)


def add_build_args(p: argparse.ArgumentParser) -> None:
    """The options of ``build`` / ``scripts/build_index.py``."""
    from app.core.features import CHUNK_SIZE

    add_kind_args(p, required=True)
    p.add_argument("--data", required=True, metavar="DIR",
                   help="the collection's folder (as data_download.sh lays it out)")
    p.add_argument("--name", default=None, help="collection name (default: the --kind value)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="a deterministic sample of N images spread over the labels")
    p.add_argument("--include", default="", help="Caltech101: comma-separated folders left out by default "
                   "(BACKGROUND_Google, Faces_easy)")
    p.add_argument("--exclude", action="append", default=None, metavar="GLOB",
                   help="leave out files and folders matching GLOB, read like a .gitignore line (repeatable; on "
                   "top of known litter such as @eaDir/ and .thumbnails/, and the folder's .risignore). Stored with "
                   "the collection: an update rescans with the same ones; given again, they replace them")
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
    p.add_argument("--rebuild", action="store_true", help="build from scratch even when the collection exists "
                   "(new ids); by default a re-run is an incremental update")
    p.add_argument("--no-dba", action="store_true",
                   help="a new build without database-side augmentation (features/NAME.dba.npz, used by re-ranking)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--objects", action=argparse.BooleanOptionalAction, default=None,
                   help="also store one vector per detected object of each photo (default: on for voc2012 and "
                        "folder, off for caltech101; needs the detector: python -m app.cli detector install)")


def cmd_build(args: argparse.Namespace) -> int:
    from app.cli.manage import collection_config
    from app.core.weights import UNTRAINED_NOTICE
    from app.service.library import build

    if args.chunk_size < 1:
        raise AppError("--chunk-size must be a positive number.")
    spec = _spec(args)
    config = config_from_args(args).with_(workers=args.workers, batch_size=args.batch_size)
    config = collection_config(config, args, spec.collection_name)
    if config.backend == "milvus" and not config.milvus_uri:
        raise AppError("--backend milvus needs --milvus-uri (http://host:19530, or a file path for Milvus Lite).")
    if str(config.weights).lower() == "untrained":
        notice([UNTRAINED_NOTICE])
    result = build(config, spec, progress_bar=not args.no_progress, objects=args.objects)  # object vectors too
    code = _report(args, config, result)
    from app.cli.objects import print_objects

    print_objects(result.changes, args.json)
    return code


def _report(args: argparse.Namespace, config, result) -> int:
    from app.cli.manage import print_change
    from app.core.exclude import excluded_line

    m, s, changes = result.manifest.to_json(), result.stats, result.changes
    assert changes is not None
    if args.json:
        print(json.dumps({"manifest": m, "stats": s, "skipped": result.skipped, "changes": changes.to_json()},
                         indent=2))
        return 0
    if not changes.full_build:
        return print_change(changes, False)
    for sk in result.skipped:
        print(f"skipped {sk['path']}: {sk['reason']}", file=sys.stderr)
    _print_summary(m, s, args.target_recall)
    print(f"  {changes.line()}")
    if changes.excluded:
        print(f"  {excluded_line(changes.excluded)}")
    print(f"  files: {config.indexes_dir / m['index_file']}, {config.features_dir / m['features']}")
    if changes.milvus:
        print(f"  milvus: {changes.milvus['count']} vectors pushed to {config.milvus_uri}")
    return 0


def _spec(args: argparse.Namespace):
    from app.service.build import BuildSpec

    return BuildSpec(
        kind=kind_from_args(args), data=args.data, name=args.name, limit=args.limit,
        include=tuple(x.strip() for x in args.include.split(",") if x.strip()),
        factory=args.factory, nprobe=args.nprobe, target_recall=args.target_recall, max_ms=args.max_ms,
        chunk_size=args.chunk_size, rebuild=args.rebuild, dba=not getattr(args, "no_dba", False),
        exclude=tuple(args.exclude) if args.exclude is not None else None,
    )


def _print_summary(m: dict, s: dict, target_recall: float) -> None:
    tuning = m.get("tuning", {})
    chosen = tuning.get("chosen") or {}
    print(f"built {m['name']}: {m['count']} images indexed, {s['skipped']} skipped"
          + (f", {s['resumed_rows']} resumed from an earlier run" if s["resumed_rows"] else ""))
    print(f"  model: {m['model']} ({m['weights_id']}), {m['dim']}-d")
    print(f"  embedding: {s['img_per_s']:.1f} img/s over {s['seconds']:.1f} s (engine {m.get('engine')})")
    print(f"  index: {m['factory']} nprobe={m['nprobe']}, {m['index_bytes'] / 1e6:.2f} MB, "
          f"built in {s['index_seconds']:.1f} s"
          + (f", recall@5 {chosen.get('recall_at_5')}"
             + (f" re-scoring {chosen['rescore']} candidates" if chosen.get("rescore") else "")
             + f" at {chosen.get('ms_per_query')} ms/query" if chosen else ""))
    if tuning and not tuning.get("fixed") and not tuning.get("target_met"):
        print(f"  warning: no configuration reached recall@5 >= {target_recall}; kept the best found",
              file=sys.stderr)


def cmd_list(args: argparse.Namespace) -> int:
    from app.service.search import SearchService

    service = SearchService(config_from_args(args))
    infos = service.collections()
    if args.json:
        print(json.dumps([i.__dict__ for i in infos], indent=2))
        return 0
    running = service.embedder.model.name

    def status(i) -> str:
        if i.ready:
            return "ready"
        return f"built with {i.model}" if i.model and i.model != running else ("not built" if not i.model else "unusable")

    rows = [(i.name, status(i), str(i.size) if i.ready else "", i.model if i.ready else "",
             "" if i.ready else i.build_command) for i in infos]
    print(table(("collection", "status", "images", "model", "build command"), rows))
    return 0


