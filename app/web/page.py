"""The page's components, in typed dataclasses: one a panel, made by the function below it, and
:class:`Page`, all of them. :func:`app.web.layout.build_ui` makes them inside its ``gr.Blocks`` and wires
their events; :mod:`app.web.outputs` keys a handler's :class:`~app.web.view.View` by them."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from app.config import Config
from app.web.collections import CollectionHandlers
from app.web.components import QueryImageInput
from app.web.duplicates_tab import DuplicatesTab
from app.web.library_tab import LibraryTab
from app.web.limits import LimitPanel
from app.web.objects_panel import ObjectsPanel

# 640x480 is plenty for the model (224 px) and keeps the page responsive (the default is 1920x1440).
WEBCAM = gr.WebcamOptions(mirror=False, constraints={"video": {"width": {"ideal": 640}, "height": {"ideal": 480}}})


@dataclass(frozen=True)
class Header:
    """Title and collection menu; the start-up notices and build instructions under them."""

    collection: gr.Dropdown


def header(collections: CollectionHandlers, default: str | None) -> Header:
    with gr.Row(equal_height=True, elem_id="ris-header-row"):
        gr.Markdown("# Reverse image search\nFind the most similar images in a collection, on this machine.",
                    elem_id="ris-header")
        collection = gr.Dropdown(choices=collections.collection_choices(), value=default, label="Collection",
                                 scale=0, min_width=340, elem_id="collection", filterable=False)
    notices = collections.notices_md()
    gr.Markdown(notices, visible=bool(notices), elem_id="ris-notice")
    setup = collections.setup_md()
    gr.Markdown(setup, visible=bool(setup), elem_id="ris-setup")
    return Header(collection)


@dataclass(frozen=True)
class QueryPanel:
    """The query image, the crop button and the crop editor, the URL box, k and the Search button."""

    image: gr.Image  # a QueryImageInput: its upload reaches the app undecoded
    crop: gr.Button
    crop_box: gr.Group
    crop_editor: gr.ImageEditor
    crop_src: gr.Textbox  # hidden: the image to load into the crop editor (app.web.assets.LOAD_INTO_CROP_EDITOR)
    crop_close: gr.Button
    url: gr.Textbox
    fetch: gr.Button
    k: gr.Slider
    search: gr.Button


def query_panel(config: Config, crop_src: gr.Textbox) -> QueryPanel:
    image = QueryImageInput(
        label="Query image (what is searched)", type="filepath", image_mode=None, format="jpeg",
        sources=["upload", "webcam", "clipboard"], webcam_options=WEBCAM, height=380,
        buttons=["download", "fullscreen"], elem_id="query",
        placeholder="Drop an image, click to upload,\nor paste / take a photo with the buttons below",
    )
    crop = gr.Button("✂ Crop the query", size="sm", elem_id="crop")
    with gr.Group(visible=False, elem_id="crop-box") as crop_box:
        crop_editor = gr.ImageEditor(
            label="Crop: choose the crop tool, drag the corners, then confirm", type="pil", image_mode="RGB",
            format="png", sources=["upload"], transforms=("crop",), layers=False, height=380, buttons=[],
            elem_id="crop-editor")
        crop_close = gr.Button("Close the crop editor", size="sm", elem_id="crop-close")
    with gr.Row(equal_height=True):
        url = gr.Textbox(placeholder="…or paste an image URL and press Enter", show_label=False,
                         scale=5, elem_id="url", max_lines=1, container=False)
        fetch = gr.Button("Fetch", scale=1, min_width=80, elem_id="fetch", size="md")
    with gr.Row(equal_height=True):
        k = gr.Slider(1, config.max_k, value=config.default_k, step=1, label="Results (k)", scale=4, elem_id="k")
        search = gr.Button("Search", variant="primary", scale=1, min_width=100, elem_id="search")
    gr.Markdown("To search part of the image: click Crop, choose the image tool on the left of the editor, "
                "then crop, drag the corners and confirm.", elem_classes=["ris-hint"])
    gr.HTML('<div id="ris-client-error" class="ris-error" role="alert" hidden></div>', js_on_load=None)
    return QueryPanel(image, crop, crop_box, crop_editor, crop_src, crop_close, url, fetch, k, search)


@dataclass(frozen=True)
class ResultsPanel:
    """The message line, the results gallery, the status line and the compare box."""

    message: gr.Markdown
    gallery: gr.Gallery
    status: gr.HTML
    compare_box: gr.Group
    compare_pick: gr.Dropdown
    compare: gr.ImageSlider


def results_panel(status: str) -> ResultsPanel:
    message = gr.Markdown("", elem_id="ris-message")
    gallery = gr.Gallery(label="Most similar", columns=5, height="auto", fit_columns=False, allow_preview=False,
                         object_fit="cover", buttons=[], elem_id="results", interactive=False)
    status_line = gr.HTML(status, elem_id="status", js_on_load=None)
    with gr.Group(elem_id="compare-box", visible=False) as compare_box:
        compare_pick = gr.Dropdown(choices=[], label="Compare the query with",
                                   info="Drag the handle: the query is on the left, the result on the right.",
                                   type="value", elem_id="compare-pick", filterable=False)
        compare = gr.ImageSlider(show_label=False, type="filepath", max_height=300, elem_id="compare",
                                 interactive=False)
    return ResultsPanel(message, gallery, status_line, compare_box, compare_pick, compare)


@dataclass(frozen=True)
class ExamplesTab:
    """A page of the collection's images to start from, and the button for another page."""

    gallery: gr.Gallery
    more: gr.Button


def examples_tab(examples: list[tuple[str, str]]) -> ExamplesTab:
    with gr.Tab("Examples", elem_id="tab-examples"):
        gallery = gr.Gallery(value=examples, show_label=False, columns=8, height="auto", allow_preview=False,
                             object_fit="cover", elem_id="examples", interactive=False, buttons=[])
        more = gr.Button("Show other examples", size="sm", elem_id="more-examples")
    return ExamplesTab(gallery, more)


@dataclass(frozen=True)
class HistoryTab:
    """The last searched image (with its copy buttons) and the recent queries."""

    last: gr.Image
    last_caption: gr.Markdown
    to_query: gr.Button
    from_query: gr.Button
    gallery: gr.Gallery


def history_tab() -> HistoryTab:
    with gr.Tab("History", elem_id="tab-history"), gr.Row():
        with gr.Column(scale=2, min_width=240):
            last = gr.Image(label="Last searched", type="filepath", interactive=False, height=220,
                            elem_id="last", buttons=["download"])
            last_caption = gr.Markdown("", elem_id="last-caption")
            with gr.Row():
                to_query = gr.Button("↑ Back to the query", size="sm", elem_id="last-to-query")
                from_query = gr.Button("↓ Search the query", size="sm", elem_id="query-to-last")
        with gr.Column(scale=5):
            gallery = gr.Gallery(label="Recent queries (click to search again)", columns=6, fit_columns=False,
                                 height="auto", allow_preview=False, object_fit="cover", elem_id="history",
                                 interactive=False, buttons=[])
    return HistoryTab(last, last_caption, to_query, from_query, gallery)


@dataclass(frozen=True)
class Page:
    """Every component an event reads or updates, by panel; ``session`` is the browser session's state."""

    session: gr.State
    header: Header
    query: QueryPanel
    results: ResultsPanel
    examples: ExamplesTab
    history: HistoryTab
    library: LibraryTab
    duplicates: DuplicatesTab
    limits: LimitPanel  # the query panel's "Limit to" accordion (app.web.limits)
    objects: ObjectsPanel
