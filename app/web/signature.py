"""Pixel signatures: a 16x16 thumbnail's bytes, to tell whether two images are the same picture up to
decoding differences. The crop editor echoes the image it is opened on (decoded by the browser); the
signature recognises that echo (:func:`app.web.queries.matches`) so that it is not searched as a crop."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps


def signature(img: Image.Image) -> bytes:
    return img.convert("RGB").resize((16, 16), Image.Resampling.BOX).tobytes()


def same_picture(a: bytes, b: bytes, tolerance: float = 6.0) -> bool:
    """Two signatures of the same picture (decoders differ by a few levels; other pictures by far more)."""
    return bool(a) and len(a) == len(b) and sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a) <= tolerance


def file_size_and_signature(path: str | Path) -> tuple[tuple[int, int] | None, bytes]:
    """Size and signature of an image file as a browser shows it (EXIF orientation applied)."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                w, h = h, w
            im.draft("RGB", (64, 64))
            return (w, h), signature(ImageOps.exif_transpose(im))
    except (OSError, ValueError, SyntaxError):
        return None, b""
