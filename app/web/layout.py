"""The Gradio Blocks of the web app: the page and its event wiring.

:func:`build_ui` makes the page's components (:mod:`app.web.page`, one function per panel), then wires
each handler group's events (:func:`_wire_queries`, :func:`_wire_session`, :func:`_wire_collections`;
``gr.on`` where several triggers share a handler). What each event does lives in the groups of
:class:`app.web.handlers.Handlers` (they answer a :class:`~app.web.view.View`;
:class:`app.web.outputs.SearchOutputs` keys it by component). Launch settings (host check, auth, upload
limit, allowed paths, queue) live in :mod:`app.web.server`.

Events, and why:

* query image (one ``gr.Image``: upload / webcam / clipboard): ``upload`` searches a new image (once
  per image; a repeat of the image on screen does nothing). Images the app shows there (example,
  result, history, fetched URL, crop) are set from the server as its value: no upload, no event.
* Crop button: opens the crop editor (a ``gr.ImageEditor`` in a box shown on demand) on the query
  image, through a hidden field whose ``change`` runs :data:`app.web.assets.LOAD_INTO_CROP_EDITOR` in
  the browser, which hands the file to the crop editor like a user upload (the only way its crop tool
  works on an image in Gradio 6.31). The crop editor's ``change`` / ``apply`` (one event) search the
  cropped image (its echo of the image it was opened on is recognised and ignored); the crop then shows
  in the query image and the box closes.
* example / result / history galleries: ``select`` searches that item (stored vector, no model run).
* URL box: ``submit`` and the Fetch button (one event); the Search button and "Search the query" (one
  event): an explicit search of the query image.
* k slider: ``release`` / ``change`` (one event, the last one wins); collection dropdown: ``change``;
  compare picker: ``input``.
* "Limit to" (:mod:`app.web.limits`): its Apply button, Enter in its boxes and its band menu (one event)
  keep the limits in the session and search the query on screen again with them.
* the Collections and Duplicates tabs: their own events, outside the search group
  (:func:`app.web.library_tab.wire_collections_tab`, :func:`app.web.duplicates_tab.wire_duplicates_tab`).
"""

from __future__ import annotations

import gradio as gr

from app.web.api import wire_api
from app.web.api_objects import wire_object_api
from app.web.assets import LOAD_INTO_CROP_EDITOR
from app.web.collections import CollectionHandlers
from app.web.duplicates_tab import duplicates_tab, wire_duplicates_tab
from app.web.gallery import example_items
from app.web.handlers import Handlers
from app.web.library_tab import collections_tab, wire_collections_tab
from app.web.limits import LimitHandlers, limit_panel
from app.web.objects_panel import objects_panel, wire_objects
from app.web.outputs import SearchOutputs
from app.web.page import Page, examples_tab, header, history_tab, query_panel, results_panel
from app.web.queries import QueryHandlers
from app.web.session_handlers import SessionHandlers


def build_ui(h: Handlers) -> gr.Blocks:
    """The page (header, query panel, results panel, examples, history, Collections and Duplicates tabs), wired
    to ``h``'s groups."""
    return build_page(h)[0]


def build_page(h: Handlers) -> tuple[gr.Blocks, Page]:
    """:func:`build_ui`, and the page's components."""
    default = h.collections.default_collection()
    session0 = h.collections.initial_session(default)
    with gr.Blocks(title="Reverse image search", analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
        session = gr.State(session0)
        crop_src = gr.Textbox(visible="hidden", elem_id="crop-src")
        top = header(h.collections, default)
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=340):
                query = query_panel(h.config, crop_src)
                limits = limit_panel()
                objects = objects_panel()
            with gr.Column(scale=7, min_width=420):
                results = results_panel(h.collections.idle_status(default))
        with gr.Tabs():
            examples = examples_tab(example_items(h.ctx.thumbs, session0.examples))
            history = history_tab()
            library = collections_tab(h.library)
            dups = duplicates_tab(h.duplicates)
        page = Page(session, top, query, results, examples, history, library, dups, limits, objects)
        _wire(page, h)
        wire_collections_tab(library, h.library, top.collection, h.collections.collection_choices)
        wire_duplicates_tab(dups, h.duplicates)
        wire_api(h.api, h.library, h.duplicates)
        wire_object_api(h.ctx)  # /objects, /search_objects
    return demo, page


# -- events --------------------------------------------------------------------------------------
def _wire(page: Page, h: Handlers) -> None:
    """Every search event may update the same components (:attr:`SearchOutputs.components`), one event at a
    time; each answers only those its :class:`~app.web.view.View` sets."""
    out = SearchOutputs(page)
    ev = dict(outputs=out.components, concurrency_id="search", api_visibility="private",
              show_progress_on=[page.results.gallery])
    query_events = _wire_queries(page, h.queries, out, ev) + _wire_session(page, h.session, out, ev)
    _wire_collections(page, h.collections, out, ev)
    _wire_limits(page, h.limits, out, ev)
    wire_objects(page.objects, h.objects, out, ev, query_events,
                 [page.header.collection, page.query.k, page.session], page.session)


def _wire_queries(page: Page, q: QueryHandlers, out: SearchOutputs, ev: dict) -> list:
    """The query events; the events that may bring a new query image are returned (objects follow them)."""
    p, shared = page.query, [page.header.collection, page.query.k, page.session]
    upload = p.image.upload(out.event(q.on_upload), [p.image, *shared], **ev)
    p.crop.click(out.event(q.on_crop_open), [page.session], **ev)
    p.crop_close.click(out.event(q.on_crop_close), None, **ev)
    p.crop_src.change(None, [p.crop_src], None, js=LOAD_INTO_CROP_EDITOR)
    # The crop editor fires these several times per image (mostly its echo): no spinner for them.
    crop = gr.on([p.crop_editor.change, p.crop_editor.apply], out.event(q.on_crop), [p.crop_editor, *shared],
                 trigger_mode="always_last", **dict(ev, show_progress="hidden"))
    search = gr.on([p.search.click, page.history.from_query.click], out.event(q.on_search), [p.image, *shared], **ev)
    url = gr.on([p.url.submit, p.fetch.click], out.event(q.on_url), [p.url, *shared], **ev)
    example = page.examples.gallery.select(out.selected(q.on_example), shared, **ev)
    page.results.gallery.select(out.selected(q.on_result), shared, **ev)
    # Objects follow new images and examples (issue 17's list); a result click stays one request.
    return [upload, crop, search, url, example]


def _wire_session(page: Page, s: SessionHandlers, out: SearchOutputs, ev: dict) -> list:
    k, collection = page.query.k, page.header.collection
    gr.on([k.release, k.change], out.event(s.on_k), [k, collection, page.session], trigger_mode="always_last", **ev)
    page.history.gallery.select(out.selected(s.on_history), [collection, k, page.session], **ev)
    page.results.compare_pick.input(out.event(s.on_compare), [page.results.compare_pick, page.session], **ev)
    to_query = page.history.to_query.click(out.event(s.on_use_last), [page.session], **ev)
    return [to_query]


def _wire_collections(page: Page, c: CollectionHandlers, out: SearchOutputs, ev: dict) -> None:
    collection = page.header.collection
    collection.change(out.event(c.on_collection), [collection, page.query.k, page.session], **ev)
    page.examples.more.click(out.event(c.on_more_examples), [collection, page.session], **ev)


def _wire_limits(page: Page, lh: LimitHandlers, out: SearchOutputs, ev: dict) -> None:
    lim = page.limits
    triggers = [lim.apply.click, lim.folder.submit, lim.since.submit, lim.until.submit, lim.camera.submit,
                lim.min_band.input]
    gr.on(triggers, out.event(lh.on_limits), [*lim.fields, page.header.collection, page.query.k, page.session],
          **ev)
