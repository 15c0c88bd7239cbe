"""The per-browser session: :class:`Session` (a ``gr.State``), what was searched and what is on screen.

The query image, the last searched query and its results (for the collection and k they were searched
with), the history of recent queries, and the images the app showed in the query image (to recognise the
crop editor's echoes of them). The events that work on it are :mod:`app.web.session_handlers`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from app.service.filters import SearchFilter
from app.service.search import Hit
from app.web.query import Query

HISTORY_SIZE = 12
# The crop editor echoes the image it is opened on, seconds later (longer on a slow machine), possibly
# after the app already showed another one; echoes of images shown this recently are recognised.
ECHO_WINDOW_S = 60.0
_SHOWN_KEPT = 8  # images the app put into the query image, remembered for the crop editor's echoes


@dataclass
class Session:
    """Per-browser-session state (a ``gr.State``)."""

    query: Query | None = None  # what the query image shows
    searched: Query | None = None  # what the results on screen are for ("last searched")
    shown: tuple[str, str, int] | None = None  # (query key, collection, k) of the results on screen
    results: list[Hit] = field(default_factory=list)
    examples: list[Hit] = field(default_factory=list)
    page: int = 0
    history: list[Query] = field(default_factory=list)
    seq: int = 0  # searches run so far (exposed as data-seq on the status line)
    shown_in_query_image: list[tuple[float, Query]] = field(  # (time, query) the app put there
        default_factory=list)
    where: SearchFilter | None = None  # the "Limit to" filter every search of the session applies
    objects_mode: bool = False  # search the objects inside photos (not whole photos)

    def record(self, query: Query, collection: str, k: int, hits: list[Hit], *, in_query_image: bool = False) -> None:
        """``query`` was searched in ``collection`` for ``k`` results: they are on screen, it is the newest
        history entry (no duplicates), and (``in_query_image``) the app put it into the query image."""
        history = [query] + [q for q in self.history if q.key != query.key]
        self.query = query
        if in_query_image:
            self.remember_shown(query)
        self.searched = query
        self.shown = (query.key, collection, k)
        self.results = list(hits)
        self.history = history[:HISTORY_SIZE]
        self.seq += 1

    def remember_shown(self, query: Query) -> None:
        """The app put ``query``'s image into the query image: the crop editor's echoes of it are not crops."""
        now = time.monotonic()
        recent = [(t, q) for t, q in self.shown_in_query_image if now - t < ECHO_WINDOW_S and q.key != query.key]
        self.shown_in_query_image = (recent + [(now, query)])[-_SHOWN_KEPT:]

    def recently_shown(self) -> list[Query]:
        """The images the app put into the query image within the echo window, newest first."""
        now = time.monotonic()
        return [q for t, q in reversed(self.shown_in_query_image) if now - t < ECHO_WINDOW_S]

    def shows(self, key: str, collection: str | None, k: int) -> bool:
        """Whether the results on screen are those of query ``key`` in ``collection`` for ``k`` results."""
        return self.shown == (key, collection, k)

    def clear_results(self) -> None:
        self.examples, self.results, self.shown = [], [], None
