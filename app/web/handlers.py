"""What the web UI does when something happens: (inputs, session) -> :class:`View`.

:class:`Handlers` composes the handler groups over one shared :class:`~app.web.common.Context`;
:func:`app.web.layout.build_ui` wires each group's events to its components:

* ``queries`` (:mod:`app.web.queries`): the query sources (query image upload / webcam / paste, crop,
  the Search button, an image URL, a clicked example or result);
* ``session`` (:mod:`app.web.session`): what the session holds (a new k, history, compare,
  "Back to the query");
* ``collections`` (:mod:`app.web.collections`): the collection menu, start-up texts, examples;
* ``library`` (:mod:`app.web.library`): the Collections tab (index a folder, manage collections);
* ``api`` (:mod:`app.web.api`): the programmatic API's named endpoints.

Errors become messages in :func:`~app.web.common.guarded`; searches are run and rendered by
:class:`~app.web.common.QueryRunner`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from app.config import Config
from app.service.search import SearchService
from app.web.api import ApiHandlers
from app.web.collections import CollectionHandlers
from app.web.common import Context, QueryRunner, guarded
from app.web.library import LibraryHandlers
from app.web.queries import QueryHandlers
from app.web.session import Session, SessionHandlers
from app.web.view_model import SKIP, Query, View, idle_status

__all__ = ["SKIP", "Handlers", "Query", "Session", "View", "guarded", "idle_status"]


class Handlers:
    """The UI's behaviour, independent of the Gradio layout (tested directly): the handler groups."""

    def __init__(self, service: SearchService, config: Config, *, work_dir: str | Path | None = None,
                 toast: Callable[[str], None] | None = None) -> None:
        self.ctx = Context(service, config, work_dir=work_dir, toast=toast)
        runner = QueryRunner(self.ctx)
        self.queries = QueryHandlers(self.ctx, runner)
        self.session = SessionHandlers(self.ctx, runner)
        self.collections = CollectionHandlers(self.ctx, runner)
        self.library = LibraryHandlers(self.ctx)
        self.api = ApiHandlers(self.ctx)

    @property
    def service(self) -> SearchService:
        return self.ctx.service

    @property
    def config(self) -> Config:
        return self.ctx.config

    @property
    def toast(self) -> Callable[[str], None]:
        """How a handler's error is also shown as a notification (every group uses this one)."""
        return self.ctx.toast

    @toast.setter
    def toast(self, toast: Callable[[str], None]) -> None:
        self.ctx.toast = toast
