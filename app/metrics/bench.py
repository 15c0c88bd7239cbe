"""Speed benchmark: the app's query and build paths side by side with bare PyTorch, in one run.

``scripts/bench.py`` (``python -m app.cli bench``) is a thin command line around :func:`run_bench`. Everything is measured in
this process except ``startup_s``/``rss_mb``, which come from a fresh subprocess
(:func:`ready_probe`) that imports the app, creates the search service, loads both collections
and the model and searches one image.

Floors (torchvision ResNet-50 in PyTorch eager fp32, ``eval()`` + ``inference_mode``, default
memory format, default threads, same weights): ``bare_forward_ms_p50`` (batch 1) and
``bare_batched_img_per_s`` (batch 32, pre-decoded tensors). Targets: see :data:`TARGETS`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from app.config import PROJECT_ROOT, Config
from app.core.datasets import load_dataset
from app.core.embed import embedder_for
from app.core.features import EmbedOptions, extract_features
from app.core.images import load_image
from app.core.models import ModelSpec
from app.core.weights import WeightsSpec, build_torch_model
from app.errors import IndexMismatchError, IndexMissingError
from app.metrics.bench_photos import format_phone, phone_bench
from app.metrics.evaluate import ensure_collection, table
from app.service.search import QUERY_STAGES, SearchService

# (name, metric, comparison, limit as a function of the results, description of the limit)
TARGETS: list[tuple[str, str, str, Callable[[dict[str, Any]], float], str]] = [
    ("query, new image", "query_new_ms_p50", "<=", lambda r: 0.8 * r["bare_forward_ms_p50"], "0.8 x bare forward"),
    ("query, 12 MP photo", "query_12mp_ms_p50", "<=", lambda r: 1.2 * r["bare_forward_ms_p50"], "1.2 x bare forward"),
    ("query, collection image", "query_reuse_ms_p50", "<=", lambda r: 5.0, "5 ms"),
    ("build", "build_img_per_s", ">=", lambda r: 1.5 * r["bare_batched_img_per_s"], "1.5 x bare batched"),
    ("startup", "startup_s", "<=", lambda r: 10.0, "10 s"),
]
ROUNDS = 4  # the floor and the query paths alternate this many times
SETTLE_S = 0.2  # pause before each side of a round
MAIN = "caltech101"
SECOND = "voc2012"
SUBSTITUTE = "voc2012-substitute"


@dataclass
class BenchOptions:
    """What to measure and where the collections live."""

    config: Config
    data: Path  # the Caltech101 folder (containing 101_ObjectCategories)
    limit: int | None = None  # when caltech101 has to be built: a sample of this many images
    queries: int = 40  # new images through SearchService.search
    build_images: int = 1024  # images for the end-to-end extraction measurement
    second_limit: int = 1000  # images of the substitute second collection, if voc2012 is not built
    startup_runs: int = 3
    phone_photos: int = 0  # build rates on this many 12 MP JPEGs and HEICs (app.metrics.bench_photos)
    seed: int = 0


def p(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values, dtype=np.float64), q)), 3)


def rss_mb() -> float:
    """Resident memory of this process in MB (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0), 1)


# -- the floors ----------------------------------------------------------------------------------


def bare_model(model: ModelSpec, spec: WeightsSpec):
    """The model's library module (classifier removed), eval, fp32, default memory format, on the CPU."""
    return build_torch_model(model, spec)


def bare_forward_ms(model, runs: int = 30, warmup: int = 3, shape: tuple[int, ...] = (3, 224, 224)) -> list[float]:
    import torch

    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32))
    out = []
    with torch.inference_mode():
        for i in range(runs + warmup):
            t = time.perf_counter()
            model(x)
            if i >= warmup:
                out.append((time.perf_counter() - t) * 1000.0)
    return out


def bare_batched_img_per_s(model, arrays: np.ndarray, runs: int = 3) -> float:
    import torch

    x = torch.from_numpy(np.ascontiguousarray(arrays[:32], dtype=np.float32))
    rates = []
    with torch.inference_mode():
        model(x)  # warm-up at the measured batch size (oneDNN picks kernels per shape)
        for _ in range(runs):
            t = time.perf_counter()
            model(x)
            rates.append(len(x) / (time.perf_counter() - t))
    return round(float(np.median(rates)), 2)


# -- the app's paths -------------------------------------------------------------------------------


def app_query(service, path: Path, collection: str, copy_dir: Path) -> dict[str, float]:
    """One new image the way the web app searches an upload: :meth:`SearchService.search_new_image`
    (hash the file, decode it once, write the app's copy, preprocess, embed, search; remembered
    vectors are forgotten first, so the model runs). Per-stage milliseconds, from its own record."""
    service.forget_query_vectors()
    for old in copy_dir.glob("*.jpg"):  # a new image has no copy yet
        old.unlink()
    r = service.search_new_image(path, collection, 5, copy_dir=copy_dir)
    return {stage: r.ms(stage) for stage in QUERY_STAGES}


def query_new(service, collection: str, paths: list[Path], passes: int = 1,
              copy_dir: Path | None = None) -> dict[str, list[float]]:
    """Search each image ``passes`` times through :func:`app_query`; per-stage milliseconds."""
    stages: dict[str, list[float]] = {s: [] for s in QUERY_STAGES}
    with tempfile.TemporaryDirectory(prefix="bench-copies-") as tmp:
        for _ in range(passes):
            for path in paths:
                for stage, ms in app_query(service, path, collection, Path(copy_dir or tmp)).items():
                    stages[stage].append(ms)
    return stages


def make_12mp_jpeg(source: Path, out: Path, size: tuple[int, int] = (4000, 3000), seed: int = 0) -> Path:
    """A phone-sized JPEG with realistic content: a real photo upscaled, plus sensor-like noise."""
    from PIL import Image

    img = load_image(source).resize(size, Image.BICUBIC)
    arr = np.asarray(img, dtype=np.int16)
    noise = np.random.default_rng(seed).normal(0.0, 6.0, size=arr.shape[:2] + (1,)).astype(np.int16)
    arr = np.clip(arr + noise, 0, 255).astype(np.uint8)
    Image.fromarray(arr, "RGB").save(out, "JPEG", quality=92)
    return out


def timed(fn: Callable[[], Any], runs: int, warmup: bool = True) -> list[float]:
    if warmup:
        fn()
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000.0)
    return out


def build_img_per_s(options: BenchOptions, n_images: int) -> dict[str, Any]:
    """End to end extraction (decode + preprocess in DataLoader workers + model) into a temp dir."""

    c = options.config
    dataset = load_dataset("caltech101", options.data, limit=n_images)
    embedder = embedder_for(c).load()  # as build_collection makes it
    with tempfile.TemporaryDirectory(prefix="bench-features-") as tmp:
        _, _, stats = extract_features(dataset, embedder, tmp, "bench",
                                       EmbedOptions(batch_size=c.batch_size, workers=c.workers, progress_bar=False))
    return {"images": stats["embedded"], "seconds": round(stats["seconds"], 2),
            "img_per_s": round(stats["img_per_s"], 2), "engine": embedder.engine}


# -- collections -----------------------------------------------------------------------------------


def ensure_collections(options: BenchOptions, log: Callable[[str], None]) -> tuple[str, str]:
    """Build caltech101 when missing (``--limit`` sample), and a second collection for memory."""

    c = options.config
    log(f"checking {MAIN} in {c.indexes_dir}")
    ensure_collection(c, name=MAIN, kind="caltech101", data=options.data, limit=options.limit, progress_bar=True)
    try:
        SearchService(c).collection(SECOND)
        return MAIN, SECOND
    except (IndexMissingError, IndexMismatchError):
        log(f"{SECOND} is not built: using {SUBSTITUTE}, a {options.second_limit}-image Caltech101 sample "
            "(with BACKGROUND_Google), for the two-collection memory and start-up figures")
    ensure_collection(c, name=SUBSTITUTE, kind="caltech101", data=options.data, limit=options.second_limit,
                      include=("BACKGROUND_Google",), progress_bar=True)
    return MAIN, SUBSTITUTE


# -- start-up --------------------------------------------------------------------------------------


def ready_probe(config: Config, collections: list[str], image: Path) -> dict[str, Any]:
    """What a server does before it can answer: load collections and model, answer one query."""
    t0 = time.perf_counter()

    service = SearchService(config)
    t1 = time.perf_counter()
    sizes = {name: len(service.collection(name)) for name in collections}
    t2 = time.perf_counter()
    service.embedder.load()
    t3 = time.perf_counter()
    service.search_new_image(image, collections[0], 5)
    t4 = time.perf_counter()
    return {"collections": sizes, "import_s": round(t1 - t0, 3), "collections_s": round(t2 - t1, 3),
            "model_s": round(t3 - t2, 3), "first_query_s": round(t4 - t3, 3), "rss_mb": rss_mb(),
            "engine": service.embedder.engine}


def startup(options: BenchOptions, collections: list[str], image: Path) -> list[dict[str, Any]]:
    """Run the ready probe in fresh processes; wall time from spawn to its READY line."""
    c = options.config
    cmd = [sys.executable, "-m", "app.cli", "bench", "--ready-probe", "--model", c.model, "--weights", str(c.weights),
           "--indexes", str(c.indexes_dir),
           "--features", str(c.features_dir), "--probe-collections", ",".join(collections), "--probe-image", str(image)]
    if c.cache_dir:
        cmd += ["--cache-dir", str(c.cache_dir)]
    runs = []
    for _ in range(options.startup_runs):
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT)
        assert proc.stdout is not None
        ready = None
        for line in proc.stdout:
            if line.startswith("READY "):
                ready = time.perf_counter() - t
                info = json.loads(line[6:])
                break
        _, err = proc.communicate(timeout=120)
        if ready is None:
            raise RuntimeError(f"the ready probe failed (exit {proc.returncode}): {err.strip()[-500:]}")
        runs.append({"startup_s": round(ready, 3), **info})
    return runs


# -- the whole benchmark ---------------------------------------------------------------------------


def run_bench(options: BenchOptions, log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Measure everything; returns the JSON object ``scripts/bench.py --json`` prints."""

    c = options.config
    load_before = os.getloadavg()
    main, second = ensure_collections(options, log)
    service = SearchService(c)
    col = service.collection(main)
    rng = np.random.default_rng(options.seed)
    jpegs = [i for i, path in enumerate(col.table.paths) if col.live_mask[i] and path.lower().endswith((".jpg", ".jpeg"))]
    picks = sorted(rng.choice(jpegs, size=min(options.queries, len(jpegs)), replace=False).tolist())
    paths = [col.item_path(i) for i in picks]
    embedder = service.embedder.load()
    model = bare_model(embedder.model, embedder.spec)
    m: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-12mp-") as tmp:
        big = make_12mp_jpeg(max(paths, key=lambda q: q.stat().st_size), Path(tmp) / "phone-12mp.jpg")
        m["image_12mp_bytes"] = big.stat().st_size
        log("floors and query paths, interleaved in rounds (load from other processes hits both alike)")
        m.update(_query_rounds(service, main, model, paths, big))
        reuse_iter = iter(rng.choice(col.live_ids, size=200).tolist() * 2)
        m["reuse_ms"] = timed(lambda: service.search_item(main, next(reuse_iter), 5), 200)
        log(f"build path: {options.build_images} images end to end, between two batch-32 floor measurements")
        m.update(_build_rounds(options, service.embedder, model, paths))
        if options.phone_photos:

            m["phone"] = phone_bench(c, options.data, options.phone_photos, log=log)
        log("start-up: fresh processes")
        m["starts"] = startup(options, [main, second], paths[0])
    del model
    r = _summary(m)
    r["targets"] = check_targets(r)
    if "phone" in m:
        r["phone"] = m["phone"]
    r["details"] = {
        "engine": embedder.engine, "model": embedder.model.name, "weights_id": embedder.weights_id,
        "untrained": embedder.spec.untrained,
        "collections": {main: len(col), second: m["starts"][0]["collections"][second]},
        "second_collection": second, "second_is_substitute": second == SUBSTITUTE,
        "query_images": len(paths), "query_runs": len(m["stages"]["total"]),
        "image_12mp_bytes": m["image_12mp_bytes"], "build": m["build"], "startup_runs": m["starts"],
        "bare_forward_ms_p95": p(m["bare_ms"], 95), "cpu_count": os.cpu_count(),
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
    }
    return r


def _query_rounds(service, main: str, model, paths: list[Path], big: Path) -> dict[str, Any]:
    """The bare forward floor, new-image queries and the 12 MP photo, alternating in ROUNDS rounds."""
    shape = service.embedder.preprocessing.input_shape
    bare_forward_ms(model, runs=0, shape=shape)  # warm-up
    copies = Path(tempfile.mkdtemp(prefix="bench-copies-"))
    app_query(service, paths[0], main, copies)
    app_query(service, big, main, copies)
    bare_ms: list[float] = []
    big_ms: list[float] = []
    stages: dict[str, list[float]] = {s: [] for s in QUERY_STAGES}
    for _ in range(ROUNDS):
        # Each side starts after a pause and one discarded run: idle threads of the other
        # engine (ORT's and OpenMP's spin-waits) would otherwise slow its first call.
        time.sleep(SETTLE_S)
        bare_ms += bare_forward_ms(model, runs=8, warmup=1, shape=shape)
        time.sleep(SETTLE_S)
        app_query(service, paths[-1], main, copies)
        for stage, values in query_new(service, main, paths, passes=1, copy_dir=copies).items():
            stages[stage] += values
        big_ms += [app_query(service, big, main, copies)["total"] for _ in range(4)]
    shutil.rmtree(copies, ignore_errors=True)
    return {"bare_ms": bare_ms, "big_ms": big_ms, "stages": stages}


def _build_rounds(options: BenchOptions, embedder, model, paths: list[Path]) -> dict[str, Any]:
    """End-to-end extraction between two batch-32 floor measurements (their median is the floor)."""
    pp = embedder.preprocessing
    arrays = np.stack([embedder.preprocess(load_image(q, draft_size=pp.resize)) for q in (paths * 32)[:32]])
    time.sleep(SETTLE_S)
    batched = [bare_batched_img_per_s(model, arrays, runs=2)]
    build = build_img_per_s(options, options.build_images)
    time.sleep(SETTLE_S)
    batched.append(bare_batched_img_per_s(model, arrays, runs=2))
    return {"build": build, "bare_batched": round(float(np.median(batched)), 2)}


def _summary(m: dict[str, Any]) -> dict[str, Any]:
    """The spelled-out keys of ``scripts/bench.py --json`` from the raw measurements."""
    stages, starts = m["stages"], m["starts"]
    r: dict[str, Any] = {
        "bare_forward_ms_p50": p(m["bare_ms"], 50),
        "query_new_ms_p50": p(stages["total"], 50),
        "query_new_ms_p95": p(stages["total"], 95),
        "query_12mp_ms_p50": p(m["big_ms"], 50),
        "query_reuse_ms_p50": p(m["reuse_ms"], 50),
        "build_img_per_s": m["build"]["img_per_s"],
        "bare_batched_img_per_s": m["bare_batched"],
        "startup_s": round(float(np.median([s["startup_s"] for s in starts])), 3),
        "rss_mb": float(np.median([s["rss_mb"] for s in starts])),
    }
    for stage, values in stages.items():
        r[f"query_new_{stage}_ms_p50"] = p(values, 50)
        r[f"query_new_{stage}_ms_p95"] = p(values, 95)
    r["query_new_split"] = {s: {"p50": p(v, 50), "p95": p(v, 95)} for s, v in stages.items()}
    return r


def check_targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, key, cmp, limit_fn, text in TARGETS:
        value, limit = float(r[key]), float(limit_fn(r))
        ok = value <= limit if cmp == "<=" else value >= limit
        ratio = value / limit if limit else float("inf")
        out.append({"target": name, "metric": key, "value": value, "limit": round(limit, 3), "rule": f"{cmp} {text}",
                    "ratio": round(ratio, 3), "pass": bool(ok)})
    return out


def format_bench(r: dict[str, Any]) -> str:

    d = r["details"]
    rows = [(t["target"], t["metric"], f"{t['value']:g}", f"{t['rule']} = {t['limit']:g}", f"{t['ratio']:.2f}",
             "PASS" if t["pass"] else "FAIL") for t in r["targets"]]
    lines = [table(("target", "metric", "value", "limit", "ratio", "result"), rows), ""]
    split = r["query_new_split"]
    lines.append(table(("query stage (new image)", "p50 ms", "p95 ms"),
                       [(s, v["p50"], v["p95"]) for s, v in split.items()]))
    lines += [
        "",
        f"floors (PyTorch eager fp32, default memory format): bare forward {r['bare_forward_ms_p50']} ms (batch 1), "
        f"{r['bare_batched_img_per_s']} img/s (batch 32)",
        f"12 MP JPEG ({d['image_12mp_bytes'] / 1e6:.1f} MB) {r['query_12mp_ms_p50']} ms; collection image reused "
        f"{r['query_reuse_ms_p50']} ms; build {r['build_img_per_s']} img/s over {d['build']['images']} images",
        f"startup {r['startup_s']} s (median of {len(d['startup_runs'])}), RSS {r['rss_mb']} MB with "
        f"{', '.join(f'{k} ({v})' for k, v in d['collections'].items())} loaded",
        f"engine {d['engine']}, {d['cpu_count']} CPUs, load average before/after {d['load_avg_before'][0]}/"
        f"{d['load_avg_after'][0]}",
    ]
    if d["second_is_substitute"]:
        lines.append(f"note: voc2012 is not built; {SUBSTITUTE} (a Caltech101 sample) stands in as the second collection.")
    if "phone" in r:

        lines += ["", format_phone(r["phone"])]
    if d["untrained"]:
        lines.append("note: UNTRAINED weights: speed is the same as with real weights; the vectors mean nothing.")
    return "\n".join(lines)
