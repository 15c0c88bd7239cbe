"""Object detection: a registered detector (:mod:`app.core.detectors`) run by ONNX Runtime.

The photo is resized to the detector's square input (stretched, as NanoDet's TF.js users feed it, or
letterboxed, as the registry entry says), converted to the entry's channel order and normalised with its mean
and std. Each stride's outputs decode as NanoDet's GFL head does: every cell has one score per class
(already through a sigmoid) and, per side (left, top, right, bottom), ``reg_max + 1`` bins whose
softmax expectation, times the stride, is the distance from the cell's centre to that side. Boxes go
back to the photo's own pixels and are clipped to it; then non-maximum suppression per class, a score
threshold and a cap on objects per photo. Pure numpy apart from the session (:mod:`app.core.nms`).
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from app.core.detectors import DetectorSpec, detector_model_path, get_detector
from app.core.images import load_image
from app.core.nms import batched_nms
from app.errors import InvalidBoxError

SCORE_THRESHOLD = 0.35  # what a person is shown; the evaluation lowers it for AP
NMS_IOU = 0.6
MAX_OBJECTS = 20  # per photo, best first
MAX_CANDIDATES = 1000  # (cell, class) pairs kept before NMS


@dataclass(frozen=True)
class DetectedObject:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in the photo's pixels, inside it
    label: str
    score: float
    class_id: int

    def to_json(self) -> dict:
        return {"box": [round(v, 1) for v in self.box], "label": self.label, "score": round(self.score, 4)}


def clip_box(box: Sequence[float], width: int, height: int) -> tuple[float, float, float, float]:
    """``box`` (x1, y1, x2, y2) clipped to a ``width`` x ``height`` image. Raises InvalidBoxError for
    anything but four finite numbers, or a box with no area once clipped."""
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise InvalidBoxError(f"A box is four numbers x1, y1, x2, y2, not {box!r}.") from None
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise InvalidBoxError(f"A box's corners must be finite numbers, not {box!r}.")
    x1, x2 = sorted((min(max(x1, 0.0), width), min(max(x2, 0.0), width)))
    y1, y2 = sorted((min(max(y1, 0.0), height), min(max(y2, 0.0), height)))
    if x2 - x1 < 1.0 or y2 - y1 < 1.0:
        raise InvalidBoxError(
            f"The box {list(box)} has no area inside the {width}x{height} image; give a box of at least "
            "one pixel each way.")
    return (x1, y1, x2, y2)


def crop_box(source, box: Sequence[float]) -> Image.Image:
    """The region ``box`` (x1, y1, x2, y2 in the image's pixels) of ``source`` (anything :func:`load_image`
    reads), clipped to the image; InvalidBoxError for a box of no size."""
    img = load_image(source)
    x1, y1, x2, y2 = clip_box(box, img.width, img.height)
    return img.crop((math.floor(x1), math.floor(y1), math.ceil(x2), math.ceil(y2)))


def fit_input(img: Image.Image, spec: DetectorSpec) -> tuple[np.ndarray, np.ndarray]:
    """(input 1x3xSxS float32, affine (4,)): photo pixel = (input pixel - offset) / scale, the affine as
    (offset_x, offset_y, scale_x, scale_y). With ``keep_ratio`` the photo is letterboxed (centred, padded
    with the mean colour, which normalises to zero); without, it is stretched to the square."""
    size = spec.input_size
    if spec.keep_ratio:
        sx = sy = min(size / img.width, size / img.height)
    else:
        sx, sy = size / img.width, size / img.height
    w, h = max(1, round(img.width * sx)), max(1, round(img.height * sy))
    pad_x, pad_y = (size - w) // 2, (size - h) // 2
    rgb = np.asarray(img.convert("RGB").resize((w, h), Image.BILINEAR), dtype=np.float32)
    pixels = rgb[:, :, ::-1] if spec.channel_order == "BGR" else rgb
    canvas = np.zeros((size, size, 3), np.float32)
    canvas[pad_y:pad_y + h, pad_x:pad_x + w] = (pixels - np.asarray(spec.mean, np.float32)) / np.asarray(
        spec.std, np.float32)
    return canvas.transpose(2, 0, 1)[None].copy(), np.array([pad_x, pad_y, w / img.width, h / img.height])


def decode(outputs: dict[int, tuple[np.ndarray, np.ndarray]], spec: DetectorSpec) -> tuple[np.ndarray, np.ndarray]:
    """Per stride (scores (cells, classes), bins (cells, 4 * (reg_max + 1))) -> (boxes (N, 4) in input
    pixels, scores (N, classes)), N the cells of every stride, in stride order."""
    boxes, scores = [], []
    project = np.arange(spec.bins, dtype=np.float32)
    for stride in spec.strides:
        cls, reg = outputs[stride]
        side = spec.input_size // stride
        cells = np.arange(side * side)
        cx = (cells % side + 0.5) * stride
        cy = (cells // side + 0.5) * stride
        logits = reg.reshape(-1, 4, spec.bins)
        logits = logits - logits.max(axis=2, keepdims=True)
        prob = np.exp(logits)
        dist = (prob / prob.sum(axis=2, keepdims=True)) @ project * stride  # (cells, 4): l, t, r, b
        boxes.append(np.stack([cx - dist[:, 0], cy - dist[:, 1], cx + dist[:, 2], cy + dist[:, 3]], axis=1))
        scores.append(cls)
    return np.concatenate(boxes).astype(np.float32), np.concatenate(scores).astype(np.float32)


def select(boxes: np.ndarray, scores: np.ndarray, *, score_threshold: float, max_objects: int,
           iou: float = NMS_IOU) -> list[tuple[int, int, float]]:
    """(cell, class, score) of the objects kept: score over the threshold, the best MAX_CANDIDATES,
    NMS per class, then the best ``max_objects``."""
    cell, cls = np.nonzero(scores > score_threshold)
    value = scores[cell, cls]
    order = np.argsort(-value, kind="stable")[:MAX_CANDIDATES]
    cell, cls, value = cell[order], cls[order], value[order]
    keep = batched_nms(boxes[cell], value, cls, iou)[:max(0, max_objects)]
    return [(int(cell[i]), int(cls[i]), float(value[i])) for i in keep]


class Detector:
    """One registered detector, loaded lazily from the checked cache (thread-safe)."""

    def __init__(self, cache_dir: str | os.PathLike, spec: DetectorSpec | str | None = None, *,
                 threads: int | None = None, model_path: str | os.PathLike | None = None,
                 spinning: bool = True) -> None:
        """``model_path``: run this ONNX file instead of the installed one (tests, the installer's check)."""
        self.spec = get_detector(spec)
        self.cache_dir = Path(cache_dir)
        self.threads = threads
        self.spinning = spinning
        self._model_path = Path(model_path) if model_path else None
        self._session = None
        self._outputs: dict[int, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def load(self) -> "Detector":
        """Open the model (checked against its checksum). Raises DetectorUnavailableError."""
        with self._lock:
            if self._session is None:
                import onnxruntime as ort

                path = self._model_path or detector_model_path(self.cache_dir, self.spec)
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = int(self.threads or os.cpu_count() or 1)
                opts.inter_op_num_threads = 1
                opts.log_severity_level = 3
                opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spinning else "0")
                session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
                self._outputs = self._output_names(session)
                self._session = session
        return self

    def _output_names(self, session) -> dict[int, tuple[str, str]]:
        """stride -> (scores output, bins output), found by shape: (1, cells, classes) and
        (1, cells, 4 * bins), cells = (input / stride) ** 2."""
        by_shape = {tuple(o.shape[1:]): o.name for o in session.get_outputs()}
        found = {}
        for stride in self.spec.strides:
            cells = (self.spec.input_size // stride) ** 2
            cls, reg = by_shape.get((cells, len(self.spec.labels))), by_shape.get((cells, 4 * self.spec.bins))
            if cls is None or reg is None:
                raise RuntimeError(f"{self.spec.name}: the model has no outputs for stride {stride}")
            found[stride] = (cls, reg)
        return found

    def detect(self, source, *, score_threshold: float = SCORE_THRESHOLD,
               max_objects: int = MAX_OBJECTS) -> list[DetectedObject]:
        """The objects in ``source`` (anything :func:`load_image` reads, or a decoded RGB image), best
        first, boxes in its pixels."""
        img = source if isinstance(source, Image.Image) and source.mode == "RGB" else load_image(source)
        self.load()
        x, (pad_x, pad_y, sx, sy) = fit_input(img, self.spec)
        names = [n for pair in self._outputs.values() for n in pair]
        values = dict(zip(names, self._session.run(names, {self._session.get_inputs()[0].name: x}), strict=True))
        raw = {s: (values[c][0], values[r][0]) for s, (c, r) in self._outputs.items()}
        boxes, scores = decode(raw, self.spec)
        boxes = (boxes - np.array([pad_x, pad_y, pad_x, pad_y], np.float32)) / np.array([sx, sy, sx, sy], np.float32)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, img.width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, img.height)
        out = []
        for cell, cls, score in select(boxes, scores, score_threshold=score_threshold, max_objects=max_objects):
            x1, y1, x2, y2 = (float(v) for v in boxes[cell])
            if x2 - x1 >= 1.0 and y2 - y1 >= 1.0:  # a box squeezed to nothing by the clip is no object
                out.append(DetectedObject((x1, y1, x2, y2), self.spec.labels[cls], score, cls))
        return out
