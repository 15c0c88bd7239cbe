"""The edited-copy benchmark: a folder made from real photos, with the truth of which files are copies.

For each category picked from a Caltech101-style folder (``<root>/<category>/<file>``):

* ``edited`` sources: each original is kept and joined by one copy per kind of edit in :data:`EDITS`
  (resize, JPEG recompression to quality 30 (the file saved at quality 30), crops of 10% and 25% of the area at a seeded offset, rotations
  of +3 and -5 degrees cropped back to the photo's proportions, a mirror flip, brightness/contrast, colour
  saturation and tint, and a combination: crop of 15% + mirror, saved at JPEG quality 50);
* ``exact`` sources: the original, a byte copy and a lossless PNG of the same pixels;
* ``burst`` sources: the original is *not* included; three frames are cut from it as if shot moments apart:
  windows of 75% of each side at different corners (each frame shows something the others do not), a
  rotation of up to 1 degree, a small brightness change, sensor-like noise, and a patch of the picture
  moved by a few pixels (the subject moved);
* every other photo of the category is a distractor (the same kind of object, another photo: a hard negative).

The truth is ``truth.json``: per file its ``group`` (source id, or null for a distractor), ``tier``
(``exact``, ``edited``, ``shots`` or null) and ``kind`` (the edit).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from app.core.images import load_image
from app.files.atomic import write_json


def _crop_area(img: Image.Image, keep: float, rng: np.random.Generator) -> Image.Image:
    side = keep ** 0.5
    w, h = round(img.width * side), round(img.height * side)
    x, y = int(rng.integers(0, img.width - w + 1)), int(rng.integers(0, img.height - h + 1))
    return img.crop((x, y, x + w, y + h))


def _rotate(img: Image.Image, deg: float) -> Image.Image:
    r = img.rotate(deg, resample=Image.Resampling.BICUBIC, expand=False)
    t = abs(np.deg2rad(deg))
    w, h = img.size  # the largest centred box of the same proportions without the black corners
    f = 1 / (np.cos(t) + np.sin(t) * max(w / h, h / w))
    cw, ch = int(w * f), int(h * f)
    return r.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))


def _tint(img: Image.Image) -> Image.Image:
    arr = np.asarray(ImageEnhance.Color(img).enhance(1.6), dtype=np.float32) * np.float32([1.12, 1.0, 0.82])
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


EDITS: dict[str, Callable[[Image.Image, np.random.Generator], Image.Image]] = {
    "resize": lambda im, r: im.resize((max(32, im.width // 2), max(32, im.height // 2)), Image.Resampling.LANCZOS),
    "jpeg30": lambda im, r: im,  # saved at quality 30 (QUALITY)
    "crop10": lambda im, r: _crop_area(im, 0.90, r),
    "crop25": lambda im, r: _crop_area(im, 0.75, r),
    "rotate3": lambda im, r: _rotate(im, 3.0),
    "rotate-5": lambda im, r: _rotate(im, -5.0),
    "mirror": lambda im, r: ImageOps.mirror(im),
    "brightness": lambda im, r: ImageEnhance.Contrast(ImageEnhance.Brightness(im).enhance(1.35)).enhance(0.85),
    "colour": lambda im, r: _tint(im),
    "grayscale": lambda im, r: ImageOps.grayscale(im).convert("RGB"),
    "combo": lambda im, r: ImageOps.mirror(_crop_area(im, 0.85, r)),  # saved at quality 50
}
QUALITY = {"jpeg30": 30, "combo": 50}  # JPEG quality each edit is saved at (92 otherwise)


def burst_frames(img: Image.Image, rng: np.random.Generator, n: int = 3) -> list[Image.Image]:
    """``n`` frames of one scene as if shot moments apart (see the module's docstring)."""
    w, h = img.size
    cw, ch = int(w * 0.75), int(h * 0.75)
    offsets = [(0, 0), (w - cw, h - ch), (w - cw, 0), (0, h - ch)]
    frames = []
    for k in range(n):
        scene = img.copy()
        pw, ph = w // 5, h // 5  # the subject moves: a patch shifted by a few pixels
        px, py = int(rng.integers(w // 4, w // 2)), int(rng.integers(h // 4, h // 2))
        dx, dy = int(rng.integers(-6, 7)), int(rng.integers(-6, 7))
        scene.paste(img.crop((px, py, px + pw, py + ph)), (px + dx, py + dy))
        scene = scene.rotate(float(rng.uniform(-1, 1)), resample=Image.Resampling.BICUBIC)
        x, y = offsets[k % len(offsets)]
        frame = scene.crop((x, y, x + cw, y + ch))
        frame = ImageEnhance.Brightness(frame).enhance(float(rng.uniform(0.95, 1.05)))
        arr = np.asarray(frame, np.float32) + rng.normal(0, 3, (ch, cw, 3))
        frames.append(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)))
    return frames


def make_benchmark(source: str | Path, out: str | Path, *, categories: int = 20, edited: int = 5,
                   exact: int = 1, bursts: int = 1, distractors: int = 25, seed: int = 0,
                   min_side: int = 120) -> dict[str, Any]:
    """Write the benchmark folder ``out`` from the category folders of ``source``; returns the truth."""
    source, out = Path(source), Path(out)
    rng = np.random.default_rng(seed)
    cats = sorted(p for p in source.iterdir() if p.is_dir() and p.name not in ("BACKGROUND_Google", "Faces_easy"))
    need = edited + exact + bursts + 2
    cats = [c for c in cats if len(list(c.iterdir())) >= need]
    picked = [cats[k] for k in sorted(rng.choice(len(cats), size=min(categories, len(cats)), replace=False))]
    truth: dict[str, dict[str, Any]] = {}
    for cat in picked:
        files = sorted(p for p in cat.iterdir() if p.is_file())
        files = [files[k] for k in rng.permutation(len(files))]
        originals = [(f, load_image(f)) for f in files]
        originals = [(f, im) for f, im in originals if min(im.size) >= min_side] or originals
        (out / cat.name).mkdir(parents=True, exist_ok=True)
        pos = 0
        for role, count in (("edited", edited), ("exact", exact), ("burst", bursts)):
            for _ in range(count):
                f, img = originals[pos]
                pos += 1
                _write_source(out / cat.name, f, img, role, f"{cat.name}/{f.stem}", rng, truth)
        for f, _ in originals[pos:pos + distractors]:
            dst = out / cat.name / f"{f.stem}__distractor{f.suffix}"
            shutil.copyfile(f, dst)
            truth[f"{cat.name}/{dst.name}"] = {"group": None, "tier": None, "kind": "distractor"}
    write_json(out / "truth.json", truth)
    return truth


def _write_source(folder: Path, f: Path, img: Image.Image, role: str, group: str, rng: np.random.Generator,
                  truth: dict[str, dict[str, Any]]) -> None:
    def put(name: str, tier: str, kind: str) -> None:
        truth[f"{folder.name}/{name}"] = {"group": group, "tier": tier, "kind": kind}

    if role == "burst":
        for k, frame in enumerate(burst_frames(img, rng)):
            frame.save(folder / f"{f.stem}__burst{k}.jpg", quality=90)
            put(f"{f.stem}__burst{k}.jpg", "shots", "burst")
        return
    shutil.copyfile(f, folder / f"{f.stem}__original{f.suffix}")
    tier = "exact" if role == "exact" else "edited"
    put(f"{f.stem}__original{f.suffix}", tier, "original")
    if role == "exact":
        shutil.copyfile(f, folder / f"{f.stem}__bytecopy{f.suffix}")
        put(f"{f.stem}__bytecopy{f.suffix}", "exact", "same bytes")
        img.save(folder / f"{f.stem}__pixels.png")
        put(f"{f.stem}__pixels.png", "exact", "same pixels")
        return
    for kind, edit in EDITS.items():
        edit(img, rng).save(folder / f"{f.stem}__{kind}.jpg", quality=QUALITY.get(kind, 92))
        put(f"{f.stem}__{kind}.jpg", "edited", kind)


def load_truth(folder: str | Path) -> dict[str, dict[str, Any]]:
    return json.loads((Path(folder) / "truth.json").read_text())
