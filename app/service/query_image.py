"""A new query image, the way the app takes it: its identity, one decode, and the app's own copy.

:func:`prepare_query` is the whole path from what the user gave (a file path, bytes, or the pixels
of a crop) to what the searcher needs, and the benchmark runs it too:

1. the key: a sha256 of the file's bytes (of the pixels for an in-memory image), so the same
   picture sent again is recognised without running the model;
2. one decode by :func:`app.core.images.load_image` (format allow-list and pixel cap checked before
   decoding; a JPEG decoded at the smallest DCT scale that still gives the model's resize on each
   side, e.g. 1/8 for a 12 MP photo: 500x375 px);
3. the app's own copy: a JPEG of at most :data:`COPY_SIZE` px, which the page shows, the crop editor
   opens, and the history's thumbnail is made from. The user's file itself is never served back.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from app.core.images import DEFAULT_MAX_PIXELS, load_image
from app.core.thumbnails import fit, jpeg_bytes
from app.errors import InvalidImageError
from app.files.atomic import write_bytes

COPY_SIZE = 1024  # the copy's longer side at most
COPY_DRAFT = 256  # a JPEG is decoded at the smallest scale that still has this many px on each side (at least)


@dataclass(frozen=True)
class QueryImage:
    """A prepared new query: ``image`` goes to the model; ``copy`` (the pixels ``shown``) is what the page shows."""

    key: str
    image: Image.Image
    copy: Path
    shown: Image.Image
    timings_ms: dict[str, float] = field(default_factory=dict)  # hash, decode, copy


def image_key(img: Image.Image) -> str:
    """A hash of the pixels: the same picture given again as pixels gets the same key."""
    h = hashlib.sha256(f"{img.mode}:{img.size[0]}x{img.size[1]}:".encode())
    h.update(img.tobytes())
    return h.hexdigest()


def read_source(source: str | os.PathLike[str] | bytes, max_bytes: int) -> bytes:
    """The bytes of an uploaded file (or the bytes given), refusing more than ``max_bytes``."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        path = Path(source)
        try:
            with open(path, "rb") as fh:
                data = fh.read(max_bytes + 1)
        except OSError as exc:
            raise InvalidImageError(f"Cannot read the uploaded file: {exc.strerror or exc}.") from exc
    if len(data) > max_bytes:
        limit = f"{max_bytes / 2**20:.3g} MB" if max_bytes >= 2**20 else f"{max_bytes / 1024:.3g} KB"
        raise InvalidImageError(f"The file is larger than the limit of {limit}.")
    if not data:
        raise InvalidImageError("The file is empty (0 bytes).")
    return data


def prepare_query(source: str | os.PathLike[str] | bytes | Image.Image, copy_dir: str | os.PathLike[str], *,
                  max_bytes: int = 20 * 1024 * 1024, max_pixels: int = DEFAULT_MAX_PIXELS,
                  key: str | None = None, draft_size: int = COPY_DRAFT) -> QueryImage:
    """Hash, decode (once) and copy a new query image; :class:`InvalidImageError` if it is not one.

    ``key``: the pixels' :func:`image_key` when the caller has it already (in-memory images only);
    ``draft_size``: the model's resize (a JPEG is decoded at a scale that still has it; at least
    :data:`COPY_DRAFT`).
    """
    t0 = time.perf_counter()
    if isinstance(source, Image.Image):
        img = load_image(source, max_pixels=max_pixels)
        t1 = time.perf_counter()
        key = key or image_key(img)
        t2 = time.perf_counter()
        hash_ms, decode_ms = (t2 - t1) * 1000.0, (t1 - t0) * 1000.0
    else:
        data = read_source(source, max_bytes)
        key = hashlib.sha256(data).hexdigest()
        t1 = time.perf_counter()
        named = io.BytesIO(data)
        if not isinstance(source, (bytes, bytearray, memoryview)):
            named.name = Path(source).name  # messages name the file (Gradio keeps the upload's own name)
        img = load_image(named, max_pixels=max_pixels, draft_size=max(COPY_DRAFT, draft_size))
        t2 = time.perf_counter()
        hash_ms, decode_ms = (t1 - t0) * 1000.0, (t2 - t1) * 1000.0
    copy = Path(copy_dir) / f"{key[:40]}.jpg"
    shown = fit(img, COPY_SIZE)
    if not copy.is_file():
        write_bytes(copy, jpeg_bytes(shown), durable=False)
    copy_ms = (time.perf_counter() - t2) * 1000.0
    return QueryImage(key, img, copy, shown, {"hash": hash_ms, "decode": decode_ms, "copy": copy_ms})
