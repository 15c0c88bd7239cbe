"""``load`` (also ``scripts/load.py``): N concurrent clients against the app, with its memory watched.

    python scripts/load.py --clients 8 --seconds 60 --json
    python scripts/load.py --data ../shared/datasets/caltech101 --weights untrained --limit 1000 \\
        --indexes /tmp/load/idx --features /tmp/load/feat --clients 8 --seconds 60

Starts the app (``python -m app``, 127.0.0.1, a free port) over a built collection (``--collection``,
default caltech101, built from ``--data`` when missing), and a local file server for the URL
requests, then runs :func:`app.metrics.load.run_load`: a single-client phase, then ``--clients``
clients for ``--seconds`` seconds on the named API endpoints (new images, reused items, URLs, a few
invalid inputs). Prints a table, or with ``--json`` one object with ``requests``, ``errors``, ``rps``,
``p50_ms``, ``p95_ms``, ``p99_ms``, ``rss_mb_start``, ``rss_mb_end``, ``rss_mb_max`` and
``busy_rejections`` (plus ``single_client_p50_ms``, ``rss_mb_at_10s`` and the targets). Exit 1 if a
target is missed. Targets (8 clients, 60 s): no errors, p95 <= 10 x the single-client p50, and the
RSS at the end within 10% of its level after 10 s.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

from app.cli.common import add_common_args, config_from_args, table
from app.cli.live import AppProcess, FileServer
from app.errors import AppError

SOURCE_PHOTOS = 40  # collection images the query photos are made from


def add_load_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clients", type=int, default=8, metavar="N", help="concurrent clients (default 8)")
    p.add_argument("--seconds", type=float, default=60.0, metavar="S", help="length of the concurrent phase")
    p.add_argument("--collection", default="caltech101", help="the collection searched (default caltech101)")
    p.add_argument("--data", default="data/caltech101", metavar="DIR",
                   help="the Caltech101 folder, when caltech101 has to be built (default data/caltech101)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="when building: a sample of N images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_common_args(p)


def cmd_load(args: argparse.Namespace) -> int:
    from app.metrics.evaluate import ensure_collection
    from app.metrics.load import run_load

    if args.clients < 1 or args.seconds <= 0:
        raise AppError("--clients must be at least 1 and --seconds positive.")
    config = config_from_args(args)
    log = (lambda m: print(m, file=sys.stderr, flush=True))
    if args.collection == "caltech101":
        ensure_collection(config, name="caltech101", kind="caltech101", data=args.data, limit=args.limit,
                          progress_bar=not args.json)
    with tempfile.TemporaryDirectory(prefix="ris-load-") as tmp:
        inputs_dir = Path(tmp)
        n_new = max(200, int(args.seconds * 15))
        inputs = make_inputs(config, args.collection, inputs_dir, n_new=n_new, n_url=100, seed=args.seed)
        server = AppProcess(config)
        with server as url, FileServer(inputs_dir / "site") as site:
            inputs.urls = [f"{site}/{name}" for name in inputs.urls]
            log(f"app at {url} (pid {server.pid}); {args.clients} clients for {args.seconds:g} s")
            r = run_load(url, inputs, clients=args.clients, seconds=args.seconds, server_pid=server.pid, seed=args.seed)
    print(json.dumps(r, indent=2) if args.json else format_load(r))
    return 0 if all(t["pass"] for t in r["targets"]) else 1


def make_inputs(config, collection: str, folder: Path, *, n_new: int, n_url: int, seed: int):
    """Distinct photos made from the collection's own images (crops, flips, tints), a site for the URL
    requests, and a non-image file."""
    from PIL import Image, ImageOps

    from app.core.images import load_image
    from app.metrics.load import LoadInputs
    from app.service.search import SearchService

    col = SearchService(config).collection(collection)
    rng = random.Random(seed)
    sources = [load_image(col.item_path(i)) for i in rng.sample(range(len(col)), min(SOURCE_PHOTOS, len(col)))]
    (folder / "new").mkdir(parents=True)
    (folder / "site").mkdir()

    def variant(out: Path) -> Path:
        img = rng.choice(sources)
        w, h = img.size
        f = rng.uniform(0.7, 0.95)
        x, y = rng.randint(0, int(w * (1 - f))), rng.randint(0, int(h * (1 - f)))
        v = img.crop((x, y, x + max(1, int(w * f)), y + max(1, int(h * f))))
        v = ImageOps.mirror(v) if rng.random() < 0.5 else v
        tint = Image.new("RGB", v.size, tuple(rng.randint(0, 255) for _ in range(3)))
        Image.blend(v, tint, rng.uniform(0.0, 0.15)).save(out, quality=88)
        return out

    photos = [variant(folder / "new" / f"n{i:05d}.jpg") for i in range(n_new)]
    urls = [variant(folder / "site" / f"u{i:04d}.jpg").name for i in range(n_url)]
    invalid = folder / "not-an-image.jpg"
    invalid.write_text("this is a text file, not a JPEG\n" * 10)
    return LoadInputs(collection, photos, urls, len(col), invalid)


def format_load(r: dict[str, Any]) -> str:
    rows = [(k, r[k]) for k in ("requests", "errors", "rps", "single_client_p50_ms", "p50_ms", "p95_ms", "p99_ms",
                                "rss_mb_start", "rss_mb_at_10s", "rss_mb_end", "rss_mb_max", "busy_rejections")]
    lines = [table(("measure", f"{r['clients']} clients, {r['seconds']:g} s"), rows), ""]
    lines += [f"{t['target']}: {t['value']} (limit {t['limit']}) {'PASS' if t['pass'] else 'FAIL'}" for t in r["targets"]]
    lines += [f"error: {e}" for e in r["error_examples"]]
    return "\n".join(lines)
