"""Image -> network input, as each model's registry entry declares (``app.core.models.Preprocessing``).

Pillow and numpy only, so the query path and the DataLoader workers need no torch. The tests
check ResNet-50's against ``ResNet50_Weights.DEFAULT.transforms()``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from app.core.models import Preprocessing

_FILTERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def preprocess(img: Image.Image, pp: Preprocessing) -> np.ndarray:
    """RGB PIL image -> normalised float32 array of shape (3, crop, crop).

    The same geometry as torchvision's transform (short side resized to ``pp.resize``, centre
    crop ``pp.crop``), but only the crop is resampled (Pillow's ``resize(box=...)``): the result
    matches resize-then-crop to within one grey level, and a 2 x 20000 image costs no more than a
    normal photo.
    """
    w, h = img.size
    size, crop = pp.resize, pp.crop
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    top = int(round((new_h - crop) / 2.0))
    left = int(round((new_w - crop) / 2.0))
    if (new_w, new_h) == (w, h):
        img = img.crop((left, top, left + crop, top + crop))
    else:
        sx, sy = w / new_w, h / new_h
        box = (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)
        img = img.resize((crop, crop), _FILTERS[pp.interpolation], box=box)
    arr = np.asarray(img, dtype=np.float32) * (1.0 / 255.0)
    arr = (arr - np.asarray(pp.mean, np.float32)) / np.asarray(pp.std, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))
