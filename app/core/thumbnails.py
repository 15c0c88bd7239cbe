"""Thumbnails and previews: small renderings of images, made once and cached on disk.

The web app never serves a collection's own files. Results, examples and history show a
thumbnail (:data:`THUMB_SIZE` px on the longer side); the query image and the compare view show a
preview (:data:`PREVIEW_SIZE` px). Both are re-encoded JPEGs made from the decoded pixels by the
app's own loader, so whatever else an image file holds (metadata, appended data, a script in an
SVG) is never sent to a browser.

A rendering is keyed by the source's real path, size and modification time plus the rendering
size (a changed file gets a new rendering), stored under ``<cache>/thumbnails/<size>/``, and written
atomically. A source that is missing or cannot be decoded gives a placeholder image and
``ok=False``, never an error. The cache folder holds nothing but renderings, so it can be served
as it is.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from app.core.images import load_image
from app.errors import InvalidImageError
from app.files.atomic import write_bytes

log = logging.getLogger(__name__)

THUMB_SIZE = 256
PREVIEW_SIZE = 1024
JPEG_QUALITY = 85  # thumbnails
PREVIEW_QUALITY = 92  # previews are looked at closely and cropped: better quality, full-resolution colour
PLACEHOLDER_RGB = (203, 213, 225)
_RENDER_VERSION = "1"  # bump when the rendering changes: older files are then not reused


@dataclass(frozen=True)
class Rendition:
    """A rendering of an image: the file to show, and whether it shows the image (False: a placeholder)."""

    path: Path
    ok: bool = True


class Thumbnails:
    """Makes and caches renderings under ``root``; safe to use from several threads."""

    def __init__(self, root: str | os.PathLike[str], *, thumb_size: int = THUMB_SIZE,
                 preview_size: int = PREVIEW_SIZE) -> None:
        self.root = Path(root)
        self.thumb_size = thumb_size
        self.preview_size = preview_size

    def thumb(self, source: str | os.PathLike[str], pixels: Image.Image | None = None) -> Rendition:
        """A thumbnail of ``source`` (made the first time, then read from the cache). ``pixels``: the
        file's decoded pixels when the caller has them (the file is then not decoded again)."""
        return self.render(source, self.thumb_size, pixels)

    def preview(self, source: str | os.PathLike[str]) -> Rendition:
        """A preview of ``source``: large enough to look at and to crop."""
        return self.render(source, self.preview_size)

    def render(self, source: str | os.PathLike[str], size: int, pixels: Image.Image | None = None) -> Rendition:
        try:
            real = os.path.realpath(source)
            st = os.stat(real)
        except OSError:
            return Rendition(self.placeholder(size), ok=False)
        key = hashlib.sha256(f"{_RENDER_VERSION}\0{real}\0{st.st_size}\0{st.st_mtime_ns}\0{size}".encode(
            "utf-8", "surrogateescape")).hexdigest()
        out = self.root / str(size) / key[:2] / f"{key}.jpg"
        if out.is_file():
            return Rendition(out)
        try:
            data = render_jpeg(real if pixels is None else pixels, size)
        except InvalidImageError as exc:
            log.warning("no thumbnail for %s: %s", source, exc.user_message())
            return Rendition(self.placeholder(size), ok=False)
        write_bytes(out, data, durable=False)
        return Rendition(out)

    def placeholder(self, size: int) -> Path:
        """A plain image saying that the picture is missing (made once per size)."""
        out = self.root / str(size) / f"placeholder-v{_RENDER_VERSION}.png"
        if not out.is_file():
            write_bytes(out, _placeholder_png(size), durable=False)
        return out


def render_jpeg(source: str | os.PathLike[str] | Image.Image, size: int) -> bytes:
    """JPEG bytes of ``source`` scaled to fit ``size`` x ``size`` (never enlarged), decoded by the app's loader."""
    img = load_image(source, draft_size=size) if not isinstance(source, Image.Image) else source
    return jpeg_bytes(fit(img, size), preview=size > THUMB_SIZE)


def jpeg_bytes(img: Image.Image, *, preview: bool = True) -> bytes:
    """``img`` as JPEG: thumbnail quality, or (``preview``) high quality without chroma subsampling."""
    buf = io.BytesIO()
    if preview:
        img.save(buf, format="JPEG", quality=PREVIEW_QUALITY, subsampling=0)
    else:
        img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def fit(img: Image.Image, size: int) -> Image.Image:
    """``img`` scaled down to fit ``size`` x ``size`` (a copy; the same image if it already fits)."""
    if max(img.size) <= size:
        return img
    out = img.copy()
    out.thumbnail((size, size), Image.Resampling.BICUBIC, reducing_gap=2.0)
    return out


def _placeholder_png(size: int) -> bytes:
    img = Image.new("RGB", (size, size), PLACEHOLDER_RGB)
    draw = ImageDraw.Draw(img)
    m = size // 4
    draw.rectangle((m, m, size - m, size - m), outline=(100, 116, 139), width=max(2, size // 64))
    draw.line((m, m, size - m, size - m), fill=(100, 116, 139), width=max(2, size // 64))
    draw.line((m, size - m, size - m, m), fill=(100, 116, 139), width=max(2, size // 64))
    draw.text((m, size - m + size // 32), "image missing", fill=(51, 65, 85))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
