"""Seeded generated data shared by the tests (no network, no ../shared)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circles", "stripes", "squares", "checks")


def synthetic_image(label_index: int, variant: int, *, size: tuple[int, int] = (96, 72), seed: int = 0) -> Image.Image:
    """A seeded picture whose look depends on the class (shape, colour) and varies per variant."""
    rng = np.random.default_rng(seed * 10_007 + label_index * 101 + variant)
    w, h = size
    base = np.array([(200, 60, 60), (60, 170, 70), (60, 80, 200), (210, 190, 50)][label_index % 4], dtype=np.float64)
    noise = rng.normal(0, 18, size=(h, w, 3))
    arr = np.clip(base * rng.uniform(0.7, 1.1) + noise, 0, 255).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    draw = ImageDraw.Draw(img)
    kind = label_index % 4
    for j in range(3 + variant % 4):
        x, y = int(rng.integers(0, w - 10)), int(rng.integers(0, h - 10))
        r = int(rng.integers(6, 20))
        colour = tuple(int(c) for c in rng.integers(0, 255, size=3))
        if kind == 0:
            draw.ellipse((x, y, x + r, y + r), fill=colour)
        elif kind == 1:
            draw.rectangle((0, (y + j * 9) % h, w, (y + j * 9) % h + 3), fill=colour)
        elif kind == 2:
            draw.rectangle((x, y, x + r, y + r), outline=colour, width=3)
        else:
            for cx in range(0, w, 12):
                for cy in range((j % 2) * 12, h, 24):
                    draw.rectangle((cx, cy, cx + 5, cy + 5), fill=colour)
    return img


def make_image_folder(root: Path, *, classes: tuple[str, ...] = CLASSES, per_class: int = 6, seed: int = 0,
                      size: tuple[int, int] = (96, 72)) -> list[Path]:
    """``root/<class>/img_XX.(jpg|png)``: a labelled folder collection; returns the files written."""
    files = []
    for ci, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for v in range(per_class):
            img = synthetic_image(ci, v, size=size, seed=seed)
            path = root / name / (f"img_{v:02d}.png" if v % 3 == 2 else f"img_{v:02d}.jpg")
            img.save(path, quality=92) if path.suffix == ".jpg" else img.save(path)
            files.append(path)
    return files


def make_caltech_layout(root: Path, *, categories: tuple[str, ...] = ("accordion", "anchor", "ant"),
                        per_class: int = 3, seed: int = 0) -> Path:
    """A tiny Caltech101-style tree, with the BACKGROUND_Google/tmp extension-less JPEG and Faces_easy."""
    cat_root = root / "101_ObjectCategories"
    for ci, cat in enumerate(categories + ("Faces", "Faces_easy", "BACKGROUND_Google")):
        (cat_root / cat).mkdir(parents=True, exist_ok=True)
        for v in range(per_class):
            synthetic_image(ci, v, seed=seed).save(cat_root / cat / f"image_{v + 1:04d}.jpg", quality=90)
    synthetic_image(1, 9, seed=seed).save(cat_root / "BACKGROUND_Google" / "tmp", format="JPEG")
    return root
