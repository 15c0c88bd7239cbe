"""What every command line shares: the model/index options, the one Config they make, tables, and the
one handler that turns the core's typed errors into a one-line message and an exit code."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

from app.config import Config
from app.errors import AppError

EXIT_ERROR = 2  # an expected failure: bad input, missing index or weights, refused URL...
EXIT_INTERRUPTED = 130


def add_common_args(p: argparse.ArgumentParser) -> None:
    from app.core.models import DEFAULT_MODEL, ENGINES, model_names

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
    p.add_argument("--engine", default=None, choices=list(ENGINES),
                   help="inference engine: ONNX Runtime fp32 (onnx), ONNX Runtime INT8 (onnx-int8: calibrated on a "
                        "collection's images, see 'quantize'), or torch (default: auto: onnx on a CPU, torch on CUDA)")
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: all cores)")
    p.add_argument("--no-rerank", action="store_true",
                   help="no query expansion: the raw nearest neighbours (default: re-ranked by alpha query expansion)")


def add_kind_args(p: argparse.ArgumentParser, *, required: bool, default: str | None = None) -> None:
    """``--kind`` (the dataset layout), and its old spelling ``--collection``, still accepted with a notice
    (``--collection`` means a collection's name everywhere else)."""
    from app.core.datasets import COLLECTION_KINDS

    what = "dataset layout" + (f" (default {default})" if default else "")
    p.add_argument("--kind", default=None, choices=COLLECTION_KINDS, help=what)
    p.add_argument("--collection", dest="old_kind", default=None, choices=COLLECTION_KINDS,
                   help="the old spelling of --kind")
    p.set_defaults(kind_required=required, kind_default=default)


def kind_from_args(args: argparse.Namespace) -> str:
    """The ``--kind`` given (or its old spelling, with a one-line notice, or the default)."""
    if args.old_kind is not None:
        if args.kind is not None and args.kind != args.old_kind:
            raise AppError(f"--kind {args.kind} and --collection {args.old_kind} disagree; give --kind only.")
        notice([f"--collection {args.old_kind} is now spelled --kind {args.old_kind} (--collection names a "
                "collection everywhere else)."])
        return args.old_kind
    if args.kind is None and args.kind_required:
        raise AppError("--kind is required (caltech101, voc2012 or folder).")
    return args.kind or args.kind_default


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
        rerank=False if getattr(args, "no_rerank", False) else None,
    )


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)] if rows else [len(h) for h in header]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(line.rstrip() for line in lines)




def print_query_error(query: str, exc: AppError, as_json: bool, **extra: object) -> None:
    """A query that failed, in a run of several: a JSON line with its ``error``, or ``error: QUERY: message``
    on stderr; the run goes on."""
    message = " ".join(exc.user_message().split())
    if as_json:
        print(json.dumps({"query": query, **extra, "error": message}), flush=True)
    else:
        print(f"error: {query}: {message}", file=sys.stderr)


def notice(lines: Sequence[str]) -> None:
    for line in lines:
        print(f"note: {line}", file=sys.stderr)


def run(fn: Callable[[argparse.Namespace], int], args: argparse.Namespace, *, interrupted: str = "") -> int:
    """Run a command: a typed error becomes ``error: <one line>`` on stderr and exit 2; Ctrl-C exits
    130 with ``interrupted`` (what happens to the work done so far). Every entry point uses this."""
    try:
        return fn(args)
    except AppError as exc:
        print(f"error: {' '.join(exc.user_message().split())}", file=sys.stderr)  # always one line
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted" + (f" ({interrupted})" if interrupted else ""), file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. piped into head
        return 0
