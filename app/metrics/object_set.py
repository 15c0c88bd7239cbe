"""An annotated object set made from Caltech101 (CC BY 4.0), in the PASCAL VOC layout.

Caltech101 photos of categories that COCO (and so the detector) knows are pasted, at known boxes, onto
the collection's clutter photos (``BACKGROUND_Google``): each picture gets 1-3 objects that do not
overlap, each object photo is used once, and the box written is the pasted rectangle (Caltech101's
objects fill most of their photo). Seeded: the same arguments give the same set.

Layout: ``JPEGImages/<id>.jpg``, ``Annotations/<id>.xml`` (VOC: ``object/name``, ``bndbox`` with
1-based ``xmin ymin xmax ymax``), ``ImageSets/Main/test.txt``. Class names are VOC's where VOC has the
class (``aeroplane``, ``motorbike``...), COCO's otherwise (``cup``, ``laptop``...).
"""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from pathlib import Path

from PIL import Image, ImageOps

from app.core.datasets import image_files
from app.core.images import load_image
from app.errors import DatasetError
from app.files.atomic import write_bytes

# Caltech101 category -> the class written in the annotations (VOC's name, or COCO's).
CALTECH_CLASSES = {
    "airplanes": "aeroplane", "Motorbikes": "motorbike", "car_side": "car", "chair": "chair",
    "windsor_chair": "chair", "ferry": "boat", "ketch": "boat", "schooner": "boat", "dalmatian": "dog",
    "pigeon": "bird", "rooster": "bird", "ibis": "bird", "flamingo": "bird", "cup": "cup",
    "laptop": "laptop", "umbrella": "umbrella", "pizza": "pizza", "stop_sign": "stop sign",
    "elephant": "elephant", "soccer_ball": "sports ball",
}
BACKGROUNDS = "BACKGROUND_Google"
CANVAS = (640, 480)


def make_object_set(caltech: str | Path, out: str | Path, *, images: int = 300, seed: int = 0,
                    max_per_image: int = 3, scale: tuple[float, float] = (0.3, 0.55)) -> dict:
    """Write the set into ``out``; returns ``{"images", "objects", "per_class"}``. ``scale``: the range
    of an object's longer side as a fraction of the canvas width."""
    caltech = Path(caltech)
    root = caltech / "101_ObjectCategories" if (caltech / "101_ObjectCategories").is_dir() else caltech
    if not (root / BACKGROUNDS).is_dir():
        raise DatasetError(f"{root} is not Caltech101's 101_ObjectCategories folder (no {BACKGROUNDS}).")
    rng = random.Random(seed)
    backgrounds = [root / BACKGROUNDS / f for f in image_files(root / BACKGROUNDS)]
    pools: dict[str, list[Path]] = {}
    for category, cls in CALTECH_CLASSES.items():
        if not (root / category).is_dir():  # a partial copy: the categories it has
            continue
        files = [root / category / f for f in image_files(root / category)]
        rng.shuffle(files)
        pools.setdefault(cls, []).extend(files)
    if not pools:
        raise DatasetError(f"{root} holds none of the categories {', '.join(CALTECH_CLASSES)}.")
    for files in pools.values():
        rng.shuffle(files)
    rng.shuffle(backgrounds)
    out = Path(out)
    (out / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (out / "Annotations").mkdir(parents=True, exist_ok=True)
    ids, per_class = [], {c: 0 for c in pools}
    for n in range(images):
        canvas = ImageOps.fit(load_image(backgrounds[n % len(backgrounds)]), CANVAS)
        boxes: list[tuple[str, tuple[int, int, int, int]]] = []
        for _ in range(rng.randint(1, max_per_image)):
            left = sorted(c for c, files in pools.items() if files)
            if not left:  # every object photo is used
                break
            cls = rng.choice(left)
            placed = _paste(canvas, load_image(pools[cls].pop()), [b for _, b in boxes], rng, scale)
            if placed:
                boxes.append((cls, placed))
                per_class[cls] += 1
        image_id = f"{n:06d}"
        ids.append(image_id)
        canvas.save(out / "JPEGImages" / f"{image_id}.jpg", quality=90)
        write_bytes(out / "Annotations" / f"{image_id}.xml", _voc_xml(image_id, canvas.size, boxes), durable=False)
    write_bytes(out / "ImageSets" / "Main" / "test.txt", ("\n".join(ids) + "\n").encode(), durable=False)
    return {"images": len(ids), "objects": sum(per_class.values()), "per_class": per_class}


def _paste(canvas: Image.Image, obj: Image.Image, taken: list[tuple[int, int, int, int]],
           rng: random.Random, scale: tuple[float, float]) -> tuple[int, int, int, int] | None:
    """Paste ``obj``, its longer side ``scale`` of the canvas width, where it overlaps no box in ``taken``."""
    for _ in range(50):  # bounded: a crowded canvas gives up
        factor = rng.uniform(*scale) * canvas.width / max(obj.width, obj.height * 1.2)
        w, h = max(8, round(obj.width * factor)), max(8, round(obj.height * factor))
        if w >= canvas.width or h >= canvas.height:
            continue
        x, y = rng.randint(0, canvas.width - w), rng.randint(0, canvas.height - h)
        box = (x, y, x + w, y + h)
        if all(box[2] <= t[0] or t[2] <= box[0] or box[3] <= t[1] or t[3] <= box[1] for t in taken):
            canvas.paste(obj.resize((w, h), Image.BICUBIC), (x, y))
            return box
    return None


def _voc_xml(image_id: str, size: tuple[int, int], boxes) -> bytes:
    ann = ET.Element("annotation")
    ET.SubElement(ann, "folder").text = "JPEGImages"
    ET.SubElement(ann, "filename").text = f"{image_id}.jpg"
    sz = ET.SubElement(ann, "size")
    for key, value in zip(("width", "height", "depth"), (*size, 3), strict=True):
        ET.SubElement(sz, key).text = str(value)
    for cls, (x1, y1, x2, y2) in boxes:
        obj = ET.SubElement(ann, "object")
        ET.SubElement(obj, "name").text = cls
        ET.SubElement(obj, "difficult").text = "0"
        bb = ET.SubElement(obj, "bndbox")
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), (x1 + 1, y1 + 1, x2, y2), strict=True):
            ET.SubElement(bb, key).text = str(value)
    ET.indent(ann)
    return ET.tostring(ann, encoding="utf-8") + b"\n"
