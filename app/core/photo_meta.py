"""What a photo says about itself, recorded at build time for search filters: when it was taken (EXIF
``DateTimeOriginal``, else the file's modification time) and the camera (EXIF ``Make``/``Model``).

Each feature-table row keeps a small dict (``meta``) or ``None`` while unknown::

    {"taken": "2021-07-04T12:30:05", "taken_from": "exif" | "file time", "camera": "Apple iPhone 12" | None}

(``taken_from`` ``"unknown"``, ``taken`` None: the file could not be read when the change was committed.)

Every access goes through the functions here (:func:`read_photo_meta`, :func:`fill_photo_meta`,
:func:`item_meta`), so the table's storage (JSON today) can change without touching the callers.
Only the file's header is read (Pillow opens without decoding pixels).
"""

from __future__ import annotations

import os
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image

from app.core.camera_formats import register_heif
from app.core.feature_table import FeatureTable

EXIF_IFD = 0x8769
DATE_TIME_ORIGINAL = 0x9003
MAKE, MODEL = 0x010F, 0x0110
_READABLE = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF", "HEIF")


UNKNOWN: dict[str, Any] = {"taken": None, "taken_from": "unknown", "camera": None}


def read_photo_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The capture time and camera of the file at ``path`` (:data:`UNKNOWN` when it cannot even be
    ``stat``-ed: recorded as such, so it is not read again at every change)."""
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return dict(UNKNOWN)
    taken, camera = _exif(path)
    if taken is None:
        return {"taken": datetime.fromtimestamp(mtime).isoformat(timespec="seconds"), "taken_from": "file time",
                "camera": camera}
    return {"taken": taken, "taken_from": "exif", "camera": camera}


def _exif(path: str | os.PathLike) -> tuple[str | None, str | None]:
    register_heif()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path, formats=_READABLE) as img:
                exif = img.getexif()
                original = exif.get_ifd(EXIF_IFD).get(DATE_TIME_ORIGINAL)
                make, model = exif.get(MAKE), exif.get(MODEL)
    except Exception:  # noqa: BLE001 - metadata is optional: any unreadable header means "none"
        return None, None
    return _exif_time(original), _camera(make, model)


def _exif_time(value: Any) -> str | None:
    """``"2021:07:04 12:30:05"`` as ``"2021-07-04T12:30:05"`` (None when it is not a valid time)."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value.strip().rstrip("\x00")[:19], "%Y:%m:%d %H:%M:%S").isoformat(timespec="seconds")
    except ValueError:
        return None


def _camera(make: Any, model: Any) -> str | None:
    """``Make Model`` on one line, the make left out when the model repeats it ("Canon EOS R5")."""
    texts = [v.decode("ascii", "replace") if isinstance(v, bytes) else v for v in (make, model)]
    parts = [" ".join(t.replace("\x00", " ").split()) for t in texts if isinstance(t, str)]
    parts = [p for p in parts if p]
    if len(parts) == 2 and parts[1].lower().startswith(parts[0].split()[0].lower()):
        parts = parts[1:]
    return " ".join(parts)[:100] or None


def fill_photo_meta(table: FeatureTable, image_root: str | os.PathLike) -> int:
    """Record the metadata of every valid row that has none yet (new rows, and every row of a table
    migrated from format 2); returns how many rows were read."""
    root = Path(image_root)
    n = 0
    for i in table.live_ids().tolist():
        if table.meta[i] is None:
            table.meta[i] = read_photo_meta(root / table.paths[i])
            n += 1
    return n


def missing_photo_meta(table: FeatureTable) -> bool:
    """Whether a valid row has no metadata yet (a table migrated from format 2)."""
    return any(table.meta[i] is None for i in table.live_ids().tolist())


def item_meta(table: FeatureTable, i: int) -> dict[str, Any] | None:
    """Row ``i``'s metadata (None: unknown)."""
    return table.meta[i]
