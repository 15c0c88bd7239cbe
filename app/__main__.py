"""``python -m app``: start the web app (see ``--help``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from app.cli.common import EXIT_ERROR, add_common_args, config_from_args
from app.errors import AppError
from app.web import AUTH_ENV, StartupError, parse_auth


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m app",
        description="Local reverse image search in the browser. Serves every built collection.",
    )
    p.add_argument("--data", dest="data_root", default=None, metavar="DIR",
                   help="datasets folder, where collection images are looked up (default: data/)")
    add_common_args(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1, this machine only); "
                        "any other address requires --auth")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--auth", default=None, metavar="USER:PASS",
                   help=f"require this login (prefer the {AUTH_ENV} environment variable: "
                        "command lines are visible to other users)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="another Host name the browser may use (e.g. a reverse proxy's), repeatable")
    p.add_argument("--library-root", action="append", default=[], metavar="DIR",
                   help="a folder whose sub-folders the Collections tab (and the API) may index and change, "
                        "repeatable; without one, collections are managed from the command line only")
    p.add_argument("--allow-loopback-urls", action="store_true", help=argparse.SUPPRESS)  # tests only
    p.add_argument("--collections", default=None, help=argparse.SUPPRESS)  # for app.service.prepare (scripts/run.sh)
    p.add_argument("--verbose", "-v", action="store_true", help="log more")
    return p


def library_roots(paths: Sequence[str]) -> tuple[Path, ...]:
    """The ``--library-root`` folders, resolved; each must exist."""
    roots = []
    for text in paths:
        root = Path(text).expanduser().resolve()
        if not root.is_dir():
            raise StartupError(f"--library-root {text}: not a folder.")
        roots.append(root)
    return tuple(roots)


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from app.web import serve

    try:
        auth = parse_auth(args.auth or os.environ.get(AUTH_ENV))
        config = config_from_args(args).with_(host=args.host, port=args.port, auth=auth,
                                              allow_loopback_urls=args.allow_loopback_urls or None,
                                              library_roots=library_roots(args.library_root) or None)
        return serve(config, allowed_extra=args.allowed_host)
    except (StartupError, AppError) as exc:
        text = exc.user_message() if isinstance(exc, AppError) else str(exc)
        print(f"error: {text}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
