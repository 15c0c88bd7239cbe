"""Seeded generated data shared by the tests (no network, no ../shared)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from app.index.rerank import normalise

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


VOC_IMAGES = {  # image id -> object classes in its annotation (repeats: several objects of a class)
    "2008_000001": ("dog", "person", "dog"),
    "2008_000002": ("cat",),
    "2008_000003": ("person", "bicycle", "car"),
    "2008_000004": ("aeroplane",),
    "2008_000005": ("cat", "sofa"),
    "2008_000006": ("car", "car"),
}


def make_voc_layout(root: Path, *, images: dict[str, tuple[str, ...]] | None = None, extra: int = 2,
                    seed: int = 0) -> Path:
    """A tiny ``VOCdevkit/VOC2012`` tree: JPEGImages, Annotations/*.xml, ImageSets/Main/trainval.txt.

    ``extra`` JPEGs (with annotations) exist on disk but are not in trainval.txt, as in the real set.
    """
    images = VOC_IMAGES if images is None else images
    base = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    all_ids = list(images) + [f"2012_{i:06d}" for i in range(extra)]
    for n, image_id in enumerate(all_ids):
        synthetic_image(n % 4, n, seed=seed).save(base / "JPEGImages" / f"{image_id}.jpg", quality=90)
        objects = "".join(
            f"<object><name>{c}</name><pose>Unspecified</pose><difficult>0</difficult>"
            f"<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>20</xmax><ymax>20</ymax></bndbox></object>"
            for c in images.get(image_id, ("train",))
        )
        (base / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><folder>VOC2012</folder><filename>{image_id}.jpg</filename>"
            f"<size><width>96</width><height>72</height><depth>3</depth></size>{objects}</annotation>\n"
        )
    (base / "ImageSets" / "Main" / "trainval.txt").write_text("".join(f"{i}\n" for i in images))
    return root


def temp_files(folder: Path) -> list[Path]:
    """Leftovers of ``app.files.atomic`` writes (``.NAME.XXXX.tmp``) anywhere under ``folder``."""
    return sorted(p for p in Path(folder).rglob("*.tmp"))


def png_claiming(width: int, height: int) -> bytes:
    """A syntactically valid PNG whose header claims ``width`` x ``height`` (with almost no data): a
    decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def spy_load_image(monkeypatch) -> list:
    """Count every call of :func:`app.core.images.load_image`, under whatever name a module of the app
    imported it (returns the list the calls are appended to)."""
    import sys

    import app.core.images as images

    real = images.load_image
    calls: list = []

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    for name, module in list(sys.modules.items()):
        if (name == "app" or name.startswith("app.")) and getattr(module, "load_image", None) is real:
            monkeypatch.setattr(module, "load_image", spy)
    return calls


def labelled_vectors(*, n_classes: int, per_class: int, d: int, noise: float, nuisance: float, nuisance_dims: int,
                     seed: int):
    """Unit vectors of ``n_classes`` labels (``(f"c{c}",)`` per row): class centres, plus ``noise``, plus
    strong variation along ``nuisance_dims`` random directions that carry no class (what a whitening
    evens out, and what only the labels tell apart). Seeded."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, d))
    labels = np.repeat(np.arange(n_classes), per_class)
    x = centres[labels] + noise * rng.normal(size=(len(labels), d))
    x += nuisance * rng.normal(size=(len(labels), nuisance_dims)) @ rng.normal(size=(nuisance_dims, d))
    return normalise(x.astype(np.float32)), [(f"c{c}",) for c in labels]
