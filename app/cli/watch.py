"""``watch``: keep a folder's collection current while it runs.

    python -m app.cli watch --collection my-photos
    python -m app.cli watch --collection my-photos --debounce 2 --for 3600

It first catches up with what changed since the last build or watch, then applies new, changed, moved
and deleted files as they come (a burst of events becomes one change). If the folder disappears (an
unmounted drive) it waits, says so, and never deletes the collection. Ctrl-C stops it; every change
it applied is committed, and the next start catches up with the rest.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

from app.cli.common import add_common_args, config_from_args
from app.errors import AppError


def add_watch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--collection", "-c", required=True, help="the collection whose folder to watch")
    p.add_argument("--debounce", type=float, default=0.5, metavar="S",
                   help="seconds of quiet before the gathered events are applied (default 0.5)")
    p.add_argument("--max-delay", type=float, default=10.0, metavar="S",
                   help="apply at least this often while events keep coming (default 10)")
    p.add_argument("--for", dest="seconds", type=float, default=None, metavar="S",
                   help="stop after S seconds (default: until Ctrl-C)")
    p.add_argument("--quiet", action="store_true", help="no status lines")
    add_common_args(p)


def cmd_watch(args: argparse.Namespace) -> int:
    from app.cli.manage import collection_config
    from app.service.watch import FolderWatcher

    if args.debounce < 0 or args.max_delay <= 0 or (args.seconds is not None and args.seconds <= 0):
        raise AppError("--debounce, --max-delay and --for must be positive numbers of seconds.")
    config = collection_config(config_from_args(args), args, args.collection)
    watcher = FolderWatcher(config, args.collection, debounce_s=args.debounce, max_delay_s=args.max_delay,
                            on_status=None if args.quiet else _status_line)
    stop = threading.Event()
    try:
        watcher.run(stop, max_seconds=args.seconds)
    except KeyboardInterrupt:
        stop.set()
        print(f"stopped watching {watcher.root} ({watcher.status.changes} changes applied)", file=sys.stderr)
    return 0


def _status_line(status) -> None:
    print(f"{time.strftime('%H:%M:%S')} {status.state}: {status.message}", file=sys.stderr, flush=True)
