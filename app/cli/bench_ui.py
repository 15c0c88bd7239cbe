"""``bench-ui`` (also ``scripts/bench_ui.py``): what the user waits for, measured in a real browser.

    python scripts/bench_ui.py --data ../shared/datasets/caltech101 --weights untrained --limit 1000
    python scripts/bench_ui.py --data ../shared/datasets/caltech101 --weights untrained --json

Starts the app (``python -m app``, 127.0.0.1, a free port) over a built caltech101 collection (built
from --data when missing, a --limit sample when given), drives it in Debian's Chromium with
Playwright, and times each path from the user's action to the results rendered (a newer status line,
k result images loaded): uploading a new photo, clicking a result, clicking an example, fetching an
image URL from a local HTTP server; plus the page's first contentful paint, and Gradio's own floor (a
click in a minimal Blocks app, :mod:`app.metrics.gradio_floor`, timed the same way). Every round uses another
photo (new images run the model). Needs Playwright and /usr/bin/chromium (scripts/test.sh installs
both). Targets (2 cores, untrained ResNet-50): upload p50 <= 600 ms, click and example p50 <= 250 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.cli.common import add_common_args, config_from_args, table
from app.cli.live import AppProcess, FileServer
from app.errors import AppError

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                 "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
WAIT_S = 30  # the longest one wait may take
TARGETS = (("upload_to_results_ms_p50", 600.0), ("click_result_to_results_ms_p50", 250.0),
           ("example_to_results_ms_p50", 250.0))
K = 5


def add_bench_ui_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="data/caltech101", metavar="DIR",
                   help="the Caltech101 folder, used when the collection has to be built (default data/caltech101)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="when building: a sample of N images")
    p.add_argument("--rounds", type=int, default=20, metavar="N", help="rounds per path (default 20, at least 20)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--headed", action="store_true", help=argparse.SUPPRESS)
    add_common_args(p)


def cmd_bench_ui(args: argparse.Namespace) -> int:
    from app.metrics.evaluate import ensure_collection

    if args.rounds < 20:
        raise AppError("--rounds must be at least 20.")
    if not Path(CHROMIUM).is_file():
        raise AppError(f"{CHROMIUM} is missing.", hint="Install Debian's chromium (scripts/test.sh does).")
    config = config_from_args(args)
    log = (lambda m: print(m, file=sys.stderr, flush=True))
    log("checking caltech101")
    ensure_collection(config, name="caltech101", kind="caltech101", data=args.data, limit=args.limit,
                      progress_bar=not args.json)
    result = run_bench_ui(args, config, log)
    print(json.dumps(result, indent=2) if args.json else format_bench_ui(result))
    return 0


def run_bench_ui(args: argparse.Namespace, config, log) -> dict[str, Any]:
    """Start the app and a local file server, then time every path in the browser."""
    from app.service.search import SearchService

    col = SearchService(config).collection("caltech101")
    rng = np.random.default_rng(0)
    jpegs = [i for i, p in enumerate(col.table.paths) if col.live_mask[i] and p.lower().endswith((".jpg", ".jpeg"))]
    picks = rng.choice(jpegs, size=min(len(jpegs), 3 * args.rounds + 2), replace=False).tolist()
    with tempfile.TemporaryDirectory(prefix="bench-ui-") as tmp:
        photos = [shutil.copy(col.item_path(i), Path(tmp) / f"q{n:03d}.jpg") for n, i in enumerate(picks)]
        with AppProcess(config) as url, FileServer(Path(tmp)) as site:
            log(f"app at {url}; {args.rounds} rounds per path")
            times = _drive(url, site, [Path(p) for p in photos], args.rounds, headed=args.headed)
        thumbs = _thumbnails([Path(p) for p in photos[:12]], Path(tmp) / "thumbs")
        with AppProcess(config, floor_images=thumbs) as url:
            log(f"Gradio floor app at {url}")
            times["floor"] = _drive_floor(url, args.rounds, headed=args.headed)
    return summarize(times, args.rounds, config)


def _thumbnails(photos: list[Path], folder: Path) -> Path:
    from app.core.thumbnails import THUMB_SIZE, render_jpeg

    folder.mkdir(parents=True, exist_ok=True)
    for p in photos:
        (folder / p.name).write_bytes(render_jpeg(p, THUMB_SIZE))
    return folder


def summarize(times: dict[str, list[float]], rounds: int, config) -> dict[str, Any]:
    def q(name: str, pct: float) -> float:
        return round(float(np.percentile(times[name], pct)), 1)

    r: dict[str, Any] = {
        "upload_to_results_ms_p50": q("upload", 50), "upload_to_results_ms_p95": q("upload", 95),
        "click_result_to_results_ms_p50": q("click", 50), "click_result_to_results_ms_p95": q("click", 95),
        "example_to_results_ms_p50": q("example", 50), "example_to_results_ms_p95": q("example", 95),
        "url_to_results_ms_p50": q("url", 50), "url_to_results_ms_p95": q("url", 95),
        "first_paint_ms": round(float(np.median(times["first_paint"])), 1),
    }
    if times.get("floor"):
        r["gradio_click_floor_ms_p50"] = q("floor", 50)
        r["gradio_click_floor_ms_p95"] = q("floor", 95)
        r["click_overhead_over_floor_ms_p50"] = round(r["click_result_to_results_ms_p50"] - r["gradio_click_floor_ms_p50"], 1)
    r["targets"] = [{"metric": key, "value": r[key], "limit": limit, "pass": r[key] <= limit}
                    for key, limit in TARGETS]
    r["details"] = {"rounds": rounds, "model": config.model, "weights": str(config.weights), "k": K,
                    "cpu_count": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()]}
    return r


def format_bench_ui(r: dict[str, Any]) -> str:
    rows = [(path, f"{r[f'{key}_ms_p50']:.0f}", f"{r[f'{key}_ms_p95']:.0f}")
            for path, key in (("upload a new photo", "upload_to_results"), ("click a result", "click_result_to_results"),
                              ("click an example", "example_to_results"), ("image URL", "url_to_results"))]
    if "gradio_click_floor_ms_p50" in r:
        rows.append(("Gradio floor: a click in a minimal Blocks app", f"{r['gradio_click_floor_ms_p50']:.0f}",
                     f"{r['gradio_click_floor_ms_p95']:.0f}"))
    lines = [table(("user action -> results rendered", "p50 ms", "p95 ms"), rows),
             f"\nfirst contentful paint: {r['first_paint_ms']:.0f} ms"]
    lines += [f"{t['metric']}: {t['value']:.0f} ms (target <= {t['limit']:.0f}) {'PASS' if t['pass'] else 'FAIL'}"
              for t in r["targets"]]
    return "\n".join(lines)


# -- the browser ----------------------------------------------------------------------------------

_RESULTS_SHOWN = """([after, k]) => {
    const st = document.querySelector('#status .ris-status');
    if (!st || Number(st.dataset.seq) <= after) return false;
    const imgs = [...document.querySelectorAll('#results .thumbnail-item img')];
    if (imgs.length !== k) return false;
    const first = document.querySelector('#results .caption-label');
    if (!first || first.innerText.trim() !== st.dataset.top) return false;
    return imgs.every(i => i.complete && i.naturalWidth > 0);
}"""


def _drive(url: str, site: str, photos: list[Path], rounds: int, *, headed: bool = False) -> dict[str, list[float]]:
    """Time each path ``rounds`` times in one page; a fresh page per path keeps them independent."""
    from playwright.sync_api import sync_playwright

    times: dict[str, list[float]] = {"upload": [], "click": [], "example": [], "url": [], "first_paint": []}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=not headed)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            page.set_default_timeout(WAIT_S * 1000)
            for _ in range(3):  # first paint of fresh loads (the first one warms the server's caches)
                page.goto(url)
                _ready(page)
                fcp = page.evaluate("performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? -1")
                times["first_paint"].append(float(fcp))
            times["first_paint"] = times["first_paint"][1:]
            uploads, urls = photos[:rounds + 1], photos[rounds + 1:]
            for n, photo in enumerate(uploads):  # the first round is a warm-up
                ms = _timed(page, lambda p=photo: page.locator("#query input[type=file]").set_input_files(str(p)))
                if n:
                    times["upload"].append(ms)
                    times["click"].append(_timed(page, lambda i=n: page.locator("#results .thumbnail-item")
                                                 .nth(1 + i % (K - 1)).click()))
            for n in range(rounds):
                item = page.locator("#examples .thumbnail-item").nth(n % 12)
                times["example"].append(_timed(page, item.click))
            box = page.locator("#url input, #url textarea").first
            for photo in urls[:rounds]:
                def fetch(p=photo):
                    box.fill(f"{site}/{p.name}")
                    box.press("Enter")
                times["url"].append(_timed(page, fetch))
        finally:
            browser.close()
    return times


def _drive_floor(url: str, rounds: int, *, headed: bool = False) -> list[float]:
    """Click a gallery item of the minimal app ``rounds`` times (after one warm-up click)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=not headed)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            page.set_default_timeout(WAIT_S * 1000)
            page.goto(url)
            page.wait_for_selector("#results img")
            out = [_timed(page, lambda i=n: page.locator("#results .thumbnail-item").nth(1 + i % (K - 1)).click())
                   for n in range(rounds + 1)]
        finally:
            browser.close()
    return out[1:]


def _ready(page) -> None:
    page.wait_for_selector("#query input[type=file]", state="attached")  # the query image is ready
    page.wait_for_selector("#examples img")


def _timed(page, action) -> float:
    """Milliseconds from ``action`` to a newer search's k results rendered (polled every frame)."""
    before = int(page.locator("#status .ris-status").get_attribute("data-seq") or 0)
    t = time.perf_counter()
    action()
    page.wait_for_function(_RESULTS_SHOWN, arg=[before, K], polling="raf", timeout=WAIT_S * 1000)
    return (time.perf_counter() - t) * 1000.0
