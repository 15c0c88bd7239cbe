"""The per-browser session and history: what was searched, what is on screen, and what it is done with.

:class:`Session` is the state (a ``gr.State``): the query image, the last searched query and
its results (for the collection and k they were searched with), the history of recent queries, and
the images the app showed there (to recognise the crop editor's echoes of them).
:class:`SessionHandlers` are the events that work on it: a new k, a history click, the compare
picker, and "Back to the query".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from app.service.search import Hit
from app.web.common import Context, QueryRunner, guarded
from app.web.view_model import Query, View, error_md

HISTORY_SIZE = 12
# The crop editor echoes the image it is opened on, seconds later (longer on a slow machine), possibly
# after the app already gave it another one; echoes of images shown this recently are recognised.
ECHO_WINDOW_S = 60.0
_SHOWN_KEPT = 8  # images the app put into the editor, remembered for their echoes


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
    shown_in_editor: list[tuple[float, Query]] = field(default_factory=list)  # (time, query) the app put there

    def record(self, query: Query, collection: str, k: int, hits: list[Hit], *, in_editor: bool = False) -> None:
        """``query`` was searched in ``collection`` for ``k`` results: they are on screen, it is the newest
        history entry (no duplicates), and (``in_editor``) the app put it into the editor."""
        history = [query] + [q for q in self.history if q.key != query.key]
        self.query = query
        if in_editor:
            self.remember_shown(query)
        self.searched = query
        self.shown = (query.key, collection, k)
        self.results = list(hits)
        self.history = history[:HISTORY_SIZE]
        self.seq += 1

    def remember_shown(self, query: Query) -> None:
        """The app put ``query``'s image into the editor: its echoes are not new images."""
        now = time.monotonic()
        recent = [(t, q) for t, q in self.shown_in_editor if now - t < ECHO_WINDOW_S and q.key != query.key]
        self.shown_in_editor = (recent + [(now, query)])[-_SHOWN_KEPT:]

    def recently_shown(self) -> list[Query]:
        """The images the app put into the editor within the echo window, newest first."""
        now = time.monotonic()
        return [q for t, q in reversed(self.shown_in_editor) if now - t < ECHO_WINDOW_S]

    def shows(self, key: str, collection: str | None, k: int) -> bool:
        """Whether the results on screen are those of query ``key`` in ``collection`` for ``k`` results."""
        return self.shown == (key, collection, k)

    def clear_results(self) -> None:
        self.examples, self.results, self.shown = [], [], None


class SessionHandlers:
    """Events that search again or show again what the session holds."""

    def __init__(self, ctx: Context, runner: QueryRunner) -> None:
        self.ctx = ctx
        self.runner = runner

    @guarded("changing the number of results")
    def on_k(self, k: Any, collection: str | None, session: Session) -> View:
        cur = session.searched
        if cur is None or session.shows(cur.key, collection, self.ctx.service.clamp_k(k)):
            return View()
        return self.runner.again(cur, collection, k, session)

    @guarded("searching the history entry")
    def on_history(self, index: int, collection: str | None, k: Any, session: Session) -> View:
        if not (0 <= int(index) < len(session.history)):
            return View()
        query = replace(session.history[int(index)], origin="app")
        return self.runner.again(query, collection, k, session, set_editor=True)

    @guarded("comparing")
    def on_compare(self, pick: Any, session: Session) -> View:
        if session.searched is None or pick is None or not (0 <= int(pick) < len(session.results)):
            return View()
        preview = self.ctx.thumbs.preview(session.results[int(pick)].abs_path)
        return View(compare=(session.searched.path, str(preview.path)))

    @guarded("copying the last searched image")
    def on_use_last(self, session: Session) -> View:
        """Put the last searched image back into the query image (e.g. to crop it differently)."""
        if session.searched is None:
            return View(message=error_md("Nothing has been searched yet."))
        session.query = replace(session.searched, origin="app")
        session.remember_shown(session.query)
        return View(editor=session.query.path, message="", session=session)
