"""Phone and camera formats for the one loader (:mod:`app.core.images`): HEIC/HEIF through
``pillow-heif`` (libheif), and camera RAW files (DNG, CR2, NEF, ARW...) through ``rawpy`` (LibRaw),
which reads only the JPEG preview the camera embedded (the raw sensor data is never developed).

AVIF is Pillow's own plugin (libavif), so it needs nothing here. ``pillow_heif`` and ``rawpy`` are
imported on first use, not when this module is imported.
"""

from __future__ import annotations

import io
import os
import struct
import threading
from dataclasses import dataclass

from PIL import Image

from app.errors import InvalidImageError

HEIF_SUFFIXES = frozenset({".heic", ".heif", ".hif"})
# Camera RAW files LibRaw reads; every one of these keeps a JPEG preview in all common cameras.
RAW_SUFFIXES = frozenset({
    ".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".orf", ".rw2", ".raf", ".pef",
    ".srw", ".rwl", ".3fr", ".erf", ".kdc", ".dcr", ".mrw", ".x3f", ".iiq", ".mos", ".mef",
})
# LibRaw's ``flip`` (0, 3, 5, 6) as a PIL transpose: 3 = 180 degrees, 5 = 90 counter-clockwise, 6 = 90 clockwise.
_FLIP = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}
_DNG_VERSION_TAG = 50706

_heif_lock = threading.Lock()
_heif_registered = False


def register_heif() -> None:
    """Teach Pillow to open HEIC/HEIF (once per process; cheap after the first call).

    Embedded thumbnails stay enabled: :meth:`PIL.Image.Image.draft` on a HEIF then decodes the smallest
    thumbnail that still covers the requested size, the HEIF counterpart of JPEG's DCT scaling."""
    global _heif_registered
    if _heif_registered:
        return
    with _heif_lock:
        if not _heif_registered:
            from pillow_heif import register_heif_opener

            register_heif_opener(thumbnails=True)
            _heif_registered = True


def raw_kind(name: str | None, head: bytes) -> str | None:
    """``"RAW"`` when a file is a camera RAW, by its first bytes or else its name's extension; else None."""
    if sniff_raw(head):
        return "RAW"
    if name and os.path.splitext(str(name))[1].lower() in RAW_SUFFIXES:
        return "RAW"
    return None


def sniff_raw(head: bytes) -> bool:
    """A RAW format recognisable from its first bytes: DNG (a TIFF with a DNGVersion tag in its first
    directory), Canon CR2/CR3, Olympus ORF, Panasonic RW2, Fujifilm RAF."""
    if head[:4] == b"II*\x00" and head[8:10] == b"CR":
        return True  # Canon CR2
    if head[:4] in (b"IIRO", b"IIRS", b"MMOR", b"IIU\x00") or head.startswith(b"FUJIFILMCCD-RAW"):
        return True
    if head[4:12] == b"ftypcrx ":
        return True  # Canon CR3
    return _tiff_has_tag(head, _DNG_VERSION_TAG)


def _tiff_has_tag(head: bytes, tag: int) -> bool:
    if head[:4] == b"II*\x00":
        order = "<"
    elif head[:4] == b"MM\x00*":
        order = ">"
    else:
        return False
    if len(head) < 8:
        return False
    offset = struct.unpack(order + "I", head[4:8])[0]
    if offset + 2 > len(head):
        return False
    count = struct.unpack(order + "H", head[offset : offset + 2])[0]
    for i in range(min(count, (len(head) - offset - 2) // 12)):
        at = offset + 2 + 12 * i
        if struct.unpack(order + "H", head[at : at + 2])[0] == tag:
            return True
    return False


@dataclass(frozen=True)
class RawPreview:
    """The preview a RAW file holds: JPEG bytes (``jpeg``) or decoded pixels (``image``), and LibRaw's flip."""

    jpeg: bytes | None
    image: Image.Image | None
    flip: int


def raw_preview(data: bytes, name: str, max_pixels: int) -> RawPreview:
    """The largest embedded preview of the RAW file ``data``, not decoded when it is a JPEG.

    Raises :class:`InvalidImageError`: not a RAW file LibRaw reads, damaged, no preview (the file is
    skipped with that reason), or a bitmap preview over ``max_pixels``."""
    import rawpy

    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            flip = int(raw.sizes.flip)
            thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError) as exc:
        raise InvalidImageError(
            f"{_shown(name)} is a camera RAW file with no readable embedded preview (only the preview is read).",
            hint="Export it to JPEG from your camera's software.") from exc
    except rawpy.LibRawFileUnsupportedError as exc:
        raise InvalidImageError(f"{_shown(name)} is not a camera RAW file this app can read.") from exc
    except (rawpy.LibRawError, OSError, ValueError, MemoryError) as exc:
        raise InvalidImageError(f"{_shown(name)} is a damaged or truncated camera RAW file ({_text(exc)}).") from exc
    if thumb.format == rawpy.ThumbFormat.JPEG:
        jpeg = bytes(thumb.data)
        if not _stored_in(jpeg, data):
            raise InvalidImageError(f"{_shown(name)} is a damaged or truncated camera RAW file "
                                    "(its preview runs past the end of the file).")
        return RawPreview(jpeg, None, flip)
    pixels = thumb.data  # rawpy.ThumbFormat.BITMAP: an (h, w, 3) uint8 array LibRaw decoded
    h, w = pixels.shape[:2]
    if w * h > max_pixels:
        raise InvalidImageError(f"{_shown(name)} holds a preview too large to decode safely ({w}x{h}).")
    return RawPreview(None, Image.fromarray(pixels[..., :3]).convert("RGB"), flip)


def _stored_in(jpeg: bytes, data: bytes) -> bool:
    """Whether the preview LibRaw returned lies whole in the file. LibRaw reads a preview's declared
    length even past the end of a truncated file (the rest of its buffer is not the file's), and puts
    an EXIF header after the JPEG's first marker when the preview has none."""
    if data.find(jpeg) >= 0:
        return True
    if jpeg[2:4] == b"\xff\xe1" and jpeg[6:10] == b"Exif":
        added = 2 + int.from_bytes(jpeg[4:6], "big")
        return data.find(jpeg[:2] + jpeg[2 + added :]) >= 0
    return False


def apply_flip(img: Image.Image, flip: int) -> Image.Image:
    """Turn a RAW preview upright by LibRaw's ``flip`` (the camera's orientation tag)."""
    method = _FLIP.get(flip)
    return img.transpose(method) if method is not None else img


def jpeg_orientation(data: bytes) -> int:
    """The EXIF orientation a JPEG carries itself (1 when none or unreadable)."""
    try:
        with Image.open(io.BytesIO(data), formats=("JPEG",)) as img:
            return int(img.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - a damaged preview is reported by the loader that decodes it
        return 1


def _text(exc: BaseException) -> str:
    text = exc.args[0] if exc.args else exc
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return str(text)


def _shown(name: str) -> str:
    return "The data" if name == "the data" else f"The file {os.path.basename(name)}"
