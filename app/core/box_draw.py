"""Boxes drawn on images: a labelled box on a photo (:func:`draw_boxes`), and a result's thumbnail with its
matched object's box (:func:`boxed_thumb`), cached on disk beside the other thumbnails (keyed by the file's
real path, size and mtime, the box and the label) and written atomically."""

from __future__ import annotations

import hashlib
import os
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

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
    width = max(2, round(max(out.size) / 200))
    font = ImageFont.load_default(size=max(10, round(max(out.size) / 45)))
    for box, label in boxes:
        x1, y1, x2, y2 = (float(v) * scale for v in box)
        draw.rectangle((x1, y1, x2, y2), outline=BOX_RGB, width=width)
        if label:
            left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
            h = bottom - top + 2 * width
            tx, ty = x1, (y1 - h if y1 >= h else y1)  # above the box, or inside it at the top edge
            draw.rectangle((tx, ty, tx + right - left + 2 * width, ty + h), fill=BOX_RGB)
            draw.text((tx + width - left, ty + width - top), label, fill=(255, 255, 255), font=font)
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
