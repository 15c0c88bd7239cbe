"""Plain data and text for objects: what the objects panel shows (:class:`ObjectsShown`), the row's choices,
object hits as gallery items (the photo with the matched box drawn, captioned "chair in 2008_001234.jpg"),
and the status line of an objects search."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from app.core.box_draw import boxed_thumb
from app.core.detect import DetectedObject
from app.core.thumbnails import Thumbnails
from app.service.objects import ObjectHit
from app.service.query_objects import ObjectResult
from app.service.search import Hit
from app.web.text import status_line

MODES = ("whole photos", "objects inside photos")
INSTALL_COMMAND = "python -m app.cli detector install"
NO_DETECTOR = f"Objects: the detector is not installed; install it with `{INSTALL_COMMAND}`."


@dataclass(frozen=True)
class ObjectsShown:
    """The objects panel: the query image with its objects' boxes (None: hidden), the row to pick one from
    (``(text, index)``), and its one-line note."""

    image: str | None = None
    choices: list[tuple[str, int]] = field(default_factory=list)
    note: str = ""


OBJECTS_FOLLOW = "Objects are found for new images (upload, paste, webcam, URL, crop) and examples."


def object_choice(obj: DetectedObject) -> str:
    return f"{obj.label} · {obj.score:.2f}"


def found_note(found: list[DetectedObject]) -> str:
    if not found:
        return "No objects found in this image."
    return f"{len(found)} object{'s' if len(found) > 1 else ''} found: click one to search it alone."


def object_caption(hit: ObjectHit) -> str:
    return f"{hit.label} in {Path(hit.path).name} · {hit.score:.3f}"


def object_items(thumbs: Thumbnails, result: ObjectResult) -> tuple[list[tuple[str, str]], list[Hit]]:
    """Gallery items of object hits (each its photo's thumbnail with the box drawn) and the hits whose photo is
    missing or unreadable."""
    items, missing = [], []
    for hit, photo in zip(result.hits, photo_hits(result), strict=True):
        r = boxed_thumb(thumbs, photo.abs_path, hit.box, hit.label)
        items.append((str(r.path), object_caption(hit)))
        if not r.ok:
            missing.append(photo)
    return items, missing


def photo_hits(result: ObjectResult) -> list[Hit]:
    """Object hits as their photos (what a click on a result searches, what the compare box shows)."""
    return [Hit(rank=h.rank, id=h.id, path=h.path, label=h.label, score=h.score, abs_path=result.abs_path(h))
            for h in result.hits]


def object_status_html(result: ObjectResult, engine: str, seq: int) -> str:
    """The status line of an objects search (``data-top``: the first result's caption, as the plain one)."""
    parts = [f"<b>{len(result.hits)}</b> objects of {result.size:,} in <b>{html.escape(result.collection)}</b>"]
    if result.reused:
        parts.append("stored vector, model not run")
    elif result.ms("embed"):
        parts.append(f"embed {result.ms('embed'):.1f} ms")
    return status_line(parts, result, engine, seq, object_caption(result.hits[0]) if result.hits else "")


def with_object(status: str, obj: DetectedObject) -> str:
    """``status`` naming the object that was searched (first, after the line's opening tag)."""
    head, sep, rest = status.partition(">")
    return f"{head}{sep}<span>object: <b>{html.escape(obj.label)}</b> ({obj.score:.2f})</span> · {rest}"
