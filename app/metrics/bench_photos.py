"""Build speed on phone photos: 12-megapixel JPEGs and HEICs beside Caltech101's small images.

``python -m app.cli bench --phone-only`` (or the phone section of the whole ``bench``) measures the
same end-to-end extraction :func:`app.metrics.bench.build_img_per_s` does (decode in DataLoader
workers, preprocess, model) on three folders of ``n`` images each, one after the other:

* ``caltech101``: a sample of the dataset (about 300x200 px JPEGs);
* ``jpeg-12mp``: 4032x3024 JPEGs (quality 92, as phones save them);
* ``heic-12mp``: the same pictures as HEIC (libheif/x265, quality 70, a 320x240 thumbnail, as an iPhone
  stores it).

The 12 MP pictures are **generated**: Caltech101's largest JPEGs upscaled to 4032x3024 (bicubic)
with mild sensor-like noise, each with its own seed. They are made once and cached under the model
cache folder (``bench-phone/``). Then the decode stages of one image of each kind are timed on their
own (read, decode at the model's scale, preprocess) beside the model's time per image, which says
where the build time goes.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from app.config import Config
from app.core.camera_formats import register_heif
from app.core.datasets import load_dataset
from app.core.embed import Embedder, embedder_for
from app.core.features import EmbedOptions, extract_features
from app.core.images import load_image
from app.metrics.evaluate import table

PHONE_SIZE = (4032, 3024)  # a 12-megapixel phone photo
KINDS = ("caltech101", "jpeg-12mp", "heic-12mp")
TARGET_RATIO = 0.6  # 12 MP JPEGs build at >= 60% of the Caltech101 rate


def make_phone_photos(data: Path, out: Path, n: int, log: Callable[[str], None] = lambda m: None) -> dict[str, Path]:
    """``out/jpeg-12mp/`` and ``out/heic-12mp/`` with ``n`` generated phone photos each (kept between runs)."""
    from PIL import Image


    register_heif()
    folders = {kind: out / kind for kind in ("jpeg-12mp", "heic-12mp")}
    missing = [i for i in range(n) if not (folders["jpeg-12mp"] / f"IMG_{i:04d}.jpg").is_file()
               or not (folders["heic-12mp"] / f"IMG_{i:04d}.heic").is_file()]
    if missing:
        log(f"making {len(missing)} 12 MP JPEG + HEIC pairs (Caltech101 photos upscaled; cached in {out})")
        dataset = load_dataset("caltech101", data)
        jpegs = [dataset.image_root / it.path for it in dataset.items if it.path.lower().endswith(".jpg")]
        sources = sorted(jpegs, key=lambda p: p.stat().st_size, reverse=True)[: max(n, 1)]
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        for i in missing:
            img = load_image(sources[i % len(sources)]).resize(PHONE_SIZE, Image.BICUBIC)
            arr = np.asarray(img, dtype=np.int16)
            noise = np.random.default_rng(i).normal(0.0, 3.0, size=arr.shape[:2] + (1,)).astype(np.int16)
            img = Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8), "RGB")
            img.save(folders["heic-12mp"] / f"IMG_{i:04d}.heic", "HEIF", quality=70, thumbnails=[320],
                     enc_params={"preset": "ultrafast"})
            img.save(folders["jpeg-12mp"] / f"IMG_{i:04d}.jpg", "JPEG", quality=92)
    return folders


def build_rate(config: Config, embedder: Embedder, dataset) -> dict[str, Any]:
    """End-to-end extraction of ``dataset`` into a temporary folder, as a build runs it."""

    with tempfile.TemporaryDirectory(prefix="bench-phone-features-") as tmp:
        _, _, stats = extract_features(dataset, embedder, tmp, "bench", EmbedOptions(
            batch_size=config.batch_size, workers=config.workers, progress_bar=False))
    return {"images": stats["embedded"], "seconds": round(stats["seconds"], 2), "img_per_s": round(stats["img_per_s"], 2)}


def decode_stages(embedder: Embedder, paths: list[Path], runs: int = 3) -> dict[str, float]:
    """Median ms per image of each stage, in this process: reading the file, decoding it at the
    model's scale (JPEG draft, HEIC thumbnail when it is big enough), decoding it whole, preprocessing."""
    import io

    draft = embedder.preprocessing.resize
    out: dict[str, list[float]] = {"read": [], "decode_at_model_scale": [], "decode_full": [], "preprocess": []}
    for _ in range(runs):
        for path in paths:
            t0 = time.perf_counter()
            data = path.read_bytes()
            t1 = time.perf_counter()
            img = load_image(io.BytesIO(data), draft_size=draft)
            t2 = time.perf_counter()
            embedder.preprocess(img)
            t3 = time.perf_counter()
            load_image(io.BytesIO(data))
            t4 = time.perf_counter()
            out["read"].append((t1 - t0) * 1e3)
            out["decode_at_model_scale"].append((t2 - t1) * 1e3)
            out["preprocess"].append((t3 - t2) * 1e3)
            out["decode_full"].append((t4 - t3) * 1e3)
    return {k: round(float(np.median(v)), 2) for k, v in out.items()}


def model_ms_per_image(embedder: Embedder, image: Path, batch: int = 32) -> float:
    """The model's time per image in batches of ``batch`` (decoded and preprocessed beforehand)."""
    arrays = np.stack([embedder.preprocess(load_image(image, draft_size=embedder.preprocessing.resize))] * batch)
    embedder.embed_arrays(arrays)  # warm-up
    t = time.perf_counter()
    embedder.embed_arrays(arrays)
    return round((time.perf_counter() - t) * 1e3 / batch, 2)


def phone_bench(config: Config, data: Path, n: int, *, cache: Path | None = None,
                log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Build rates of Caltech101, 12 MP JPEGs and 12 MP HEICs (``n`` images each), their decode stages,
    and the 12 MP JPEG / Caltech101 ratio against :data:`TARGET_RATIO`."""

    out = Path(cache or config.cache_dir) / "bench-phone"
    folders = make_phone_photos(data, out, n, log)
    embedder = embedder_for(config).load()
    datasets = {"caltech101": load_dataset("caltech101", data, limit=n)}
    for kind, folder in folders.items():
        ds = load_dataset("folder", folder)
        datasets[kind] = replace(ds, items=ds.items[:n])
    rates: dict[str, Any] = {}
    log("warm-up: a short build (worker start, model warm-up) before the measured ones")
    build_rate(config, embedder, replace(datasets["caltech101"], items=datasets["caltech101"].items[:8]))
    for kind in KINDS:
        log(f"build rate: {kind}, {len(datasets[kind].items)} images")
        rates[kind] = build_rate(config, embedder, datasets[kind])
    samples = {kind: [datasets[kind].image_root / it.path for it in datasets[kind].items[:4]] for kind in KINDS}
    log("decode stages, one image at a time")
    stages = {kind: decode_stages(embedder, samples[kind][:2 if kind == "heic-12mp" else 4],
                                  runs=1 if kind == "heic-12mp" else 3) for kind in KINDS}
    ratio = rates["jpeg-12mp"]["img_per_s"] / rates["caltech101"]["img_per_s"]
    return {
        "images_per_kind": n, "rates": rates, "stages_ms": stages,
        "model_ms_per_image": model_ms_per_image(embedder, samples["caltech101"][0]),
        "jpeg_12mp_ratio": round(ratio, 3),
        "heic_12mp_ratio": round(rates["heic-12mp"]["img_per_s"] / rates["caltech101"]["img_per_s"], 3),
        "target_ratio": TARGET_RATIO, "pass": ratio >= TARGET_RATIO,
        "engine": embedder.engine, "model": embedder.model.name, "workers": config.workers,
        "photos": str(out), "generated_from": "Caltech101's largest JPEGs upscaled to 4032x3024 with noise",
    }


def format_phone(r: dict[str, Any]) -> str:

    rows = [(kind, r["rates"][kind]["images"], r["rates"][kind]["img_per_s"],
             *(r["stages_ms"][kind][s] for s in ("read", "decode_at_model_scale", "decode_full", "preprocess")))
            for kind in KINDS]
    lines = [table(("build", "images", "img/s", "read ms", "decode ms (model scale)", "decode ms (full)",
                    "preprocess ms"), rows)]
    lines.append(f"model: {r['model_ms_per_image']} ms per image in batches of 32 ({r['model']}, {r['engine']})")
    lines.append(f"12 MP JPEG builds at {r['jpeg_12mp_ratio']:.0%} of the Caltech101 rate (target >= "
                 f"{r['target_ratio']:.0%}: {'PASS' if r['pass'] else 'FAIL'}); 12 MP HEIC at "
                 f"{r['heic_12mp_ratio']:.0%}. 12 MP photos: {r['generated_from']} ({r['photos']}).")
    return "\n".join(str(line) for line in lines)
