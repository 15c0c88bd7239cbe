"""``python -m app.cli COMMAND``: every command line of the project, one parser, one error handler.

Commands: ``search`` (files, folders, URLs), ``list``, ``build`` (also ``scripts/build_index.py``;
incremental when the collection exists), ``count``, ``add``, ``delete``, ``rename`` and ``drop``
(managing a collection), ``evaluate``, ``bench`` and ``bench-scale`` (``scripts/evaluate.py``, ``scripts/bench.py``,
``scripts/bench_scale.py``),
``download`` (also ``data_download.sh``), ``sync`` (to Milvus), ``quantize`` (the INT8 model) and
``prepare`` (``scripts/run.sh``), ``watch`` (keep a folder's collection current), ``verify`` (read and
check every file of a collection).
Expected failures (a bad image, a missing index, offline weights) exit 2 with a one-line reason.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from app.cli import (
    bench,
    bench_scale,
    bench_ui,
    build,
    detector,
    download,
    duplicates,
    evaluate,
    evaluate_duplicates,
    evaluate_objects,
    load,
    manage,
    objects,
    prepare,
    quantize,
    search,
    sync,
    verify,
    watch,
)
from app.cli.common import run

# command -> (help, add its arguments, run it, what Ctrl-C leaves behind)
COMMANDS = {
    "search": ("find the images most similar to each IMAGE", search.add_search_args, search.cmd_search, ""),
    "objects": ("list the objects the detector finds in each IMAGE", objects.add_objects_args,
                objects.cmd_objects, ""),
    "detector": ("install the object detector, or say whether it is installed", detector.add_detector_args,
                 detector.cmd_detector, "nothing half-made is left; run it again"),
    "list": ("list collections and whether they are built", build.add_list_args, build.cmd_list, ""),
    "build": ("build a collection's index (the same as scripts/build_index.py)", build.add_build_args,
              build.cmd_build, build.RESUME),
    "count": ("print the number of valid images of a collection", manage.add_count_args, manage.cmd_count, ""),
    "add": ("index image files or folders into a collection", manage.add_add_args, manage.cmd_add,
            "nothing was changed; run it again to continue"),
    "delete": ("remove items from a collection, by id or path (the files stay)", manage.add_delete_args,
               manage.cmd_delete, ""),
    "rename": ("rename a collection", manage.add_rename_args, manage.cmd_rename, ""),
    "drop": ("remove a collection's files (and its Milvus copy); never images", manage.add_drop_args,
             manage.cmd_drop, ""),
    "duplicates": ("exact copies, edited copies and near-identical shots, grouped; --clean, --undo",
                   duplicates.add_duplicates_args, duplicates.cmd_duplicates, ""),
    "evaluate-duplicates": ("precision and recall of duplicates on an edited-copy benchmark "
                            "(scripts/evaluate_duplicates.py)", evaluate_duplicates.add_evaluate_duplicates_args,
                            evaluate_duplicates.cmd_evaluate_duplicates, ""),
    "watch": ("keep a folder's collection current: new, changed, moved and deleted files", watch.add_watch_args,
              watch.cmd_watch, "every change applied so far is committed; the next start catches up"),
    "download": ("download the datasets or the ResNet-50 weights", download.add_download_args,
                 download.cmd_download, download.RESUME),
    "sync": ("push a built collection's vectors to Milvus", sync.add_sync_args, sync.cmd_sync, ""),
    "verify": ("read every file of a collection and check it (loading checks a sample)", verify.add_verify_args,
               verify.cmd_verify, ""),
    "evaluate": ("retrieval quality and index recall of a collection (scripts/evaluate.py)",
                 evaluate.add_evaluate_args, evaluate.cmd_evaluate, ""),
    "evaluate-objects": ("object detection AP50 and object-query hit@5 on a VOC-layout folder "
                         "(scripts/evaluate_objects.py)", evaluate_objects.add_evaluate_objects_args,
                         evaluate_objects.cmd_evaluate_objects, ""),
    "bench": ("speed of the query and build paths (scripts/bench.py)", bench.add_bench_args, bench.cmd_bench, ""),
    "bench-scale": ("build, memory, startup, queries, recall, add and delete at 10k to 1M photos "
                    "(scripts/bench_scale.py)", bench_scale.add_bench_scale_args, bench_scale.cmd_bench_scale, ""),
    "bench-ui": ("what the user waits for, in a real browser (scripts/bench_ui.py)", bench_ui.add_bench_ui_args,
                 bench_ui.cmd_bench_ui, ""),
    "load": ("concurrent clients against the app, memory watched (scripts/load.py)", load.add_load_args,
             load.cmd_load, ""),
    "quantize": ("make the INT8 model of --engine onnx-int8 from a built collection's images",
                 quantize.add_quantize_args, quantize.cmd_quantize, ""),
    "prepare": ("get weights, datasets and indexes ready (scripts/run.sh)", prepare.add_prepare_args,
                prepare.cmd_prepare, prepare.RESUME),
}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app.cli", description="Local reverse image search.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (text, add_args, _, _) in COMMANDS.items():
        module = sys.modules[add_args.__module__]
        add_args(sub.add_parser(name, help=text, description=module.__doc__ or text,
                                formatter_class=argparse.RawDescriptionHelpFormatter))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    parser = make_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and args.command != "prepare":  # prepare leaves the app's own options to the app
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    _, _, fn, interrupted = COMMANDS[args.command]
    return run(fn, args, interrupted=interrupted)
