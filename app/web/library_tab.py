"""The Collections tab's components and events (its behaviour is :mod:`app.web.library`).

The table of collections; with a library root: the folder / name / model form, Index and Cancel,
the progress line (polled by a ``gr.Timer`` that runs only while a job does) and the summary; and
the management row (collection, action, argument, Apply). After a job or a change, the table and the
page's collection menu are read again.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any, Callable

import gradio as gr

from app.core.models import model_names
from app.errors import AppError
from app.web.library import ACTIONS, LibraryHandlers
from app.web.view_model import error_md

HEADERS = ["collection", "images", "model", "status"]


def _safe(fn: Callable[..., str]) -> Callable[..., str]:
    """Typed errors become their one-line message; anything else a generic one (the traceback is logged)."""

    def wrapper(*args: Any) -> str:
        try:
            return fn(*args)
        except AppError as exc:
            return error_md(exc.user_message())
        except Exception:  # noqa: BLE001 - the page gets a message, the log the traceback
            logging.getLogger(__name__).exception("Collections tab: %s failed", fn.__name__)
            return error_md("Something went wrong. The details are in the server log.")

    wrapper.__name__ = fn.__name__
    return wrapper


def collections_tab(ui: SimpleNamespace, lib: LibraryHandlers) -> None:
    """The tab's components, added to ``ui``."""
    rows = lib.rows()
    with gr.Tab("Collections", elem_id="tab-collections"):
        ui.lib_table = gr.Dataframe(value=rows, headers=HEADERS, interactive=False, elem_id="lib-table",
                                    wrap=True)
        gr.Markdown(lib.roots_md(), elem_id="lib-roots")
        with gr.Group(visible=lib.enabled):
            with gr.Row(equal_height=True):
                ui.lib_folder = gr.Textbox(label="Folder on this machine", scale=4, elem_id="lib-folder",
                                           placeholder=str(lib.roots[0]) if lib.roots else "")
                ui.lib_name = gr.Textbox(label="Collection name", scale=2, elem_id="lib-name",
                                         placeholder="the folder's name")
                ui.lib_model = gr.Dropdown(choices=model_names(), value=lib.ctx.running_model, label="Model",
                                           scale=2, elem_id="lib-model", filterable=False)
            with gr.Row():
                ui.lib_index = gr.Button("Index the folder", variant="primary", elem_id="lib-index")
                ui.lib_cancel = gr.Button("Cancel", elem_id="lib-cancel")
            ui.lib_progress = gr.HTML("", elem_id="lib-progress")
            ui.lib_summary = gr.Markdown("", elem_id="lib-summary")
            ui.lib_timer = gr.Timer(0.5, active=False)
            with gr.Row(equal_height=True):
                ui.lib_collection = gr.Dropdown(choices=[r[0] for r in rows], label="Collection", scale=2,
                                                elem_id="lib-collection", filterable=False)
                ui.lib_action = gr.Radio(list(ACTIONS), value=ACTIONS[0], label="Change", scale=3,
                                         elem_id="lib-action")
                ui.lib_arg = gr.Textbox(label="Path, ids, new name, or the name again to drop", scale=3,
                                        elem_id="lib-arg")
                ui.lib_apply = gr.Button("Apply", scale=1, elem_id="lib-apply")


def wire_collections_tab(ui: SimpleNamespace, lib: LibraryHandlers, choices: Callable[[], list]) -> None:
    """Its events; ``choices`` gives the page's collection menu after a change."""
    if not lib.enabled:
        return
    quiet = dict(api_visibility="private", queue=False)

    def refreshed() -> tuple:
        rows = lib.rows()
        return (rows, gr.Dropdown(choices=[r[0] for r in rows]), gr.Dropdown(choices=choices()))

    def start(folder: str, name: str, model: str):
        text = _safe(lib.start)(folder, name, model)
        return text, gr.Timer(active=lib.running())

    def poll():
        if lib.running():
            return (lib.progress_html(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip())
        return (lib.progress_html(), lib.summary_md(), gr.Timer(active=False), *refreshed())

    def apply(collection: str, action: str, arg: str):
        return (_safe(lib.manage)(collection, action, arg), *refreshed())

    ui.lib_index.click(start, [ui.lib_folder, ui.lib_name, ui.lib_model], [ui.lib_summary, ui.lib_timer], **quiet)
    ui.lib_cancel.click(lambda: lib.cancel(), None, ui.lib_summary, **quiet)
    ui.lib_timer.tick(poll, None, [ui.lib_progress, ui.lib_summary, ui.lib_timer, ui.lib_table, ui.lib_collection,
                                   ui.collection], **quiet)
    ui.lib_apply.click(apply, [ui.lib_collection, ui.lib_action, ui.lib_arg],
                       [ui.lib_summary, ui.lib_table, ui.lib_collection, ui.collection], **quiet)
