"""Measuring object detection on a VOC-layout folder: AP50 per class and its mean.

Any folder with ``Annotations/*.xml`` (PASCAL VOC: ``object/name``, ``bndbox`` 1-based, ``difficult``)
and the pictures in ``JPEGImages/`` (VOC2012 itself, or the set of :mod:`app.metrics.object_set`).
A class counts when the detector knows it, VOC names mapped to COCO's (``aeroplane`` -> ``airplane``,
``tvmonitor`` -> ``tv``...). AP50 is VOC's: detections of a class over all pictures, best first, each a
true positive when it overlaps a still unmatched true box with IoU >= 0.5 (difficult boxes neither count
nor penalise), and the area under the precision envelope (all points, VOC 2010 onwards).
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.core.nms import box_iou
from app.errors import DatasetError

VOC_TO_COCO = {"aeroplane": "airplane", "motorbike": "motorcycle", "diningtable": "dining table",
               "pottedplant": "potted plant", "sofa": "couch", "tvmonitor": "tv"}
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")


@dataclass(frozen=True)
class TrueBox:
    label: str  # the detector's (COCO) name
    box: tuple[float, float, float, float]  # x1, y1, x2, y2, 0-based pixels
    difficult: bool


@dataclass(frozen=True)
class AnnotatedImage:
    image_id: str
    path: Path
    boxes: tuple[TrueBox, ...]


def read_voc(folder: str | Path, labels: tuple[str, ...], *, limit: int | None = None) -> list[AnnotatedImage]:
    """The annotated pictures of ``folder`` (sorted by id), keeping boxes of classes in ``labels``."""
    folder = Path(folder)
    for sub in ("VOCdevkit/VOC2012", "VOC2012"):
        if (folder / sub / "Annotations").is_dir():
            folder = folder / sub
    annotations = sorted((folder / "Annotations").glob("*.xml"))
    if not annotations:
        raise DatasetError(f"No Annotations/*.xml in {folder}: not a VOC-layout folder.")
    known = set(labels)
    out = []
    for xml_path in annotations[:limit]:
        try:
            root = ET.parse(xml_path).getroot()
        except (ET.ParseError, OSError) as exc:
            raise DatasetError(f"Cannot read {xml_path}: {exc}") from exc
        image = folder / "JPEGImages" / (root.findtext("filename") or f"{xml_path.stem}.jpg")
        boxes = []
        for obj in root.iter("object"):
            name = (obj.findtext("name") or "").strip()
            label = VOC_TO_COCO.get(name, name)
            bb = obj.find("bndbox")
            if label not in known or bb is None:
                continue
            x1, y1, x2, y2 = (float(bb.findtext(k) or 0) for k in ("xmin", "ymin", "xmax", "ymax"))
            boxes.append(TrueBox(label, (x1 - 1, y1 - 1, x2, y2), (obj.findtext("difficult") or "0").strip() == "1"))
        out.append(AnnotatedImage(xml_path.stem, image, tuple(boxes)))
    return out


def average_precision(detections: list[tuple[str, float, tuple]], truth: dict[str, list[TrueBox]]) -> float | None:
    """VOC AP50 of one class: ``detections`` as (image id, score, box), ``truth`` image id -> its true
    boxes of that class. None when the class has no (non-difficult) true box."""
    positives = sum(not t.difficult for boxes in truth.values() for t in boxes)
    if positives == 0:
        return None
    used = {image_id: np.zeros(len(boxes), bool) for image_id, boxes in truth.items()}
    tp, fp = [], []
    for image_id, _, box in sorted(detections, key=lambda d: -d[1]):
        boxes = truth.get(image_id, [])
        hit, ignore = False, False
        if boxes:
            ious = box_iou(np.array([box]), np.array([t.box for t in boxes]))[0]
            best = int(np.argmax(ious))
            if ious[best] >= 0.5:
                if boxes[best].difficult:
                    ignore = True
                elif not used[image_id][best]:
                    used[image_id][best] = hit = True
        if not ignore:
            tp.append(hit)
            fp.append(not hit)
    tp_c, fp_c = np.cumsum(tp, dtype=float), np.cumsum(fp, dtype=float)
    recall = tp_c / positives
    precision = tp_c / np.maximum(tp_c + fp_c, 1e-12)
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def detection_ap(detector, images: list[AnnotatedImage], *, score_threshold: float = 0.05,
                 max_objects: int = 100, found_per_image: dict | None = None) -> dict:
    """Run ``detector`` on every picture: ``{"ap50": {class: AP}, "map50", "map50_voc", "classes",
    "images", "detect_ms_p50"}`` over the classes with a true box. ``found_per_image``, when given, gets
    each picture's objects (image id -> list, best first)."""
    found: dict[str, list] = {}
    truth: dict[str, dict[str, list[TrueBox]]] = {}
    times = []
    for image in images:
        for t in image.boxes:
            truth.setdefault(t.label, {}).setdefault(image.image_id, []).append(t)
        start = time.perf_counter()
        objects = detector.detect(image.path, score_threshold=score_threshold, max_objects=max_objects)
        times.append((time.perf_counter() - start) * 1000)
        if found_per_image is not None:
            found_per_image[image.image_id] = objects
        for o in objects:
            found.setdefault(o.label, []).append((image.image_id, o.score, o.box))
    ap = {}
    for label in sorted(truth):
        value = average_precision(found.get(label, []), truth[label])
        if value is not None:
            ap[label] = round(value, 4)
    voc = {VOC_TO_COCO.get(c, c) for c in VOC_CLASSES}
    voc_ap = [v for k, v in ap.items() if k in voc]
    return {
        "images": len(images),
        "classes": len(ap),
        "ap50": ap,
        "map50": round(float(np.mean(list(ap.values()))), 4) if ap else None,
        "map50_voc": round(float(np.mean(voc_ap)), 4) if voc_ap else None,
        "voc_classes": sorted(k for k in ap if k in voc),
        "detect_ms_p50": round(float(np.median(times)), 1) if times else None,
    }
