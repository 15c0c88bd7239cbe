"""The Gradio Blocks of the web app: layout and event wiring.

:func:`build_ui` lays out the page, one function per panel, then wires each handler group's events
(:func:`_wire_queries`, :func:`_wire_session`, :func:`_wire_collections`). What each event does
lives in the groups of :mod:`app.web.handlers` (they return a :class:`View`; this module maps it
onto the components). Launch settings (host check, auth, upload limit, allowed paths, queue) live
in :mod:`app.web.server`.

Events, and why:

* query image (one ``gr.Image``: upload / webcam / clipboard): ``upload`` searches a new image (once
  per image; a repeat of the image on screen does nothing). Images the app shows there (example,
  result, history, fetched URL, crop) are set from the server as its value: no upload, no event.
* Crop button: opens the crop editor (a ``gr.ImageEditor`` in a box shown on demand) on the query
  image, through a hidden field whose ``change`` runs :data:`LOAD_INTO_EDITOR` in the browser, which
  hands the file to the editor like a user upload (the only way its crop tool works on an image in
  Gradio 6.31). The editor's ``change`` / ``apply`` search the cropped image (its echo of the image it
  was opened on is recognised and ignored); the crop then shows in the query image and the box closes.
* example / result / history galleries: ``select`` searches that item (stored vector, no model run).
* URL box: ``submit`` and the Fetch button; the Search button: an explicit search of the query image.
* k slider: ``release`` / ``change``; collection dropdown: ``change``; compare picker: ``input``.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, Callable
from urllib.parse import quote

import gradio as gr

from app.config import Config
from app.web.api import wire_api
from app.web.collections import CollectionHandlers
from app.web.common import example_items
from app.web.components import QueryImageInput
from app.web.handlers import Handlers
from app.web.library_tab import collections_tab, wire_collections_tab
from app.web.queries import QueryHandlers
from app.web.session import SessionHandlers
from app.web.view_model import SKIP, View

OUT_FIELDS = ("editor", "results", "status", "message", "last", "last_caption", "history", "examples", "compare",
              "compare_choices", "session")
# Three more outputs after these: the compare box (shown when there is something to compare), and the
# crop editor's hidden source field and its box (``View.crop``).

CSS = """
#ris-header h1 { margin: 0; font-size: 1.45rem; }
#ris-header p { margin: 0.15rem 0 0; opacity: 0.75; }
#ris-notice { border-left: 4px solid var(--color-accent); padding: 0.35rem 0.75rem;
  background: var(--block-background-fill); border-radius: var(--radius-md); }
#ris-notice p { margin: 0; }
.ris-status { font-size: 0.82rem; opacity: 0.8; padding: 0.1rem 0.25rem; line-height: 1.5; }
.ris-status span { white-space: nowrap; }
#ris-message p { margin: 0.25rem 0; }
#ris-message pre { white-space: pre-wrap; word-break: break-all; }
#ris-message:empty { display: none; }
/* The crop editor is not a paint program: only the image tools (crop) are shown. */
#crop-editor button[aria-label="Brush"], #crop-editor button[aria-label="Erase"],
#crop-editor button[aria-label="Color"], #crop-editor button[aria-label="Brush Size"] { display: none !important; }
/* Galleries take the height of their rows (Gradio's default is a fixed, scrolling box). */
#results .grid-wrap, #examples .grid-wrap, #history .grid-wrap { min-height: 0; max-height: none; overflow-y: visible; }
#results .grid-wrap { min-height: 190px; padding-top: 2.4rem; }
#history .grid-wrap { padding-top: 2.4rem; }
/* Captions: a full-width strip under each thumbnail, wrapped rather than cut. */
#results .caption-label, #examples .caption-label, #history .caption-label {
  left: 0; right: 0; bottom: 0; max-width: 100%; border: none; border-radius: 0; white-space: normal;
  opacity: 0.9; font-size: 0.72rem; line-height: 1.3; padding: 2px 6px; }
#results .thumbnail-lg:hover .caption-label, #examples .thumbnail-lg:hover .caption-label { opacity: 1; }
#compare.block { border: 1px solid var(--border-color-primary) !important; }
.ris-hint p { font-size: 0.8rem; opacity: 0.7; margin: 0; }
.ris-error { color: var(--error-text-color, #b91c1c); font-size: 0.9rem; padding: 0.25rem 0; }
"""

# 640x480 is plenty for the model (224 px) and keeps the page responsive (the default is 1920x1440).
WEBCAM = gr.WebcamOptions(mirror=False, constraints={"video": {"width": {"ideal": 640}, "height": {"ideal": 480}}})


# The query image silently ignores files the browser cannot decode; say so instead (the server never sees them).
JS = """
() => {
  const box = () => document.getElementById("ris-client-error");
  const say = (text) => { const el = box(); if (el) { el.textContent = text; el.hidden = !text; } };
  const check = async (file) => {
    if (!file) return;
    try { const bmp = await createImageBitmap(file); bmp.close(); say(""); }
    catch (err) {
      say(`⚠️ "${file.name}" is not an image this browser can open. Use a JPEG, PNG, GIF, WebP or BMP file.`);
    }
  };
  document.addEventListener("change", (e) => {
    const t = e.target;
    if (t instanceof HTMLInputElement && t.type === "file" && t.closest("#query")) check(t.files && t.files[0]);
  }, true);
  document.addEventListener("drop", (e) => {
    const t = e.target;
    if (t instanceof Element && t.closest("#query")) check(e.dataTransfer && e.dataTransfer.files[0]);
  }, true);
}
"""


# The image the crop editor opens on is loaded by the browser as if the user had picked the file: the
# editor can crop an upload, but not an image set from the server (Gradio 6.31 then keeps sending the
# uncropped image). The editor's box has just been shown: wait (bounded) for its file input.
LOAD_INTO_EDITOR = """
async (src) => {
  if (!src) return [];
  const url = src.split("#")[0];
  const ready = () => document.querySelector("#crop-editor .pixi-target canvas")
    && document.querySelector("#crop-editor input[type=file]");
  for (let i = 0; i < 100 && !ready(); i++) await new Promise(r => setTimeout(r, 100));
  const input = document.querySelector("#crop-editor input[type=file]");
  if (!input) return [];
  const res = await fetch(url, { credentials: "same-origin" });
  if (!res.ok) return [];
  const blob = await res.blob();
  const name = decodeURIComponent(url.split("/").pop() || "image.png");
  const files = new DataTransfer();
  files.items.add(new File([blob], name, { type: blob.type || "image/png" }));
  input.files = files.files;
  input.dispatchEvent(new Event("change", { bubbles: true }));
  return [];
}
"""


def editor_src_value(path: str) -> str:
    """The hidden field that makes the browser load ``path`` into the crop editor (unique per request)."""
    return f"/gradio_api/file={quote(str(path))}#{time.monotonic_ns()}"


def theme() -> gr.themes.Base:
    """Gradio's Soft theme, which has light and dark variants: the browser's preference picks one (no mode is
    forced)."""
    return gr.themes.Soft(primary_hue="indigo", neutral_hue="slate")


def _to_outputs(view: View) -> tuple:
    values = []
    compare_box = gr.skip() if view.compare is SKIP else gr.Group(visible=view.compare is not None)
    for name in OUT_FIELDS:
        value = getattr(view, name)
        if value is SKIP:
            values.append(gr.skip())
        elif name == "results":
            values.append(gr.Gallery(value=value, selected_index=None))  # no stale highlight
        elif name == "compare_choices":
            values.append(gr.Dropdown(choices=value, value=0 if value else None))
        else:
            values.append(value)
    if view.crop is SKIP:
        crop = (gr.skip(), gr.skip())
    elif view.crop is None:
        crop = ("", gr.Group(visible=False))
    else:
        crop = (editor_src_value(view.crop), gr.Group(visible=True))
    return (*values, compare_box, *crop)


def build_ui(h: Handlers) -> gr.Blocks:
    """The page (header, query panel, results panel, examples and history tabs), wired to ``h``'s groups."""
    default = h.collections.default_collection()
    session0 = h.collections.initial_session(default)
    with gr.Blocks(title="Reverse image search", analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
        ui = SimpleNamespace(session=gr.State(session0),
                             editor_src=gr.Textbox(visible="hidden", elem_id="editor-src"))
        _header(ui, h.collections, default)
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=340):
                _query_panel(ui, h.config)
            with gr.Column(scale=7, min_width=420):
                _results_panel(ui, h.collections.idle_status(default))
        with gr.Tabs():
            _examples_tab(ui, example_items(h.ctx.thumbs, session0.examples))
            _history_tab(ui)
            collections_tab(ui, h.library)
        _wire(ui, h)
        wire_collections_tab(ui, h.library, h.collections.collection_choices)
        wire_api(h.api, h.library)
    return demo


# -- the panels: each adds its components to ``ui`` ----------------------------------------------
def _header(ui: SimpleNamespace, collections: CollectionHandlers, default: str | None) -> None:
    """Title and collection menu; the start-up notices and build instructions under them."""
    with gr.Row(equal_height=True, elem_id="ris-header-row"):
        gr.Markdown("# Reverse image search\nFind the most similar images in a collection, on this machine.",
                    elem_id="ris-header")
        ui.collection = gr.Dropdown(choices=collections.collection_choices(), value=default, label="Collection",
                                    scale=0, min_width=340, elem_id="collection", filterable=False)
    notices = collections.notices_md()
    gr.Markdown(notices, visible=bool(notices), elem_id="ris-notice")
    setup = collections.setup_md()
    gr.Markdown(setup, visible=bool(setup), elem_id="ris-setup")


def _query_panel(ui: SimpleNamespace, config: Config) -> None:
    """The query image, the crop button and editor, the URL box, k and the Search button."""
    ui.editor = QueryImageInput(
        label="Query image (what is searched)", type="filepath", image_mode=None, format="jpeg",
        sources=["upload", "webcam", "clipboard"], webcam_options=WEBCAM, height=380,
        buttons=["download", "fullscreen"], elem_id="query",
        placeholder="Drop an image, click to upload,\nor paste / take a photo with the buttons below",
    )
    ui.crop = gr.Button("✂ Crop the query", size="sm", elem_id="crop")
    with gr.Group(visible=False, elem_id="crop-box") as ui.crop_box:
        ui.crop_editor = gr.ImageEditor(
            label="Crop: choose the crop tool, drag the corners, then confirm", type="pil", image_mode="RGB",
            format="png", sources=["upload"], transforms=("crop",), layers=False, height=380, buttons=[],
            elem_id="crop-editor")
        ui.crop_close = gr.Button("Close the crop editor", size="sm", elem_id="crop-close")
    with gr.Row(equal_height=True):
        ui.url = gr.Textbox(placeholder="…or paste an image URL and press Enter", show_label=False,
                            scale=5, elem_id="url", max_lines=1, container=False)
        ui.fetch = gr.Button("Fetch", scale=1, min_width=80, elem_id="fetch", size="md")
    with gr.Row(equal_height=True):
        ui.k = gr.Slider(1, config.max_k, value=config.default_k, step=1, label="Results (k)", scale=4,
                         elem_id="k")
        ui.search = gr.Button("Search", variant="primary", scale=1, min_width=100, elem_id="search")
    gr.Markdown("To search part of the image: click Crop, choose the image tool on the left of the editor, "
                "then crop, drag the corners and confirm.", elem_classes=["ris-hint"])
    gr.HTML('<div id="ris-client-error" class="ris-error" role="alert" hidden></div>', js_on_load=None)


def _results_panel(ui: SimpleNamespace, status: str) -> None:
    """The message line, the results gallery, the status line and the compare box."""
    ui.message = gr.Markdown("", elem_id="ris-message")
    ui.results = gr.Gallery(label="Most similar", columns=5, height="auto", fit_columns=False,
                            allow_preview=False, object_fit="cover", buttons=[], elem_id="results",
                            interactive=False)
    ui.status = gr.HTML(status, elem_id="status", js_on_load=None)
    with gr.Group(elem_id="compare-box", visible=False) as ui.compare_box:
        ui.compare_pick = gr.Dropdown(choices=[], label="Compare the query with",
                                      info="Drag the handle: the query is on the left, the result on the right.",
                                      type="value", elem_id="compare-pick", filterable=False)
        ui.compare = gr.ImageSlider(show_label=False, type="filepath", max_height=300, elem_id="compare",
                                    interactive=False)


def _examples_tab(ui: SimpleNamespace, examples: list[tuple[str, str]]) -> None:
    with gr.Tab("Examples", elem_id="tab-examples"):
        ui.examples = gr.Gallery(value=examples, show_label=False, columns=8,
                                 height="auto", allow_preview=False, object_fit="cover", elem_id="examples",
                                 interactive=False, buttons=[])
        ui.more = gr.Button("Show other examples", size="sm", elem_id="more-examples")


def _history_tab(ui: SimpleNamespace) -> None:
    """The last searched image (with its copy buttons) and the recent queries."""
    with gr.Tab("History", elem_id="tab-history"), gr.Row():
        with gr.Column(scale=2, min_width=240):
            ui.last = gr.Image(label="Last searched", type="filepath", interactive=False, height=220,
                               elem_id="last", buttons=["download"])
            ui.last_caption = gr.Markdown("", elem_id="last-caption")
            with gr.Row():
                ui.to_query = gr.Button("↑ Back to the query", size="sm", elem_id="last-to-query")
                ui.from_query = gr.Button("↓ Search the query", size="sm", elem_id="query-to-last")
        with gr.Column(scale=5):
            ui.history = gr.Gallery(label="Recent queries (click to search again)", columns=6,
                                    fit_columns=False, height="auto", allow_preview=False, object_fit="cover",
                                    elem_id="history", interactive=False, buttons=[])


# -- events --------------------------------------------------------------------------------------
def _shown(fn: Callable[..., View]) -> Callable[..., tuple]:
    """A Gradio event function for a handler: its :class:`View` mapped onto the output components."""

    def event(*args: Any) -> tuple:
        return _to_outputs(fn(*args))

    event.__name__ = fn.__name__
    return event


def _shown_selected(fn: Callable[..., View]) -> Callable[..., tuple]:
    """Like :func:`_shown`, for a gallery's ``select``: the handler gets the index of the clicked item."""

    def event(evt: gr.SelectData, *args: Any) -> tuple:
        return _to_outputs(fn(evt.index, *args))

    event.__name__ = fn.__name__
    return event


def _wire(ui: SimpleNamespace, h: Handlers) -> None:
    """Every search event updates the same outputs (``OUT_FIELDS``, then the compare box), one at a time."""
    outs = [ui.editor, ui.results, ui.status, ui.message, ui.last, ui.last_caption, ui.history, ui.examples,
            ui.compare, ui.compare_pick, ui.session, ui.compare_box, ui.editor_src, ui.crop_box]
    ev = dict(outputs=outs, concurrency_id="search", api_visibility="private", show_progress_on=[ui.results])
    _wire_queries(ui, h.queries, ev)
    _wire_session(ui, h.session, ev)
    _wire_collections(ui, h.collections, ev)


def _wire_queries(ui: SimpleNamespace, q: QueryHandlers, ev: dict) -> None:
    query_in = [ui.editor, ui.collection, ui.k, ui.session]
    ui.editor.upload(_shown(q.on_upload), query_in, **ev)
    ui.crop.click(_shown(q.on_crop_open), [ui.session], **ev)
    ui.crop_close.click(_shown(q.on_crop_close), None, **ev)
    ui.editor_src.change(None, [ui.editor_src], None, js=LOAD_INTO_EDITOR)
    # The crop editor fires these several times per image (mostly its echo): no spinner for them.
    crop_in = [ui.crop_editor, ui.collection, ui.k, ui.session]
    quiet = dict(ev, show_progress="hidden")
    ui.crop_editor.change(_shown(q.on_crop), crop_in, trigger_mode="always_last", **quiet)
    ui.crop_editor.apply(_shown(q.on_crop), crop_in, trigger_mode="always_last", **quiet)
    ui.search.click(_shown(q.on_search), query_in, **ev)
    ui.from_query.click(_shown(q.on_search), query_in, **ev)
    url_in = [ui.url, ui.collection, ui.k, ui.session]
    ui.url.submit(_shown(q.on_url), url_in, **ev)
    ui.fetch.click(_shown(q.on_url), url_in, **ev)
    ui.examples.select(_shown_selected(q.on_example), [ui.collection, ui.k, ui.session], **ev)
    ui.results.select(_shown_selected(q.on_result), [ui.collection, ui.k, ui.session], **ev)


def _wire_session(ui: SimpleNamespace, s: SessionHandlers, ev: dict) -> None:
    ui.k.release(_shown(s.on_k), [ui.k, ui.collection, ui.session], trigger_mode="always_last", **ev)
    ui.k.change(_shown(s.on_k), [ui.k, ui.collection, ui.session], trigger_mode="always_last", **ev)
    ui.history.select(_shown_selected(s.on_history), [ui.collection, ui.k, ui.session], **ev)
    ui.compare_pick.input(_shown(s.on_compare), [ui.compare_pick, ui.session], **ev)
    ui.to_query.click(_shown(s.on_use_last), [ui.session], **ev)


def _wire_collections(ui: SimpleNamespace, c: CollectionHandlers, ev: dict) -> None:
    ui.collection.change(_shown(c.on_collection), [ui.collection, ui.k, ui.session], **ev)
    ui.more.click(_shown(c.on_more_examples), [ui.collection, ui.session], **ev)
