"""Box arithmetic in numpy: intersection over union, and greedy non-maximum suppression per class."""

from __future__ import annotations

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4), boxes as x1, y1, x2, y2: (N, M)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float) -> list[int]:
    """Indices kept by greedy NMS run separately within each class, best score first.

    Boxes of different classes never suppress each other: each class is shifted by more than the
    extent of all boxes (the usual offset trick), so one pass does every class."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return []
    span = float(boxes.max() - boxes.min()) + 1.0
    shifted = boxes + (np.asarray(classes, np.float64) * span)[:, None]
    order = list(np.argsort(-np.asarray(scores), kind="stable"))
    keep: list[int] = []
    while order:  # each pass removes at least the box it keeps
        best, rest = order[0], np.asarray(order[1:], dtype=np.int64)
        keep.append(int(best))
        if not len(rest):
            break
        overlap = box_iou(shifted[best:best + 1], shifted[rest])[0]
        order = list(rest[overlap <= iou])
    return keep
