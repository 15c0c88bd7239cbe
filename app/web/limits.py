"""Limiting a search from the page: the query panel's "Limit to" accordion (:class:`LimitPanel`: a
sub-folder, capture dates since / until, a camera, a minimum band) and its event
(:class:`LimitHandlers`).

The limits are a :class:`~app.service.filters.SearchFilter` kept in the browser's
:class:`~app.web.session.Session`; :class:`~app.web.runner.QueryRunner` passes it as ``where=`` with every
search (:meth:`~app.service.search.SearchService.search_new_image`, ``search_item``), so a new k, a
result clicked or another collection keep them. Applying new limits searches the query on screen
again. Bad dates or an unknown band are the service's typed errors, shown as one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import gradio as gr

from app.errors import AppError
from app.service.filters import BAND_NAMES, SearchFilter, parse_filter
from app.web.context import Context
from app.web.guarded import guarded
from app.web.runner import QueryRunner
from app.web.session import Session
from app.web.view import View

ANY_BAND = "any score"
# The cut-off's choices: every band but the lowest (a cut-off at it keeps everything).
BAND_CHOICES = [ANY_BAND, *BAND_NAMES[:-1]]


@dataclass(frozen=True)
class LimitPanel:
    """The "Limit to" accordion: its fields and its Apply button."""

    box: gr.Accordion
    folder: gr.Textbox
    since: gr.Textbox
    until: gr.Textbox
    camera: gr.Textbox
    min_band: gr.Dropdown
    apply: gr.Button

    @property
    def fields(self) -> list[Any]:
        """The inputs of :meth:`LimitHandlers.on_limits`, in its order."""
        return [self.folder, self.since, self.until, self.camera, self.min_band]


def limit_panel() -> LimitPanel:
    with gr.Accordion("Limit to", open=False, elem_id="limits") as box:
        folder = gr.Textbox(label="Sub-folder", placeholder="e.g. trips/2021", max_lines=1, elem_id="limit-folder")
        with gr.Row(equal_height=True):
            since = gr.Textbox(label="Taken since", placeholder="YYYY-MM-DD", max_lines=1, elem_id="limit-since")
            until = gr.Textbox(label="Taken until", placeholder="YYYY-MM-DD", max_lines=1, elem_id="limit-until")
        with gr.Row(equal_height=True):
            camera = gr.Textbox(label="Camera", placeholder="e.g. iPhone", max_lines=1, elem_id="limit-camera")
            min_band = gr.Dropdown(choices=BAND_CHOICES, value=ANY_BAND, label="At least", filterable=False,
                                   elem_id="limit-band")
        apply = gr.Button("Apply the limits", size="sm", elem_id="limit-apply")
    return LimitPanel(box, folder, since, until, camera, min_band, apply)


def limit_filter(folder: str | None, since: str | None, until: str | None, camera: str | None,
                 min_band: str | None) -> SearchFilter | None:
    """The filter the fields describe (None: no limit); the service's typed error when one is invalid."""
    band = None if not min_band or min_band == ANY_BAND else min_band
    for value, label in ((since, "Taken since"), (until, "Taken until")):  # the page's names, not the CLI's flags
        if value and value.strip() and not _is_day(value.strip()):
            raise AppError(f"{label}: {value.strip()!r} is not a date; write it as YYYY-MM-DD (e.g. 2020-01-01).")
    where = parse_filter(since=since or None, until=until or None, folder=folder or None, camera=camera or None,
                         min_band=band)
    return where if where.selects or where.min_band else None


def _is_day(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def limits_line(where: SearchFilter | None) -> str:
    """The limits in words, for the message line ("" for none)."""
    if where is None:
        return ""
    parts = [f"in {where.folder}" if where.folder else "",
             f"taken since {where.since.isoformat()}" if where.since else "",
             f"taken until {where.until.isoformat()}" if where.until else "",
             f"camera like {where.camera}" if where.camera else "",
             f"{where.min_band} or closer" if where.min_band else ""]
    return "Limited to: " + ", ".join(p for p in parts if p)


class LimitHandlers:
    """The limits' event: keep them in the session, and search the query on screen again with them."""

    def __init__(self, ctx: Context, runner: QueryRunner) -> None:
        self.ctx = ctx
        self.runner = runner

    @guarded("applying the limits")
    def on_limits(self, folder: str | None, since: str | None, until: str | None, camera: str | None,
                  min_band: str | None, collection: str | None, k: Any, session: Session) -> View:
        session.where = limit_filter(folder, since, until, camera, min_band)
        line = limits_line(session.where)
        if session.searched is None:
            return View(message=line, session=session)
        view = self.runner.again(session.searched, collection, k, session)
        view.message = view.message or line
        return view
