"""Gallery values: each hit or query as its thumbnail (a placeholder for a file missing on disk) with its
caption, for the results, examples and history galleries."""

from __future__ import annotations

from pathlib import Path

from app.core.thumbnails import Thumbnails
from app.service.search import Hit
from app.web.query import Query


def caption(hit: Hit) -> str:
    """``label · band · score · file``: the band a person reads beside the raw cosine."""
    return f"{hit.label} · {hit.band} · {hit.score:.3f} · {Path(hit.path).name}"


def example_caption(hit: Hit) -> str:
    return f"{hit.label} · {Path(hit.path).name}"


def result_items(thumbs: Thumbnails, hits: list[Hit]) -> tuple[list[tuple[str, str]], list[Hit]]:
    """The gallery items for ``hits``, and the hits whose image file is missing or unreadable."""
    items, missing = [], []
    for h in hits:
        r = thumbs.thumb(h.abs_path)
        items.append((str(r.path), caption(h)))
        if not r.ok:
            missing.append(h)
    return items, missing


def example_items(thumbs: Thumbnails, hits: list[Hit]) -> list[tuple[str, str]]:
    return [(str(thumbs.thumb(h.abs_path).path), example_caption(h)) for h in hits]


def history_items(thumbs: Thumbnails, history: list[Query]) -> list[tuple[str, str]]:
    return [(str(thumbs.thumb(q.path).path), q.label) for q in history]
