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
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from app.core.images import DEFAULT_MAX_PIXELS, load_image
from app.core.thumbnails import fit, jpeg_bytes
from app.errors import InvalidImageError
from app.files.atomic import write_bytes
from app.service.timings import Timings

COPY_SIZE = 1024  # the copy's longer side at most
COPY_DRAFT = 256  # a JPEG is decoded at the smallest scale that still has this many px on each side (at least)


@dataclass(frozen=True)
class QueryImage:
    """A prepared new query: ``image`` goes to the model; ``copy`` (the pixels ``shown``) is what the page shows."""

    key: str
    image: Image.Image
    copy: Path | None  # None when no copy folder was given
    shown: Image.Image


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


def prepare_query(source: str | os.PathLike[str] | bytes | Image.Image, copy_dir: str | os.PathLike[str] | None, *,
                  max_bytes: int = 20 * 1024 * 1024, max_pixels: int = DEFAULT_MAX_PIXELS,
                  key: str | None = None, draft_size: int = COPY_DRAFT, timings: Timings | None = None) -> QueryImage:
    """Hash, decode (once) and copy a new query image; :class:`InvalidImageError` if it is not one.

    ``copy_dir``: where the app's copy goes (None: no copy, e.g. for the command line);
    ``key``: the image's identity when the caller knows it (the pixels' :func:`image_key` of a crop, or the
    key a copy was made under); default: a sha256 of the file's bytes (of the pixels for an image);
    ``draft_size``: the model's resize (a JPEG is decoded at a scale that still has it; at least
    :data:`COPY_DRAFT`); ``timings``: the stages ``hash`` (reading and hashing), ``decode`` and ``copy``
    are recorded there.
    """
    t = timings if timings is not None else Timings()
    if isinstance(source, Image.Image):
        with t.stage("decode"):
            img = load_image(source, max_pixels=max_pixels)
        with t.stage("hash"):
            key = key or image_key(img)
    else:
        with t.stage("hash"):
            data = read_source(source, max_bytes)
            key = key or hashlib.sha256(data).hexdigest()
        with t.stage("decode"):
            named = io.BytesIO(data)
            if not isinstance(source, (bytes, bytearray, memoryview)):
                named.name = Path(source).name  # messages name the file (Gradio keeps the upload's own name)
            img = load_image(named, max_pixels=max_pixels, draft_size=max(COPY_DRAFT, draft_size))
    with t.stage("copy"):
        shown, copy = img, None
        if copy_dir is not None:
            shown = fit(img, COPY_SIZE)
            copy = Path(copy_dir) / f"{key[:40]}.jpg"
            if not copy.is_file():
                write_bytes(copy, jpeg_bytes(shown), durable=False)
    return QueryImage(key, img, copy, shown)
