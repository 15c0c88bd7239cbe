"""The events that work on the :class:`~app.web.session.Session`: a new k, a history click, the compare
picker, and "Back to the query"; each searches again or shows again what the session holds."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from app.web.context import Context
from app.web.guarded import guarded
from app.web.objects_view import OBJECTS_FOLLOW, ObjectsShown
from app.web.runner import QueryRunner
from app.web.session import Session
from app.web.text import error_md
from app.web.view import View


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
        view = self.runner.again(query, collection, k, session, show_in_query_image=True)
        view.objects = ObjectsShown(note=OBJECTS_FOLLOW)  # no detection for a click: the panel says so
        return view

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
        return View(query_image=session.query.path, message="", session=session)
