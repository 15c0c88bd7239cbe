"""Searching part of a collection: a sub-folder, a capture-date range, a camera, and similarity shown
as bands a person understands, with a cut-off.

``python -m app.cli search IMG --collection NAME --since 2020-01-01 --folder trips --json`` gives a
:class:`SearchFilter` to :class:`~app.service.search.SearchService` (``where=``), which applies it
**before** ranking: the query is compared (exact cosine, from the stored vectors) with every item that
passes it, so a filtered search returns k hits whenever k items pass, however
few of the collection's items that is. The capture date and camera come from the feature table
(:mod:`app.core.photo_meta`, recorded at build time); an item whose metadata is unknown does not pass
a date or camera filter.

**Bands** (:data:`BANDS`, cosine similarity): calibrated on EfficientNet-Lite0 over Caltech101, where
a nearest neighbour scoring 0.75 or more shares the query's category 98-100% of the time, 0.60-0.75
about 92-98%, 0.50-0.60 about 74%. "same photo" (0.95) is a copy or a light edit: on four real photos,
+20% brightness scored 0.99-1.00 with Lite0, a mirror image 0.95-0.98, a 90% crop 0.91-0.97; a copy
halved and saved at JPEG quality 60 scored 0.81-0.89 ("very similar").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from app.core.photo_meta import item_meta
from app.errors import AppError

BANDS: tuple[tuple[str, float], ...] = (("same photo", 0.95), ("very similar", 0.75), ("similar", 0.60),
                                        ("loosely related", -1.0))
BAND_NAMES = tuple(name for name, _ in BANDS)


def band(score: float) -> str:
    """The band a cosine ``score`` falls in."""
    return next(name for name, low in BANDS if score >= low)


def band_floor(name: str) -> float:
    """The lowest score of the band ``name`` (a cut-off keeps hits at or above it)."""
    for band_name, low in BANDS:
        if band_name == name:
            return low
    raise AppError(f"Unknown band {name!r}; one of: {', '.join(BAND_NAMES)}.")


@dataclass(frozen=True)
class SearchFilter:
    """Which items a search may return. Dates are inclusive calendar days of the capture time."""

    since: date | None = None
    until: date | None = None
    folder: str | None = None  # relative to the collection's folder ("trips", "trips/2021")
    camera: str | None = None  # a case-insensitive part of the camera name ("iphone", "EOS R5")
    min_band: str | None = None  # a cut-off: hits below this band are left out

    @property
    def selects(self) -> bool:
        return any(v is not None for v in (self.since, self.until, self.folder, self.camera))

    def to_json(self) -> dict[str, Any]:
        return {"since": self.since.isoformat() if self.since else None,
                "until": self.until.isoformat() if self.until else None,
                "folder": self.folder, "camera": self.camera, "min_band": self.min_band}


def parse_filter(*, since: str | None = None, until: str | None = None, folder: str | None = None,
                 camera: str | None = None, min_band: str | None = None) -> SearchFilter:
    """A :class:`SearchFilter` from text as people type it (dates ``YYYY-MM-DD``); AppError when invalid."""
    days = [_day(v, flag) for v, flag in ((since, "--since"), (until, "--until"))]
    if days[0] and days[1] and days[0] > days[1]:
        raise AppError(f"--since {since} is after --until {until}; nothing could match.")
    if min_band is not None:
        band_floor(min_band)
    folder = folder.strip().strip("/") if folder else None
    return SearchFilter(days[0], days[1], folder or None, (camera or "").strip() or None, min_band)


def _day(value: str | None, flag: str) -> date | None:
    if value is None or not value.strip():
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError as exc:
        raise AppError(f"{flag} {value!r} is not a date; write it as YYYY-MM-DD (e.g. 2020-01-01).") from exc


def passes(flt: SearchFilter, path: str, meta: dict[str, Any] | None) -> bool:
    """Whether the item at ``path`` with ``meta`` passes ``flt``."""
    if flt.folder and not (path == flt.folder or path.startswith(flt.folder + "/")):
        return False
    if flt.since or flt.until:
        taken = (meta or {}).get("taken")
        if not taken:
            return False
        day = date.fromisoformat(str(taken)[:10])
        if (flt.since and day < flt.since) or (flt.until and day > flt.until):
            return False
    if flt.camera and flt.camera.lower() not in str((meta or {}).get("camera") or "").lower():
        return False
    return True


def matching_ids(col, flt: SearchFilter) -> np.ndarray:
    """The valid item ids of the loaded collection ``col`` that pass ``flt``."""
    table = col.table
    return np.asarray([i for i in col.live_ids.tolist() if passes(flt, table.paths[i], item_meta(table, i))],
                      dtype=np.int64)
