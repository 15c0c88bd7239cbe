"""Boxes drawn on images: a labelled box on a photo (:func:`draw_boxes`), and a result's thumbnail with its
matched object's box (:func:`boxed_thumb`), cached on disk beside the other thumbnails (keyed by the file's
real path, size and mtime, the box and the label) and written atomically."""

from __future__ import annotations

import hashlib
import os
from typing import Sequence

from PIL import Image, ImageDraw

from app.core.images import load_image
from app.core.thumbnails import Rendition, Thumbnails, fit, jpeg_bytes
from app.errors import InvalidImageError
from app.files.atomic import write_bytes

BOX_RGB = (234, 88, 12)
_VERSION = "1"


def draw_boxes(img: Image.Image, boxes: Sequence[tuple[Sequence[float], str]], *, scale: float = 1.0) -> Image.Image:
    """A copy of ``img`` with each ``(box, label)`` drawn (box x1, y1, x2, y2 in the pixels of ``img``
    times ``1 / scale``: ``scale`` maps the box's image onto ``img``)."""
    out = img.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    width = max(2, round(max(out.size) / 160))
    for box, label in boxes:
        x1, y1, x2, y2 = (float(v) * scale for v in box)
        draw.rectangle((x1, y1, x2, y2), outline=BOX_RGB, width=width)
        if label:
            tx, ty = x1 + width, max(0.0, y1 - 12 - width) if y1 >= 14 else y1 + width
            text_box = draw.textbbox((tx, ty), label)
            draw.rectangle(text_box, fill=BOX_RGB)
            draw.text((tx, ty), label, fill=(255, 255, 255))
    return out


def boxed_thumb(thumbs: Thumbnails, source: str | os.PathLike[str], box: Sequence[float], label: str) -> Rendition:
    """A thumbnail of ``source`` with ``box`` (in the file's pixels) drawn and labelled; a placeholder
    (``ok=False``) for a missing or unreadable file."""
    size = thumbs.thumb_size
    try:
        real = os.path.realpath(source)
        st = os.stat(real)
    except OSError:
        return Rendition(thumbs.placeholder(size), ok=False)
    spec = ",".join(f"{float(v):.1f}" for v in box)
    key = hashlib.sha256(f"{_VERSION}\0{real}\0{st.st_size}\0{st.st_mtime_ns}\0{size}\0{spec}\0{label}".encode(
        "utf-8", "surrogateescape")).hexdigest()
    out = thumbs.root / "boxed" / key[:2] / f"{key}.jpg"
    if out.is_file():
        return Rendition(out)
    try:
        img = load_image(real)
    except InvalidImageError:
        return Rendition(thumbs.placeholder(size), ok=False)
    small = fit(img, size)
    write_bytes(out, jpeg_bytes(draw_boxes(small, [(box, label)], scale=small.width / img.width), preview=False),
                durable=False)
    return Rendition(out)
